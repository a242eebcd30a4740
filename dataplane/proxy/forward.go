package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/micromesh/micromesh/dataplane/config"
	"github.com/micromesh/micromesh/dataplane/h1"
)

type direction string

const (
	outbound direction = "outbound"
	inbound  direction = "inbound"
)

// maxReplayBody is the largest request body kept for retries (Envoy's
// per-request buffer limit plays the same role).
const maxReplayBody = 64 << 10

// maxInlineBody is the largest request body read up front when the route
// has no retries.
const maxInlineBody = 16 << 10

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// hopHeaders are per-connection headers a proxy must not forward (RFC 9110 §7.6.1).
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Transfer-Encoding", "Upgrade"}

func cleanHopHeaders(h http.Header) {
	for _, f := range h["Connection"] {
		for _, name := range strings.Split(f, ",") {
			h.Del(strings.TrimSpace(name))
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
	if te := h["Te"]; len(te) > 0 && !(len(te) == 1 && strings.EqualFold(te[0], "trailers")) {
		delete(h, "Te") // only "TE: trailers" passes, which gRPC needs
	}
}

// forward sends r to up along route rt, retrying as the route allows, and
// streams the response back.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, rt *config.Route, up *upstream, mirrors []mirrorTarget, dir direction, caller peer, start time.Time) {
	source, dest := p.self, up.cluster.Name
	if dir == inbound {
		source, dest = caller.workload, p.self
	}
	if lim := up.cluster.Limits.MaxRequests; lim > 0 && up.active.Load() >= int64(lim) {
		p.m.overflow.WithLabelValues(up.cluster.Name).Inc()
		p.localFor(w, r, dir, source, dest, http.StatusServiceUnavailable,
			fmt.Sprintf("micromesh: circuit breaker open: %d requests in flight to %s", lim, up.cluster.Name), start)
		return
	}
	up.active.Add(1)
	defer up.active.Add(-1)

	cleanHopHeaders(r.Header)
	for _, h := range rt.HeadersToRemove {
		r.Header.Del(h)
	}
	for _, h := range rt.HeadersToAdd {
		v := h.Value
		if v == config.PeerURISAN {
			v = caller.id
		}
		r.Header.Set(h.Key, v)
	}
	// The route timeout is a deadline each try's context carries (with the
	// per-try timeout's, whichever is sooner): one context per try, none
	// for the request.
	var deadline time.Time
	if rt.Timeout > 0 {
		deadline = time.Now().Add(rt.Timeout)
	}
	ctx := r.Context()
	body, err := newReplayable(r, rt.Retry != nil || len(mirrors) > 0, isGRPC(r))
	if err != nil {
		p.localFor(w, r, dir, source, dest, http.StatusBadRequest, "micromesh: reading the request body: "+err.Error(), start)
		return
	}
	defer body.done()
	if len(mirrors) > 0 {
		p.mirror(mirrors, r, rt, body)
	}
	attempts := 1
	if rt.Retry != nil {
		attempts += int(rt.Retry.NumRetries)
	}
	var (
		tried   []*endpoint
		lastErr error
	)
	for attempt := range attempts {
		if attempt > 0 {
			if lim := up.cluster.Limits.MaxRetries; lim > 0 && up.retries.Load() >= int64(lim) {
				break // retry budget spent
			}
			p.m.retries.WithLabelValues(up.cluster.Name).Inc()
			wait := backoff(rt.Retry, attempt)
			if !deadline.IsZero() && time.Until(deadline) <= wait {
				break // the route timeout would pass before the retry went: answer with the last failure
			}
			if !sleep(ctx, wait) {
				break
			}
		}
		ep := up.lb.pick(tried)
		if ep == nil && len(tried) > 0 {
			ep = up.lb.pick(nil) // every endpoint tried once: go round again
		}
		if ep == nil {
			p.localFor(w, r, dir, source, dest, http.StatusServiceUnavailable,
				fmt.Sprintf("micromesh: no healthy endpoint for %s", up.cluster.Name), start)
			return
		}
		tried = append(tried, ep)
		if attempt > 0 {
			up.retries.Add(1)
		}
		resp, cancel, err := p.attempt(ctx, deadline, r, rt, up, ep, body)
		if attempt > 0 {
			up.retries.Add(-1)
		}
		if err != nil {
			cancel()
			ep.active.Add(-1)
			if errors.Is(err, h1.ErrPendingOverflow) {
				p.m.overflow.WithLabelValues(up.cluster.Name).Inc()
				p.localFor(w, r, dir, source, dest, http.StatusServiceUnavailable,
					fmt.Sprintf("micromesh: circuit breaker open: %d connections to %s busy and %d requests waiting for one",
						up.cluster.Limits.MaxConnections, up.cluster.Name, up.cluster.Limits.MaxPendingRequests), start)
				return
			}
			if ctx.Err() != nil || (!deadline.IsZero() && !time.Now().Before(deadline)) {
				lastErr = context.DeadlineExceeded
				break
			}
			up.lb.report(ep, localFailure)
			lastErr = err
			if rt.Retry != nil && retriableError(rt.Retry, err) && body.replayable() {
				continue
			}
			break
		}
		if resp.StatusCode >= 500 {
			up.lb.report(ep, serverError)
		} else {
			up.lb.report(ep, success)
		}
		if rt.Retry != nil && attempt+1 < attempts && body.replayable() && retriableResponse(rt.Retry, resp) {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			cancel()
			ep.active.Add(-1)
			lastErr = fmt.Errorf("upstream answered %d", resp.StatusCode)
			continue
		}
		code := p.copyResponse(w, r, resp)
		resp.Body.Close()
		cancel()
		ep.active.Add(-1)
		p.record(w, r, dir, source, dest, up.cluster.Transport, code, start)
		return
	}
	switch {
	case r.Context().Err() != nil:
		p.record(w, r, dir, source, dest, up.cluster.Transport, 499, start) // the caller went away
	case !deadline.IsZero() && !time.Now().Before(deadline):
		p.localFor(w, r, dir, source, dest, http.StatusGatewayTimeout,
			fmt.Sprintf("micromesh: %s did not answer within the route timeout (%v)", up.cluster.Name, rt.Timeout), start)
	case errors.Is(lastErr, context.DeadlineExceeded) && rt.Retry != nil && rt.Retry.PerTryTimeout > 0:
		p.localFor(w, r, dir, source, dest, http.StatusGatewayTimeout,
			fmt.Sprintf("micromesh: %s did not answer within the per-try timeout (%v) in %d attempt(s)", up.cluster.Name, rt.Retry.PerTryTimeout, len(tried)), start)
	case grpcDeadlinePassed(r, start):
		// The server gave up at the caller's deadline and reset the stream:
		// the caller's deadline is what happened, not an unavailable server.
		p.localFor(w, r, dir, source, dest, http.StatusGatewayTimeout,
			fmt.Sprintf("micromesh: %s did not answer within the caller's deadline (grpc-timeout %s)", up.cluster.Name, r.Header.Get("Grpc-Timeout")), start)
	case dir == inbound && up.cluster.Transport == config.TransportPlain && (errors.Is(lastErr, h1.ErrMalformed) || errors.Is(lastErr, h1.ErrHeaderTooLarge)):
		p.localFor(w, r, dir, source, dest, http.StatusBadGateway,
			fmt.Sprintf("micromesh: the app at %s answered with a response the proxy cannot read: %v", tried[0].addr, lastErr), start)
	case dir == inbound && up.cluster.Transport == config.TransportPlain:
		p.localFor(w, r, dir, source, dest, http.StatusServiceUnavailable,
			fmt.Sprintf("micromesh: the app at %s is not answering: %v", tried[0].addr, lastErr), start)
	default:
		p.localFor(w, r, dir, source, dest, http.StatusServiceUnavailable,
			fmt.Sprintf("micromesh: upstream connect error or disconnect/reset before headers: %s after %d attempt(s): %v", up.cluster.Name, len(tried), lastErr), start)
	}
}

// attempt sends one try to ep. The caller must call cancel and release
// ep.active when done with the response.
func (p *Proxy) attempt(ctx context.Context, deadline time.Time, r *http.Request, rt *config.Route, up *upstream, ep *endpoint, body *replayable) (*http.Response, context.CancelFunc, error) {
	cancel := context.CancelFunc(noCancel)
	// A per-try timeout bounds whole requests: only for routes that have a
	// timeout at all (not gRPC streams).
	if rt.Retry != nil && rt.Retry.PerTryTimeout > 0 && !deadline.IsZero() {
		if try := time.Now().Add(rt.Retry.PerTryTimeout); try.Before(deadline) {
			deadline = try
		}
	}
	if !deadline.IsZero() {
		ctx, cancel = context.WithDeadline(ctx, deadline)
	}
	// One shallow copy carries ctx; every field a client request must
	// differ in is set below (RequestURI empty: it marks server requests).
	out := r.WithContext(ctx)
	out.URL = &url.URL{Scheme: up.scheme, Host: ep.addr, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	if rt.HostRewrite != "" {
		out.Host = rt.HostRewrite
	}
	out.Proto, out.ProtoMajor, out.ProtoMinor = "HTTP/1.1", 1, 1
	out.Body, out.GetBody = body.reader(), nil
	out.RequestURI, out.Close, out.TransferEncoding = "", false, nil
	if out.Body == http.NoBody {
		out.ContentLength = 0
	} else if body.buf != nil {
		out.GetBody = func() (io.ReadCloser, error) { return body.reader(), nil } // in memory: sent at once, resent if a kept-alive connection was stale
	}
	ep.active.Add(1)
	resp, err := up.rt.RoundTrip(out)
	return resp, cancel, err
}

func noCancel() {}

func retriableResponse(rp *config.RetryPolicy, resp *http.Response) bool {
	if rp.On.Status(resp.StatusCode) {
		return true
	}
	// A gRPC error with no body is trailers-only: grpc-status is a header.
	if rp.On.GRPCStatus == 0 {
		return false
	}
	code, err := strconv.Atoi(resp.Header.Get("Grpc-Status"))
	return err == nil && rp.On.GRPC(code)
}

// retriableError reports whether a try that got no answer is retried:
// under reset any failure is, under connect-failure only a failure to
// connect (the request never left).
func retriableError(rp *config.RetryPolicy, err error) bool {
	return rp.On.Reset || rp.On.ConnectFailure && connectFailure(err)
}

// backoff is the wait before retry n (1-based): exponential with full
// jitter, as Envoy does.
func backoff(rp *config.RetryPolicy, n int) time.Duration {
	d := rp.BaseInterval << min(n-1, 10)
	if rp.MaxInterval > 0 && d > rp.MaxInterval {
		d = rp.MaxInterval
	}
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d)))
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// replayable is a request body that retries can resend: small bodies are
// read up front (into a pooled buffer); a streaming body is kept as it
// streams when the route retries (up to 64 KiB), and otherwise is handed
// through (no retry will want it).
type replayable struct {
	buf    []byte // read up front, or nil
	empty  bool
	kept   *keptStream // a streaming body the route may retry, or nil
	stream io.ReadCloser
	// pooled holds buf's pool slot. refs counts forward's hold plus each
	// reader a transport has not closed yet: a transport may read a body
	// after RoundTrip returns (until it closes it), so buf goes back to
	// the pool only at zero.
	pooled *[]byte
	refs   atomic.Int32
}

// bodyBuffers pool the buffers of up-front bodies by size: 4, 16 and 64 KiB.
var bodyBuffers = [...]sync.Pool{
	{New: func() any { b := make([]byte, 4<<10); return &b }},
	{New: func() any { b := make([]byte, 16<<10); return &b }},
	{New: func() any { b := make([]byte, maxReplayBody); return &b }},
}

func bodyPool(n int64) *sync.Pool {
	switch {
	case n <= 4<<10:
		return &bodyBuffers[0]
	case n <= 16<<10:
		return &bodyBuffers[1]
	default:
		return &bodyBuffers[2]
	}
}

func newReplayable(r *http.Request, retries, grpc bool) (*replayable, error) {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return &replayable{empty: true}, nil
	}
	// Small bodies of known length are read up front even without retries:
	// the transports then send them with the headers, in one write from the
	// request's own goroutine. gRPC bodies always stream (a stream's
	// messages may wait on the answers).
	limit := int64(0)
	switch {
	case retries:
		limit = maxReplayBody
	case !grpc:
		limit = maxInlineBody
	}
	if r.ContentLength < 0 || r.ContentLength > limit {
		if retries {
			return &replayable{kept: newKeptStream(r.Body)}, nil
		}
		return &replayable{stream: r.Body}, nil
	}
	bp := bodyPool(r.ContentLength).Get().(*[]byte)
	b := &replayable{buf: (*bp)[:r.ContentLength], pooled: bp}
	b.refs.Store(1)
	if _, err := io.ReadFull(r.Body, b.buf); err != nil {
		b.release()
		return nil, err
	}
	return b, nil
}

// release drops one hold on the buffer; the last returns it to the pool.
func (b *replayable) release() {
	if b.pooled != nil && b.refs.Add(-1) == 0 {
		bodyPool(int64(cap(*b.pooled))).Put(b.pooled)
	}
}

func (b *replayable) replayable() bool {
	if b.kept != nil {
		return b.kept.replayable()
	}
	return b.stream == nil
}

// follower is a reader of the body for a mirror: what the tries read,
// as they read it.
func (b *replayable) follower() io.ReadCloser {
	switch {
	case b.kept != nil:
		return &keptCursor{k: b.kept, follow: true}
	case b.stream != nil:
		return io.NopCloser(errReader{errBodyNotKept}) // not kept: forward keeps bodies it mirrors
	}
	return b.reader()
}

// done ends the original request's reading of the body.
func (b *replayable) done() {
	if b.kept != nil {
		b.kept.leave()
	}
	b.release()
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func (b *replayable) reader() io.ReadCloser {
	switch {
	case b.empty:
		return http.NoBody
	case b.kept != nil:
		return &keptCursor{k: b.kept}
	case b.buf != nil:
		b.refs.Add(1)
		rd := &bufBody{b: b}
		rd.Reset(b.buf)
		return rd
	default:
		// Transports close request bodies when a try ends; the incoming
		// one is the server's to close.
		return io.NopCloser(b.stream)
	}
}

// bufBody reads an up-front body; Close releases its hold on the buffer
// (once, however often a transport closes it).
type bufBody struct {
	bytes.Reader
	b      *replayable
	closed atomic.Bool
}

func (r *bufBody) Close() error {
	if r.closed.CompareAndSwap(false, true) {
		r.b.release()
	}
	return nil
}

// headerReplacer is a ResponseWriter that can adopt a header map whole,
// dropping whatever its own held (the sidecar's HTTP/1.1 and HTTP/3
// servers).
type headerReplacer interface{ ReplaceHeader(http.Header) }

// copyResponse streams resp to w, trailers included, flushing as it goes
// for gRPC and unknown-length bodies. It returns the status code to record.
func (p *Proxy) copyResponse(w http.ResponseWriter, r *http.Request, resp *http.Response) int {
	if hr, ok := w.(headerReplacer); ok {
		// Nothing was set on w before: the upstream's map becomes w's.
		hr.ReplaceHeader(resp.Header)
	} else {
		h := w.Header()
		for k, vv := range resp.Header {
			h[k] = vv
		}
	}
	h := w.Header()
	cleanHopHeaders(h)
	w.WriteHeader(resp.StatusCode)
	streaming := resp.ContentLength < 0 || isGRPC(r)
	flush := func() {}
	if f, ok := w.(http.Flusher); ok {
		flush = f.Flush // every server the proxy runs under flushes
	}
	if streaming && resp.Header.Get("Grpc-Status") == "" {
		// The headers go now: a stream's first message may be long in
		// coming, and the caller may wait on the headers (gRPC's
		// header-only acknowledgements, server-sent events). Not for a
		// gRPC trailers-only answer (its status in the headers): that must
		// stay one HEADERS frame that ends the stream.
		flush()
	}
	pool := &copyBuffers
	if n := resp.ContentLength; n >= 0 && n <= 4<<10 {
		pool = &bodyBuffers[0] // most answers are small: 4 KiB, not 32, in cache and in the heap
	}
	bp := pool.Get().(*[]byte)
	defer pool.Put(bp)
	buf := *bp
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return 499 // the caller went away
			}
			if streaming {
				flush()
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			if r.Context().Err() != nil {
				return 499 // the caller went away, and the upstream with it
			}
			// The upstream broke off mid-body: reset the caller's stream
			// rather than end it as if complete.
			p.log.Warn("upstream broke off the response body", "err", err)
			panic(http.ErrAbortHandler)
		}
	}
	for k, vv := range resp.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
	return resp.StatusCode
}

// grpcDeadlinePassed reports whether a gRPC request's grpc-timeout, counted
// from start, has passed.
func grpcDeadlinePassed(r *http.Request, start time.Time) bool {
	v := r.Header.Get("Grpc-Timeout")
	if !isGRPC(r) || len(v) < 2 {
		return false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil {
		return false
	}
	unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second, 'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[v[len(v)-1]]
	return unit != 0 && time.Since(start) >= time.Duration(n)*unit
}

func isGRPC(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}

// local answers with a reply of the proxy's own.
func (p *Proxy) local(w http.ResponseWriter, r *http.Request, dir direction, dest string, code int, msg string, start time.Time) {
	source := p.self
	if dir == inbound {
		source = p.peers.peer(r).workload
	}
	p.localFor(w, r, dir, source, dest, code, msg, start)
}

// grpcCodes maps the proxy's HTTP replies to gRPC status codes.
var grpcCodes = map[int]int{
	http.StatusBadRequest:         13, // INTERNAL
	http.StatusUnauthorized:       16, // UNAUTHENTICATED
	http.StatusForbidden:          7,  // PERMISSION_DENIED
	http.StatusNotFound:           12, // UNIMPLEMENTED
	http.StatusBadGateway:         14, // UNAVAILABLE
	http.StatusServiceUnavailable: 14, // UNAVAILABLE
	http.StatusGatewayTimeout:     4,  // DEADLINE_EXCEEDED
	http.StatusTooManyRequests:    14, // UNAVAILABLE, as gRPC maps 429
}

func (p *Proxy) localFor(w http.ResponseWriter, r *http.Request, dir direction, source, dest string, code int, msg string, start time.Time) {
	p.localReply(w, r, dir, source, dest, code, grpcCodes[code], msg, start)
}

// localReply is localFor with the gRPC status gRPC callers get.
func (p *Proxy) localReply(w http.ResponseWriter, r *http.Request, dir direction, source, dest string, code, grpcCode int, msg string, start time.Time) {
	h := w.Header()
	h.Set("X-Mesh-Local-Reply", "1")
	if isGRPC(r) {
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", strconv.Itoa(grpcCode))
		h.Set("Grpc-Message", grpcMessage(msg))
		w.WriteHeader(http.StatusOK)
	} else {
		h.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, msg+"\n")
	}
	p.m.local.WithLabelValues(string(dir), strconv.Itoa(code)).Inc()
	if a := p.tracedSpan(r); a != nil {
		a.msg = msg
	}
	p.record(w, r, dir, source, dest, "local", code, start)
	if !p.accessLog {
		p.log.Debug("local reply", "direction", dir, "code", code, "msg", msg)
	}
}

// grpcMessage percent-encodes a grpc-message value (gRPC's HTTP/2 spec).
func grpcMessage(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
