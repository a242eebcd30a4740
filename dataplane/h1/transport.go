package h1

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Transport is an http.RoundTripper for plain HTTP/1.1 to nearby servers
// (the app on loopback), pooling keep-alive connections. The caller's
// goroutine writes the request and reads the response; only a streaming
// request body (no GetBody, so not in memory) is written by a goroutine of
// its own, so that an early answer is read while it is still going.
type Transport struct {
	// DialContext opens connections (default: a net.Dialer with a 10 s
	// timeout).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// MaxIdlePerHost caps the idle connections kept per address
	// (default 256).
	MaxIdlePerHost int
	// IdleTimeout closes connections idle for longer (default 90 s).
	IdleTimeout time.Duration
	// MaxConns caps the connections open at once, busy or idle, over all
	// addresses (Envoy's max_connections); 0: no cap. A request that finds
	// no idle connection with the cap reached waits for one.
	MaxConns int
	// MaxPending caps the requests waiting for a connection (Envoy's
	// max_pending_requests); past it RoundTrip fails at once with
	// ErrPendingOverflow. 0: no cap.
	MaxPending int

	mu      sync.Mutex
	idle    map[string][]*pconn
	open    int             // connections dialled and not closed
	waiters []chan struct{} // requests waiting for a connection, oldest first
}

// ErrPendingOverflow is RoundTrip's error when MaxConns connections are
// open and MaxPending requests already wait for one.
var ErrPendingOverflow = errors.New("h1: too many requests waiting for a connection")

// pconn is a pooled connection.
type pconn struct {
	t      *Transport
	addr   string
	nc     net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
	broken atomic.Bool // cancelled or failed mid-exchange: never reused
	closed atomic.Bool
}

var errCannotRetry = errors.New("h1: the connection failed and the request body cannot be sent again")

// RoundTrip sends req and returns the response head; the body streams.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil || req.URL.Host == "" {
		return nil, errors.New("h1: request has no host")
	}
	addr := req.URL.Host
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, "80")
	}
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		pc, reused, err := t.get(ctx, addr)
		if err != nil {
			return nil, err
		}
		resp, wrote, err := pc.roundTrip(req)
		if err == nil {
			return resp, nil
		}
		// A kept-alive connection the server had closed fails before
		// anything of a response arrives: try once more on a fresh one,
		// when the request can be sent again.
		if !reused || attempt > 0 || ctx.Err() != nil {
			return nil, err
		}
		if wrote && req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return nil, fmt.Errorf("%w: %w", errCannotRetry, err)
			}
			body, gerr := req.GetBody()
			if gerr != nil {
				return nil, err
			}
			r2 := *req
			r2.Body = body
			req = &r2
		}
	}
}

// get returns an idle connection to addr (reused) or dials one, waiting
// for one to be put back or closed when MaxConns are open.
func (t *Transport) get(ctx context.Context, addr string) (*pconn, bool, error) {
	idleTimeout := t.IdleTimeout
	if idleTimeout <= 0 {
		idleTimeout = 90 * time.Second
	}
	for {
		t.mu.Lock()
		if pc := t.popIdle(addr); pc != nil {
			t.mu.Unlock()
			idle := time.Since(pc.idleAt)
			// Connections idle a while may have been closed by the server:
			// look before using one (a non-blocking peek, one syscall).
			if idle > idleTimeout || (idle > time.Second && !alive(pc.nc)) {
				pc.close()
				continue
			}
			return pc, true, nil
		}
		if t.MaxConns > 0 && t.open >= t.MaxConns {
			// At the cap: an idle connection to another address makes room.
			if other := t.popAnyIdle(); other != nil {
				t.mu.Unlock()
				other.close()
				continue
			}
			if t.MaxPending > 0 && len(t.waiters) >= t.MaxPending {
				t.mu.Unlock()
				return nil, false, ErrPendingOverflow
			}
			ch := make(chan struct{}, 1)
			t.waiters = append(t.waiters, ch)
			t.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				t.leave(ch)
				return nil, false, ctx.Err()
			}
		}
		t.open++
		t.mu.Unlock()
		break
	}
	dial := t.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second}).DialContext
	}
	nc, err := dial(ctx, "tcp", addr)
	if err != nil {
		t.mu.Lock()
		t.open--
		t.wakeOne()
		t.mu.Unlock()
		return nil, false, err
	}
	pc := &pconn{t: t, addr: addr, nc: nc, br: bufio.NewReaderSize(nc, 4<<10), bw: bufio.NewWriterSize(nc, 4<<10)}
	return pc, false, nil
}

// Waiting returns how many requests wait for a connection (Envoy's
// rq_pending_active).
func (t *Transport) Waiting() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.waiters)
}

// popIdle takes the most recently used idle connection to addr. t.mu held.
func (t *Transport) popIdle(addr string) *pconn {
	list := t.idle[addr]
	if len(list) == 0 {
		return nil
	}
	pc := list[len(list)-1]
	list[len(list)-1] = nil
	t.idle[addr] = list[:len(list)-1]
	return pc
}

// popAnyIdle takes an idle connection to any address. t.mu held.
func (t *Transport) popAnyIdle() *pconn {
	for addr := range t.idle {
		if pc := t.popIdle(addr); pc != nil {
			return pc
		}
	}
	return nil
}

// wakeOne tells the oldest waiting request that a connection was put back
// or closed. t.mu held.
func (t *Transport) wakeOne() {
	if len(t.waiters) == 0 {
		return
	}
	ch := t.waiters[0]
	t.waiters[0] = nil
	t.waiters = t.waiters[1:]
	ch <- struct{}{}
}

// leave takes a request that gave up out of the waiters; if it had been
// woken meanwhile, the wake-up goes to the next one.
func (t *Transport) leave(ch chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, w := range t.waiters {
		if w == ch {
			t.waiters = append(t.waiters[:i], t.waiters[i+1:]...)
			return
		}
	}
	select {
	case <-ch:
		t.wakeOne()
	default:
	}
}

// close closes the connection (once) and makes room for a waiting request.
func (pc *pconn) close() {
	if !pc.closed.CompareAndSwap(false, true) {
		return
	}
	_ = pc.nc.Close()
	t := pc.t
	t.mu.Lock()
	t.open--
	t.wakeOne()
	t.mu.Unlock()
}

// alive reports whether an idle connection is still open: nothing to read
// and no end of stream.
func alive(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var (
		b    [1]byte
		rerr error
	)
	_ = rc.Read(func(fd uintptr) bool {
		_, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	})
	// Nothing to read: open. Otherwise the end of the stream, an error, or
	// bytes nobody asked for (the connection is out of step): not usable.
	return rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK
}

func (t *Transport) put(pc *pconn) {
	max := t.MaxIdlePerHost
	if max <= 0 {
		max = 256
	}
	pc.idleAt = time.Now()
	t.mu.Lock()
	if t.idle == nil {
		t.idle = map[string][]*pconn{}
	}
	if len(t.idle[pc.addr]) < max {
		t.idle[pc.addr] = append(t.idle[pc.addr], pc)
		t.wakeOne()
		pc = nil
	}
	t.mu.Unlock()
	if pc != nil {
		pc.close()
	}
}

// CloseIdleConnections closes the connections not in use.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, list := range idle {
		for _, pc := range list {
			pc.close()
		}
	}
}

var aLongTimeAgo = time.Unix(1, 0)

// roundTrip runs one exchange on pc. wrote reports whether any of the
// request reached the connection.
func (pc *pconn) roundTrip(req *http.Request) (resp *http.Response, wrote bool, err error) {
	ctx := req.Context()
	stop := context.AfterFunc(ctx, func() {
		pc.broken.Store(true)
		_ = pc.nc.SetDeadline(aLongTimeAgo)
	})
	fail := func(err error) (*http.Response, bool, error) {
		stop()
		pc.close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, wrote, err
	}
	body := req.Body
	hasBody := body != nil && body != http.NoBody
	streaming := hasBody && (req.GetBody == nil || req.ContentLength < 0)
	writeHead(pc.bw, req, hasBody)
	var bodyDone chan error
	switch {
	case !hasBody:
	case !streaming:
		if err := writeBody(pc.bw, body, req.ContentLength, req.Trailer); err != nil {
			wrote = true
			return fail(err)
		}
	default:
		wrote = true
		if err := pc.bw.Flush(); err != nil {
			return fail(err)
		}
		bodyDone = make(chan error, 1)
		go func() {
			err := writeBody(pc.bw, body, req.ContentLength, req.Trailer)
			if err == nil {
				err = pc.bw.Flush()
			}
			if err != nil {
				pc.broken.Store(true)
				// A body that failed to be read: the upstream would wait
				// for the rest, which is not coming. The connection goes,
				// and the exchange fails with the body's error. (A failed
				// write means the connection is gone already.)
				var be *bodyError
				if errors.As(err, &be) {
					pc.close()
				}
			}
			bodyDone <- err
		}()
	}
	if bodyDone == nil {
		wrote = true
		if err := pc.bw.Flush(); err != nil {
			return fail(err)
		}
	}
	for {
		resp, err = ReadResponse(pc.br, req)
		if err != nil {
			if bodyDone != nil {
				pc.close()
				var be *bodyError
				if berr := <-bodyDone; errors.As(berr, &be) && ctx.Err() == nil {
					err = berr // the request's body failed, not the upstream
				}
			}
			return fail(err)
		}
		if resp.StatusCode >= 100 && resp.StatusCode <= 199 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue // informational; the final answer follows
		}
		break
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		pc.close()
		stop()
		return nil, true, errors.New("h1: the upstream switched protocols, which this proxy does not carry")
	}
	eb := &eofBody{pc: pc, rc: resp.Body, stop: stop, bodyDone: bodyDone, reusable: !resp.Close && !req.Close}
	if resp.Body == http.NoBody {
		eb.release()
	} else {
		resp.Body = eb
	}
	return resp, true, nil
}

// writeHead writes the request line and header.
func writeHead(bw *bufio.Writer, req *http.Request, hasBody bool) {
	_, _ = bw.WriteString(req.Method)
	_ = bw.WriteByte(' ')
	uri := req.URL.RequestURI()
	if uri == "" {
		uri = "/"
	}
	_, _ = bw.WriteString(uri)
	_, _ = bw.WriteString(" HTTP/1.1\r\nHost: ")
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	_, _ = bw.WriteString(headerValue(host))
	_, _ = bw.WriteString("\r\n")
	for k, vv := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer", "Connection":
			continue
		}
		if !validName(k) {
			continue
		}
		for _, v := range vv {
			_, _ = bw.WriteString(k)
			_, _ = bw.WriteString(": ")
			_, _ = bw.WriteString(headerValue(v))
			_, _ = bw.WriteString("\r\n")
		}
	}
	switch {
	case !hasBody:
		if req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch {
			_, _ = bw.WriteString("Content-Length: 0\r\n")
		}
	case req.ContentLength >= 0 && len(req.Trailer) == 0:
		_, _ = bw.WriteString("Content-Length: ")
		_, _ = bw.WriteString(strconv.FormatInt(req.ContentLength, 10))
		_, _ = bw.WriteString("\r\n")
	default:
		_, _ = bw.WriteString("Transfer-Encoding: chunked\r\n")
		if len(req.Trailer) > 0 {
			names := make([]string, 0, len(req.Trailer))
			for k := range req.Trailer {
				names = append(names, k)
			}
			_, _ = bw.WriteString("Trailer: " + strings.Join(names, ", ") + "\r\n")
		}
	}
	if req.Close {
		_, _ = bw.WriteString("Connection: close\r\n")
	}
	_, _ = bw.WriteString("\r\n")
}

// bodyError is a failure to read the request body itself (not to write
// it to the upstream).
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "h1: reading the request body: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

// readTagged tags the errors of reading r as bodyErrors.
type readTagged struct{ r io.Reader }

func (t readTagged) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		err = &bodyError{err}
	}
	return n, err
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// writeBody writes body, exactly n bytes when n >= 0 (and no trailers),
// chunked otherwise.
func writeBody(bw *bufio.Writer, body io.ReadCloser, n int64, trailer http.Header) error {
	defer body.Close()
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	if n >= 0 && len(trailer) == 0 {
		m, err := io.CopyBuffer(bw, io.LimitReader(readTagged{body}, n), buf)
		if err != nil {
			return err
		}
		if m != n {
			return fmt.Errorf("h1: request body has %d bytes, Content-Length says %d", m, n)
		}
		return nil
	}
	for {
		k, err := readTagged{body}.Read(buf)
		if k > 0 {
			_, _ = bw.WriteString(strconv.FormatInt(int64(k), 16))
			_, _ = bw.WriteString("\r\n")
			_, _ = bw.Write(buf[:k])
			if _, werr := bw.WriteString("\r\n"); werr != nil {
				return werr
			}
			// A streaming body is sent as it comes.
			if werr := bw.Flush(); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	_, _ = bw.WriteString("0\r\n")
	if err := writeHeader(bw, trailer); err != nil {
		return err
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// eofBody returns the connection to the pool when the response body has
// been read to its end, and closes it if the body is abandoned.
type eofBody struct {
	pc       *pconn
	rc       io.ReadCloser
	stop     func() bool
	bodyDone chan error
	reusable bool
	done     bool
}

func (b *eofBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.release()
	} else if err != nil {
		b.discard()
	}
	return n, err
}

func (b *eofBody) Close() error {
	if !b.done {
		b.discard()
	}
	return nil
}

// release ends an exchange whose response was read to the end.
func (b *eofBody) release() {
	b.done = true
	stopped := b.stop()
	ok := b.reusable && stopped && !b.pc.broken.Load()
	if b.bodyDone != nil {
		select {
		case err := <-b.bodyDone:
			ok = ok && err == nil
		default:
			ok = false // the request body is still going: the connection is busy
			b.pc.close()
			return
		}
	}
	if ok {
		b.pc.t.put(b.pc)
		return
	}
	b.pc.close()
}

func (b *eofBody) discard() {
	b.done = true
	b.stop()
	b.pc.close()
}
