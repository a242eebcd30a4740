package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/micromesh/micromesh/dataplane/config"
)

// TCP services ride in CONNECT streams (docs/tcp.md): the caller's proxy
// takes the app's connection on a tunnel listener and opens a CONNECT on
// the service's cluster (ServeTunnel); the service's proxy authorizes the
// CONNECT like any request and connects to its app (tunnelIn). Each end
// passes a half-close on (a TCP FIN becomes the stream's end, and back),
// so protocols that close one side first work; a reset on either side
// resets the other.

// tunnelMetrics count tunnels as Istio counts TCP: connections opened and
// closed, bytes received from the source and sent back to it, by direction,
// source and destination workload; failed tunnels by reason.
type tunnelMetrics struct {
	opened, closed, received, sent *prometheus.CounterVec
	failed                         *prometheus.CounterVec
}

func newTunnelMetrics() tunnelMetrics {
	labels := []string{"direction", "source", "destination"}
	return tunnelMetrics{
		opened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "micromesh_tcp_connections_opened_total",
			Help: "TCP connections tunnelled through the proxy (CONNECT streams between proxies), by direction, source and destination workload.",
		}, labels),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "micromesh_tcp_connections_closed_total",
			Help: "Tunnelled TCP connections that ended, by direction, source and destination workload.",
		}, labels),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "micromesh_tcp_received_bytes_total",
			Help: "Bytes of tunnelled TCP connections from the source towards the destination.",
		}, labels),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "micromesh_tcp_sent_bytes_total",
			Help: "Bytes of tunnelled TCP connections from the destination back to the source.",
		}, labels),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "micromesh_tcp_connections_failed_total",
			Help: "TCP connections the proxy could not tunnel, by direction, destination and reason: no_cluster (not a service this workload reaches), no_endpoint, overflow (circuit breaker), connect_error, refused (the destination's proxy answered the CONNECT with an error: RBAC, app down).",
		}, []string{"direction", "destination", "reason"}),
	}
}

func (m tunnelMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.opened, m.closed, m.received, m.sent, m.failed}
}

// ServeTunnel carries conn, taken on the tunnel listener at addr, to the
// tunnel's cluster in a CONNECT stream, until both sides have ended or
// either breaks, ctx ends or the tunnel's idle timeout passes; it closes
// conn. A connection that cannot be tunnelled is closed at once, the
// reason logged and counted.
func (p *Proxy) ServeTunnel(ctx context.Context, addr string, conn net.Conn) {
	defer conn.Close()
	start := time.Now()
	if !p.awaitWarm(ctx) {
		return
	}
	st := p.state.Load()
	var t *config.Tunnel
	if st != nil {
		t = st.cfg.TunnelAt(addr)
	}
	if t == nil {
		p.tunnelFailed(outbound, "unknown", "no_cluster", "micromesh: no tunnel listener at "+addr+" in the config in force")
		return
	}
	// One cluster per connection: the tunnel's, or one of its split's
	// (a service's versions), its attempts staying there.
	cluster := t.Cluster
	if t.Split != nil {
		cluster = t.Split.Pick(rand.Uint32N(t.Split.Total))
	}
	up := st.upstreams[cluster]
	switch {
	case up == nil:
		p.tunnelFailed(outbound, cluster, "no_cluster",
			fmt.Sprintf("micromesh: tunnel %s: %s is not a service in the mesh this workload can reach (not registered yet, or its namespace does not admit this one)", t.Name, t.Authority))
		return
	case up.cluster.Transport != config.TransportQUIC && up.cluster.Transport != config.TransportTLS:
		p.tunnelFailed(outbound, cluster, "no_cluster", fmt.Sprintf("micromesh: tunnel %s: cluster %s is not a mesh service's (transport %s)", t.Name, cluster, up.cluster.Transport))
		return
	}
	if lim := up.cluster.Limits.MaxRequests; lim > 0 && up.active.Load() >= int64(lim) {
		p.m.overflow.WithLabelValues(up.cluster.Name).Inc()
		p.tunnelFailed(outbound, cluster, "overflow", fmt.Sprintf("micromesh: tunnel %s: circuit breaker open: %d requests and tunnels in flight to %s", t.Name, lim, cluster))
		return
	}
	up.active.Add(1)
	defer up.active.Add(-1)

	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := newSplice(conn, cancel, t.IdleTimeout)
	defer s.stop()
	var (
		tried  []*endpoint
		reason string
		why    error
	)
	for range max(t.ConnectAttempts, 1) {
		ep := up.lb.pick(tried)
		if ep == nil && len(tried) > 0 {
			break // every endpoint tried
		}
		if ep == nil {
			p.tunnelFailed(outbound, cluster, "no_endpoint", fmt.Sprintf("micromesh: tunnel %s: no healthy endpoint for %s", t.Name, cluster))
			return
		}
		tried = append(tried, ep)
		resp, done, final, err := p.openTunnel(tctx, up, ep, t, s)
		if err == nil {
			defer done()
			labels := []string{string(outbound), p.self, cluster}
			p.tm.opened.WithLabelValues(labels...).Inc()
			go s.copyDown(resp.Body)
			received, sent := s.wait()
			p.tunnelEnded(labels, t.Authority, received, sent, start)
			return
		}
		if ctx.Err() != nil {
			return // the sidecar is stopping
		}
		reason, why = "connect_error", err
		if final {
			reason = "refused"
			break
		}
	}
	p.tunnelFailed(outbound, cluster, reason, fmt.Sprintf("micromesh: tunnel %s: %v (%d attempt(s))", t.Name, why, len(tried)))
}

// openTunnel opens the CONNECT stream of s's connection at ep. On
// success done ends the attempt's hold on ep once the tunnel is over; an
// error says why there is none, final when another endpoint would refuse
// as well (the service's rules, not an instance's failure). The app's
// bytes are read only once the stream is open: an attempt that fails has
// taken none, and the next sends them all (as Envoy holds them).
func (p *Proxy) openTunnel(ctx context.Context, up *upstream, ep *endpoint, t *config.Tunnel, s *splice) (resp *http.Response, done func(), final bool, err error) {
	actx, cancel := context.WithCancel(ctx)
	body := &tunnelBody{s: s, open: make(chan struct{}), abandoned: make(chan struct{})}
	req := (&http.Request{
		Method: http.MethodConnect, URL: &url.URL{Scheme: up.scheme, Host: ep.addr}, Host: t.Authority,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{}, Body: body, ContentLength: -1,
	}).WithContext(actx)
	ep.active.Add(1)
	fail := func(o outcome, final bool, err error) (*http.Response, func(), bool, error) {
		close(body.abandoned)
		cancel()
		ep.active.Add(-1)
		up.lb.report(ep, o)
		return nil, nil, final, err
	}
	// The CONNECT's answer comes once the peer's proxy has reached its
	// app: bounded as a connection is.
	wait := time.AfterFunc(2*up.cluster.ConnectTimeout+time.Second, cancel)
	resp, err = up.rt.RoundTrip(req)
	wait.Stop()
	if err != nil {
		return fail(localFailure, false, fmt.Errorf("connecting to %s at %s: %w", up.cluster.Name, ep.addr, err))
	}
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		err := fmt.Errorf("%s at %s refused it: %d %s", up.cluster.Name, ep.addr, resp.StatusCode, strings.TrimSpace(string(msg)))
		if resp.StatusCode >= 500 { // that instance's trouble: another may take it
			return fail(serverError, false, err)
		}
		return fail(success, true, err)
	}
	up.lb.report(ep, success)
	close(body.open)
	return resp, func() { resp.Body.Close(); cancel(); ep.active.Add(-1) }, false, nil
}

// tunnelIn ends a CONNECT request at the app: a TCP connection to the
// route's cluster, bytes both ways until both sides end.
func (p *Proxy) tunnelIn(w http.ResponseWriter, r *http.Request, route *config.Route, up *upstream, caller peer, start time.Time) {
	source, dest := caller.workload, p.self
	if lim := up.cluster.Limits.MaxRequests; lim > 0 && up.active.Load() >= int64(lim) {
		p.m.overflow.WithLabelValues(up.cluster.Name).Inc()
		p.tm.failed.WithLabelValues(string(inbound), dest, "overflow").Inc()
		p.localFor(w, r, inbound, source, dest, http.StatusServiceUnavailable,
			fmt.Sprintf("micromesh: circuit breaker open: %d requests and tunnels in flight to %s", lim, up.cluster.Name), start)
		return
	}
	up.active.Add(1)
	defer up.active.Add(-1)
	ep := up.lb.pick(nil)
	if ep == nil {
		p.tm.failed.WithLabelValues(string(inbound), dest, "no_endpoint").Inc()
		p.localFor(w, r, inbound, source, dest, http.StatusServiceUnavailable, "micromesh: the app has no endpoint", start)
		return
	}
	d := net.Dialer{Timeout: up.cluster.ConnectTimeout}
	app, err := d.DialContext(r.Context(), "tcp", ep.addr)
	if err != nil {
		up.lb.report(ep, localFailure)
		p.tm.failed.WithLabelValues(string(inbound), dest, "connect_error").Inc()
		p.localFor(w, r, inbound, source, dest, http.StatusServiceUnavailable,
			fmt.Sprintf("micromesh: the app at %s is not accepting connections: %v", ep.addr, err), start)
		return
	}
	defer app.Close()
	up.lb.report(ep, success)
	rc := http.NewResponseController(w)
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	labels := []string{string(inbound), source, dest}
	p.tm.opened.WithLabelValues(labels...).Inc()
	// Tearing down closes the app's connection; the handler then resets
	// the stream (broken), which ends the read of the caller's side.
	s := newSplice(app, func() {}, route.IdleTimeout)
	defer s.stop()
	go s.copyUp(r.Body)
	tb := &tunnelBody{s: s, to: &streamWriter{w: w, rc: rc}}
	go func() { s.downDone <- tb.pump() }()
	received, sent := s.wait()
	p.tunnelEnded(labels, r.Host, received, sent, start)
	if s.broken() {
		// A reset, not an end: the caller must not take what it got for
		// all of it.
		panic(http.ErrAbortHandler)
	}
}

// tunnelFailed logs and counts a connection that could not be tunnelled.
func (p *Proxy) tunnelFailed(dir direction, dest, reason, msg string) {
	p.tm.failed.WithLabelValues(string(dir), dest, reason).Inc()
	p.log.Warn(msg, "direction", dir, "reason", reason)
}

// tunnelEnded counts and (with access logs on) logs a tunnel that ended.
func (p *Proxy) tunnelEnded(labels []string, authority string, received, sent int64, start time.Time) {
	p.tm.received.WithLabelValues(labels...).Add(float64(received))
	p.tm.sent.WithLabelValues(labels...).Add(float64(sent))
	p.tm.closed.WithLabelValues(labels...).Inc()
	if p.accessLog {
		p.log.Info("tunnel", "direction", labels[0], "authority", authority, "source", labels[1], "destination", labels[2],
			"received_bytes", received, "sent_bytes", sent, "duration", time.Since(start))
	}
}

// splice is the two directions of a tunnel around a local TCP connection:
// up (local → peer: the caller's app's bytes, or, on the service's side,
// the peer's bytes to the app) and down (the other way). Each direction's
// clean end is passed on as a half-close; an error in either, the idle
// timeout or cancel ends both.
type splice struct {
	local  net.Conn
	cancel context.CancelFunc
	idle   *idleTimer

	upDone, downDone chan error
	upOnce           sync.Once
	received, sent   atomic.Int64
	failed           atomic.Bool
}

func newSplice(local net.Conn, cancel context.CancelFunc, idle time.Duration) *splice {
	s := &splice{local: local, cancel: cancel, upDone: make(chan error, 1), downDone: make(chan error, 1)}
	s.idle = startIdleTimer(idle, s.teardown)
	return s
}

// endUp reports the up direction's end (nil: a clean one).
func (s *splice) endUp(err error) { s.upOnce.Do(func() { s.upDone <- err }) }

// copyUp copies the peer's bytes (from) to the local connection, then
// half-closes it (the service's side of a tunnel).
func (s *splice) copyUp(from io.Reader) {
	n, err := io.Copy(s.local, &touching{r: from, s: s})
	s.received.Add(n)
	if err == nil {
		err = closeWrite(s.local)
	}
	s.endUp(err)
}

// copyDown copies the peer's answer (the CONNECT's response body) to the
// caller's app, then half-closes the connection.
func (s *splice) copyDown(from io.Reader) {
	n, err := io.Copy(s.local, &touching{r: from, s: s})
	s.sent.Add(n)
	if err == nil {
		err = closeWrite(s.local)
	}
	s.downDone <- err
}

// wait returns once both directions ended, or one broke (then the other
// is cut: the local connection closed, the stream's context cancelled).
func (s *splice) wait() (received, sent int64) {
	upEnded, downEnded := false, false
	for !upEnded || !downEnded {
		select {
		case err := <-s.upDone:
			upEnded = true
			if err != nil {
				s.teardown()
			}
		case err := <-s.downDone:
			downEnded = true
			if errors.Is(err, errHalfCloseUnsupported) {
				// The app ended its side and the stream cannot say so
				// alone: the tunnel ends, cleanly.
				_ = s.local.Close()
				upEnded = true
			} else if err != nil {
				s.teardown()
				if !upEnded {
					// The up side may never report (the transport stopped
					// reading it): a broken stream ends the tunnel.
					upEnded = true
				}
			}
		}
	}
	return s.received.Load(), s.sent.Load()
}

// teardown ends both directions at once: a reset, an idle timeout.
func (s *splice) teardown() {
	s.failed.Store(true)
	s.cancel()
	_ = s.local.Close()
	s.endUp(errors.New("tunnel torn down"))
}

func (s *splice) broken() bool { return s.failed.Load() }

func (s *splice) stop() { s.idle.stop() }

// tunnelBody reads the local connection for the stream: on the caller's
// side it is the CONNECT's request body (the transport reads it and ends
// the stream at its EOF); on the service's side pump writes it to the
// response stream (to).
type tunnelBody struct {
	s  *splice
	to *streamWriter // the service's side only
	// open, on the caller's side, is closed once the stream is open (the
	// connection is read from then on), abandoned when the attempt failed
	// (nothing is read).
	open, abandoned chan struct{}
}

var errAbandoned = errors.New("the tunnel attempt failed")

func (b *tunnelBody) Read(p []byte) (int, error) {
	if b.open != nil {
		select {
		case <-b.open:
		case <-b.abandoned:
			return 0, errAbandoned
		}
	}
	n, err := b.s.local.Read(p)
	if n > 0 {
		b.s.idle.touch()
		if b.to == nil {
			b.s.received.Add(int64(n))
		} else {
			b.s.sent.Add(int64(n))
		}
	}
	if err != nil && b.to == nil {
		if err == io.EOF {
			b.s.endUp(nil)
		} else {
			b.s.endUp(err)
		}
	}
	return n, err
}

// Close leaves the connection open: the transport closes a request body
// when it is done sending it, while the other direction goes on.
func (b *tunnelBody) Close() error { return nil }

// pump copies the app's bytes to the response stream, flushing each,
// then ends the stream's side (CloseWrite) at the app's end.
func (b *tunnelBody) pump() error {
	buf := make([]byte, 32<<10)
	for {
		n, err := b.Read(buf)
		if n > 0 {
			if werr := b.to.write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return b.to.closeWrite()
		}
		if err != nil {
			return err
		}
	}
}

// streamWriter writes a tunnel's bytes to a response stream.
type streamWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (s *streamWriter) write(p []byte) error {
	if _, err := s.w.Write(p); err != nil {
		return err
	}
	return s.rc.Flush()
}

// closeWrite ends the response's side of the stream while the request's
// goes on: HTTP/3 (the proxy's own server) can; net/http's HTTP/2 server
// cannot end a stream before its handler returns, so there the tunnel
// ends when the app ends its side (as most TCP protocols do anyway).
func (s *streamWriter) closeWrite() error {
	if cw, ok := s.w.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errHalfCloseUnsupported
}

var errHalfCloseUnsupported = errors.New("the stream cannot end one side alone (HTTP/2): the tunnel ends")

// touching reads r, marking the tunnel active.
type touching struct {
	r io.Reader
	s *splice
}

func (t *touching) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.s.idle.touch()
	}
	return n, err
}

// closeWrite half-closes a TCP connection (a FIN); other connections are
// closed.
func closeWrite(c net.Conn) error {
	if tc, ok := c.(interface{ CloseWrite() error }); ok {
		return tc.CloseWrite()
	}
	return c.Close()
}

// idleTimer calls fire once nothing has touched it for d; a nil one (d 0)
// never fires.
type idleTimer struct {
	d    time.Duration
	last atomic.Int64 // unix nanoseconds
	t    *time.Timer
	fire func()
}

func startIdleTimer(d time.Duration, fire func()) *idleTimer {
	if d <= 0 {
		return nil
	}
	i := &idleTimer{d: d, fire: fire}
	i.touch()
	i.t = time.AfterFunc(d, i.check)
	return i
}

func (i *idleTimer) touch() {
	if i != nil {
		i.last.Store(time.Now().UnixNano())
	}
}

func (i *idleTimer) check() {
	quiet := time.Since(time.Unix(0, i.last.Load()))
	if quiet >= i.d {
		i.fire()
		return
	}
	i.t.Reset(i.d - quiet)
}

func (i *idleTimer) stop() {
	if i != nil {
		i.t.Stop()
	}
}
