// Package h1 is HTTP/1.1 for the sidecar's loopback legs (the app calling
// out, the sidecar calling the app), built so that one goroutine carries a
// whole exchange: it reads the request, runs the handler (which sends the
// request upstream and reads the answer in the same goroutine) and writes
// the response. net/http's server starts a background reader per request and
// its transport a read loop and a write loop per connection; every hand-off
// between them is a wake-up, and on a small VM wake-ups, not instructions,
// are what a proxy hop costs. docs/dataplane.md has the measurements.
//
// What it leaves out, on purpose: a client that goes away is noticed when
// the response is written, not while the upstream is thinking (as nginx
// does by default); connection upgrades (the proxy strips Upgrade); HTTP/1.0
// keep-alive. HTTP/2 with prior knowledge (gRPC from the app) is detected by
// its preface and handed to a net/http server.
package h1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// maxDrain is how much of a request body the handler left unread is read
// and discarded to keep the connection; past it the connection closes.
const maxDrain = 256 << 10

// Server serves HTTP/1.1 connections, one goroutine each.
type Server struct {
	Handler http.Handler
	// H2 serves connections that open with the HTTP/2 preface (h2c with
	// prior knowledge). Nil: such connections are refused.
	H2                *http.Server
	ReadHeaderTimeout time.Duration // default 30s
	IdleTimeout       time.Duration // default 5m
	// ConnState, if set, sees StateNew and StateClosed of each connection
	// this server owns (StateHijacked when handed to H2).
	ConnState func(net.Conn, http.ConnState)
	Logger    *slog.Logger

	mu       sync.Mutex
	conns    map[*conn]struct{}
	lns      []net.Listener
	h2ln     *chanListener
	closing  bool
	done     chan struct{} // closed when closing begins
	finished sync.WaitGroup
}

var errServerClosed = http.ErrServerClosed

func (s *Server) init() {
	if s.conns == nil {
		s.conns = map[*conn]struct{}{}
		s.done = make(chan struct{})
		if s.Logger == nil {
			s.Logger = slog.New(slog.DiscardHandler)
		}
		if s.H2 != nil {
			s.h2ln = newChanListener()
			go func() { _ = s.H2.Serve(s.h2ln) }()
		}
	}
}

// Serve accepts connections on ln until Shutdown or Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.init()
	if s.closing {
		s.mu.Unlock()
		_ = ln.Close()
		return errServerClosed
	}
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return errServerClosed
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		c := &conn{srv: s, nc: nc}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			_ = nc.Close()
			return errServerClosed
		}
		s.conns[c] = struct{}{}
		s.finished.Add(1)
		s.mu.Unlock()
		if s.ConnState != nil {
			s.ConnState(nc, http.StateNew)
		}
		go c.serve()
	}
}

// Shutdown stops accepting, closes idle connections, and waits for the
// requests in flight to finish (each connection closes after its response)
// or ctx to end, when it closes the rest.
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginClosing()
	wait := make(chan struct{})
	go func() { s.finished.Wait(); close(wait) }()
	var h2err error
	if s.H2 != nil {
		h2err = s.H2.Shutdown(ctx)
	}
	for {
		s.closeIdle()
		select {
		case <-wait:
			return h2err
		case <-ctx.Done():
			s.closeAll()
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Close closes the listeners and every connection now.
func (s *Server) Close() error {
	s.beginClosing()
	s.closeAll()
	if s.H2 != nil {
		return s.H2.Close()
	}
	return nil
}

func (s *Server) beginClosing() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	if s.closing {
		return
	}
	s.closing = true
	close(s.done)
	for _, ln := range s.lns {
		_ = ln.Close()
	}
	if s.h2ln != nil {
		_ = s.h2ln.Close()
	}
}

func (s *Server) closeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.idle() {
			_ = c.nc.Close()
		}
	}
}

func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.nc.Close()
	}
}

func (s *Server) shuttingDown() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// conn is one client connection.
type conn struct {
	srv *Server
	nc  net.Conn

	mu     sync.Mutex
	active bool // a request is being read or served
}

func (c *conn) idle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.active
}

func (c *conn) setActive(a bool) {
	c.mu.Lock()
	c.active = a
	c.mu.Unlock()
}

var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)

// h2Preface is how HTTP/2 with prior knowledge opens ("PRI * HTTP/2.0").
const h2Preface = "PRI"

func (c *conn) serve() {
	s := c.srv
	handedOff := false
	br := readers.Get().(*bufio.Reader)
	lim := &headLimit{r: c.nc, left: -1}
	br.Reset(lim)
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(c.nc)
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		if !handedOff {
			_ = c.nc.Close()
			if s.ConnState != nil {
				s.ConnState(c.nc, http.StateClosed)
			}
			br.Reset(nil)
			readers.Put(br)
		}
		bw.Reset(nil)
		writers.Put(bw)
		s.finished.Done()
	}()
	headerTimeout := s.ReadHeaderTimeout
	if headerTimeout <= 0 {
		headerTimeout = 30 * time.Second
	}
	idleTimeout := s.IdleTimeout
	if idleTimeout <= 0 {
		idleTimeout = 5 * time.Minute
	}
	first := true
	remote := "" // the client's address, formatted once per connection
	for {
		// Wait for the next request's first byte (idle), then give it the
		// header timeout.
		_ = c.nc.SetReadDeadline(time.Now().Add(idleTimeout))
		if _, err := br.Peek(1); err != nil {
			return
		}
		if s.shuttingDown() {
			return
		}
		c.setActive(true)
		// The header timeout matters only while the head is still on its
		// way; mostly it came whole with the first read, and the idle
		// deadline can stay (moving a deadline is a timer operation).
		whole := headBuffered(br)
		if !whole {
			_ = c.nc.SetReadDeadline(time.Now().Add(headerTimeout))
		}
		if first {
			first = false
			if p, _ := br.Peek(len(h2Preface)); string(p) == h2Preface {
				if s.h2ln == nil {
					return
				}
				_ = c.nc.SetReadDeadline(time.Time{})
				if s.ConnState != nil {
					s.ConnState(c.nc, http.StateHijacked)
				}
				handedOff = true
				s.h2ln.push(&peekedConn{Conn: c.nc, r: br})
				return
			}
		}
		lim.left = MaxHeaderBytes + int64(br.Size()) // what is buffered already was read under the last limit
		req, err := ReadRequest(br)
		lim.left = -1
		if err != nil {
			switch {
			case errors.Is(err, ErrHeaderTooLarge):
				writeError(bw, http.StatusRequestHeaderFieldsTooLarge, fmt.Sprintf("request head larger than %d bytes", MaxHeaderBytes))
			case err != io.EOF && !isTimeout(err):
				writeError(bw, http.StatusBadRequest, "malformed HTTP/1.1 request: "+err.Error())
			}
			return
		}
		if !whole || !bodyBuffered(req, br) {
			_ = c.nc.SetReadDeadline(time.Time{}) // the body streams: no deadline on it
		}
		if msg := validate(req); msg != "" {
			writeError(bw, http.StatusBadRequest, msg)
			return
		}
		// The request keeps the background context: a client that goes
		// away is noticed when the response is written (package doc), so
		// no cancellation is ever signalled while a handler runs, and a
		// context per request would only be a copy of the request.
		if remote == "" {
			remote = c.nc.RemoteAddr().String()
		}
		req.RemoteAddr = remote
		keep := c.serveOne(req, bw)
		if !keep || s.shuttingDown() {
			_ = bw.Flush()
			return
		}
		if err := bw.Flush(); err != nil {
			return
		}
		c.setActive(false)
	}
}

// serveOne runs the handler for req and finishes the response. It reports
// whether the connection can carry another request.
func (c *conn) serveOne(req *http.Request, bw *bufio.Writer) (keep bool) {
	w := &response{bw: bw, req: req, contentLength: -1}
	body := &requestBody{rc: req.Body}
	if req.Body != http.NoBody {
		if expectContinue(req) {
			body.onFirstRead = func() {
				_, _ = bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
				_ = bw.Flush()
			}
		}
		req.Body = body
	}
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				c.srv.Logger.Error("handler panicked", "panic", v)
			}
			keep = false
		}
	}()
	c.srv.Handler.ServeHTTP(w, req)
	if !w.finish() || w.closeAfter || req.Close {
		return false
	}
	// Read what the handler left of the body, within reason, to keep the
	// connection; a client waiting for 100 Continue sent nothing.
	if req.Body != http.NoBody && !body.eof && !(body.onFirstRead != nil && !body.started) {
		n, err := io.CopyN(io.Discard, body, maxDrain+1)
		if n > maxDrain || (err != nil && err != io.EOF) {
			return false
		}
	}
	return !body.failed
}

// validate returns why req cannot be served, or "".
func validate(req *http.Request) string {
	switch {
	case req.ProtoMajor != 1:
		return "unsupported protocol " + req.Proto
	case req.ProtoMinor >= 1 && req.Host == "":
		return "missing required Host header"
	}
	if e := req.Header.Get("Expect"); e != "" && !expectContinue(req) {
		return "unsupported Expect header: " + e
	}
	return ""
}

func expectContinue(req *http.Request) bool {
	return req.ProtoAtLeast(1, 1) && strings.EqualFold(req.Header.Get("Expect"), "100-continue")
}

func writeError(bw *bufio.Writer, code int, msg string) {
	msg += "\n"
	fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		code, http.StatusText(code), len(msg), msg)
	_ = bw.Flush()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// headBuffered reports whether a whole request head is in br already.
func headBuffered(br *bufio.Reader) bool {
	p, _ := br.Peek(br.Buffered())
	return bytes.Contains(p, []byte("\r\n\r\n")) || bytes.Contains(p, []byte("\n\n"))
}

// bodyBuffered reports whether all of req's body is in br already (or it
// has none).
func bodyBuffered(req *http.Request, br *bufio.Reader) bool {
	return req.ContentLength == 0 || req.ContentLength > 0 && len(req.TransferEncoding) == 0 && int64(br.Buffered()) >= req.ContentLength
}

// headLimit bounds what a request head may read from the connection
// (left < 0: no bound, for bodies).
type headLimit struct {
	r    io.Reader
	left int64
}

func (l *headLimit) Read(p []byte) (int, error) {
	if l.left < 0 {
		return l.r.Read(p)
	}
	if l.left == 0 {
		return 0, ErrHeaderTooLarge
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// requestBody tracks how far the handler read the request body.
type requestBody struct {
	rc          io.ReadCloser
	onFirstRead func()
	started     bool
	eof         bool
	failed      bool // the body broke off: the connection is unusable
}

func (b *requestBody) Read(p []byte) (int, error) {
	if !b.started {
		b.started = true
		if b.onFirstRead != nil {
			b.onFirstRead()
		}
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
	} else if err != nil {
		b.failed = true
	}
	return n, err
}

func (b *requestBody) Close() error { return nil }

// peekedConn is a connection whose first bytes sit in r.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *peekedConn) Read(b []byte) (int, error) {
	if p.r != nil {
		if p.r.Buffered() > 0 {
			return p.r.Read(b)
		}
		p.r.Reset(nil)
		readers.Put(p.r)
		p.r = nil
	}
	return p.Conn.Read(b)
}

// chanListener hands connections to a net/http server.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		_ = c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "h2c" }
func (pipeAddr) String() string  { return "h2c" }
