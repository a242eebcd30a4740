package h3

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/quicvarint"
	"golang.org/x/net/http/httpguts"
)

// maxRequestHead bounds a request's HEADERS frame, as the sidecar's
// HTTP/1.1 server bounds a request head; larger ones are answered 431.
const maxRequestHead = 64 << 10

// settingMaxFieldSectionSize is SETTINGS_MAX_FIELD_SECTION_SIZE (RFC 9114 §7.2.4.1).
const settingMaxFieldSectionSize = 0x6

// Server serves HTTP/3 requests to a Handler. The goroutine quic-go's
// stream is accepted into runs the whole exchange: it reads the request,
// calls the handler and writes the response, which it buffers so that a
// small answer leaves as one write with its headers and the end of the
// stream. The request's context is the stream's: it ends when the client
// cancels the request or the connection closes.
//
// Requests are checked as RFC 9114 §4.3.1 asks (pseudo-headers, lower-case
// valid names, valid values, no connection-specific fields, one
// content-length); one that breaks a rule is answered 400 with the reason.
// Plain CONNECT (RFC 9114 §4.4) reaches the handler as net/http's HTTP/2
// server hands it over (URL.Host and RequestURI the authority; the body the
// stream's bytes from the peer); the handler answers 2xx, writes and
// flushes, and may end its side with CloseWrite while it reads on. Extended
// CONNECT (:protocol) is answered 501.
type Server struct {
	Handler http.Handler
	// TLSConfig configures TLS (certificate, client authentication); its
	// NextProtos are replaced by h3.
	TLSConfig *tls.Config
	// QUICConfig configures the connections (nil: quic-go's defaults).
	QUICConfig *quic.Config
	// ConnState, if set, is called when a connection is accepted (open)
	// and when it has closed.
	ConnState func(c *quic.Conn, open bool)
	// Logger receives handler panics and connection failures (nil:
	// slog.Default).
	Logger *slog.Logger
	// ReadHeaderTimeout bounds how long a request stream may take to
	// deliver its headers (0: no bound); past it the stream is reset
	// with H3_REQUEST_INCOMPLETE.
	ReadHeaderTimeout time.Duration

	mu    sync.Mutex
	ln    *quic.Listener
	conns map[*serverConn]struct{}
	idle  chan struct{} // made by Shutdown or Close; closed when the last connection is gone
}

// Serve accepts connections on pc until Shutdown or Close; it returns
// http.ErrServerClosed then.
func (s *Server) Serve(pc net.PacketConn) error {
	var tlsConf *tls.Config
	if s.TLSConfig != nil {
		tlsConf = s.TLSConfig.Clone()
	} else {
		tlsConf = &tls.Config{}
	}
	tlsConf.NextProtos = []string{NextProto}
	s.mu.Lock()
	if s.idle != nil {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	ln, err := quic.Listen(pc, tlsConf, s.QUICConfig)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("h3: listening on %s: %w", pc.LocalAddr(), err)
	}
	s.ln = ln
	s.mu.Unlock()
	for {
		qc, err := ln.Accept(context.Background())
		if err != nil {
			s.mu.Lock()
			down := s.idle != nil
			s.mu.Unlock()
			if down {
				return http.ErrServerClosed
			}
			return fmt.Errorf("h3: accepting a connection: %w", err)
		}
		sc := &serverConn{s: s, qc: qc, remote: qc.RemoteAddr().String()}
		tlsState := qc.ConnectionState().TLS
		sc.tls = &tlsState
		s.mu.Lock()
		if s.idle != nil {
			s.mu.Unlock()
			closeConn(qc, errNoError, "")
			continue
		}
		if s.conns == nil {
			s.conns = map[*serverConn]struct{}{}
		}
		s.conns[sc] = struct{}{}
		s.mu.Unlock()
		go sc.serve()
	}
}

// Shutdown stops accepting connections and sends every connection a
// GOAWAY, then waits for the clients to close them (an HTTP/3 client
// closes after its last request). When ctx ends first, the rest are
// closed and ctx's error returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	idle := s.beginShutdownLocked()
	conns := make([]*serverConn, 0, len(s.conns))
	for sc := range s.conns {
		conns = append(conns, sc)
	}
	s.mu.Unlock()
	for _, sc := range conns {
		sc.goAway()
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		_ = s.Close()
		return ctx.Err()
	}
}

// Close closes the listener and every connection at once; requests in
// flight fail.
func (s *Server) Close() error {
	s.mu.Lock()
	s.beginShutdownLocked()
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for sc := range conns {
		closeConn(sc.qc, errNoError, "")
	}
	s.mu.Lock()
	s.closeIdleLocked()
	s.mu.Unlock()
	return nil
}

func (s *Server) beginShutdownLocked() chan struct{} {
	if s.idle == nil {
		s.idle = make(chan struct{})
		if s.ln != nil {
			_ = s.ln.Close()
		}
	}
	if len(s.conns) == 0 {
		s.closeIdleLocked()
	}
	return s.idle
}

func (s *Server) closeIdleLocked() {
	select {
	case <-s.idle:
	default:
		close(s.idle)
	}
}

func (s *Server) forget(sc *serverConn) {
	s.mu.Lock()
	delete(s.conns, sc)
	if s.idle != nil && len(s.conns) == 0 {
		s.closeIdleLocked()
	}
	s.mu.Unlock()
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// serverConn is one accepted connection.
type serverConn struct {
	s      *Server
	qc     *quic.Conn
	remote string
	tls    *tls.ConnectionState // shared by the connection's requests

	mu       sync.Mutex
	ctrl     *quic.SendStream
	next     quic.StreamID // the first stream not accepted yet
	draining bool          // GOAWAY sent: new streams are refused
}

func (sc *serverConn) serve() {
	s := sc.s
	if s.ConnState != nil {
		s.ConnState(sc.qc, true)
		defer s.ConnState(sc.qc, false)
	}
	defer s.forget(sc)
	ctrl, err := openControl(sc.qc, settingMaxFieldSectionSize, maxRequestHead)
	if err != nil {
		closeConn(sc.qc, errInternal, "")
		return
	}
	sc.mu.Lock()
	sc.ctrl = ctrl
	draining, next := sc.draining, sc.next
	sc.mu.Unlock()
	if draining { // Shutdown came first
		sendGoAway(ctrl, next)
	}
	go acceptUniStreams(sc.qc, true, nil)
	for {
		str, err := sc.qc.AcceptStream(context.Background())
		if err != nil {
			return // the connection is gone
		}
		sc.mu.Lock()
		if sc.draining {
			sc.mu.Unlock()
			// Past the GOAWAY's stream ID: not processed, the client may
			// retry it elsewhere.
			str.CancelRead(quic.StreamErrorCode(errRequestRejected))
			str.CancelWrite(quic.StreamErrorCode(errRequestRejected))
			continue
		}
		sc.next = str.StreamID() + 4
		sc.mu.Unlock()
		go sc.handle(str)
	}
}

// goAway tells the client no stream past those accepted will be
// processed. The client closes the connection after its last request
// (closing it here could lose answers still on their way).
func (sc *serverConn) goAway() {
	sc.mu.Lock()
	if sc.draining {
		sc.mu.Unlock()
		return
	}
	sc.draining = true
	ctrl, next := sc.ctrl, sc.next
	sc.mu.Unlock()
	if ctrl != nil { // else serve sends it once the control stream is open
		sendGoAway(ctrl, next)
	}
}

func sendGoAway(ctrl *quic.SendStream, next quic.StreamID) {
	b := appendFrameHeader(nil, frameGoAway, uint64(quicvarint.Len(uint64(next))))
	b = quicvarint.Append(b, uint64(next))
	// A write may wait for flow-control credit; it returns when the
	// connection closes.
	go func() { _, _ = ctrl.Write(b) }()
}

// exchange is one request and its response: allocated once per request.
type exchange struct {
	er   eofReader
	body body
	w    responseWriter
}

// eofReader notes that the stream's end has been read, so that a request
// whose HEADERS ended the stream is known to have no body without waiting
// for another read.
type eofReader struct {
	r   io.Reader
	eof bool
}

func (e *eofReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		e.eof = true
	}
	return n, err
}

// requestError is a request the server answers itself.
type requestError struct {
	code int
	msg  string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &requestError{code: http.StatusBadRequest, msg: "h3: malformed request: " + fmt.Sprintf(format, args...)}
}

func (sc *serverConn) handle(str *quic.Stream) {
	x := &exchange{}
	x.er.r = str
	br := newReader(&x.er)
	if t := sc.s.ReadHeaderTimeout; t > 0 {
		_ = str.SetReadDeadline(time.Now().Add(t))
	}
	req, err := sc.readRequest(str, br, x)
	if err == nil && sc.s.ReadHeaderTimeout > 0 {
		_ = str.SetReadDeadline(time.Time{})
	}
	if err != nil {
		putReader(br)
		var re *requestError
		if !errors.As(err, &re) {
			// The stream broke (reset, connection gone): nothing to answer.
			str.CancelRead(quic.StreamErrorCode(errRequestIncomplete))
			str.CancelWrite(quic.StreamErrorCode(errRequestIncomplete))
			return
		}
		str.CancelRead(quic.StreamErrorCode(errNoError))
		x.w.init(str, nil)
		x.w.localReply(re.code, re.msg)
		return
	}
	x.w.init(str, req)
	defer func() {
		_ = req.Body.Close()
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				buf := make([]byte, 16<<10)
				buf = buf[:runtime.Stack(buf, false)]
				sc.s.logger().Error("panic serving an HTTP/3 request", "peer", sc.remote, "path", req.URL.Path, "panic", v, "stack", string(buf))
			}
			x.w.abort()
		}
	}()
	sc.s.Handler.ServeHTTP(&x.w, req)
	x.w.finish()
}

// readRequest reads frames up to the request's HEADERS and builds the
// request; its body reads the rest of the stream.
func (sc *serverConn) readRequest(str *quic.Stream, br *bufio.Reader, x *exchange) (*http.Request, error) {
	var block []byte
	for block == nil {
		typ, n, err := readFrameHeader(br)
		if err != nil {
			return nil, err
		}
		switch typ {
		case frameHeaders:
			if n > maxRequestHead {
				return nil, &requestError{code: http.StatusRequestHeaderFieldsTooLarge,
					msg: fmt.Sprintf("h3: request headers of %d bytes (limit %d)", n, maxRequestHead)}
			}
			if block, err = readHeaderBlock(br, n); err != nil {
				return nil, err
			}
		case frameData:
			return nil, badRequest("DATA before HEADERS")
		case frameSettings, frameGoAway, 0x3, 0x5, 0xd:
			return nil, badRequest("frame type %#x on a request stream", typ)
		default: // unknown and reserved frame types are ignored
			if err := skip(br, n); err != nil {
				return nil, err
			}
		}
	}
	var method, scheme, authority, path, protocol string
	h := headerSink{h: http.Header{}}
	err := decodeFields(block, func(name, value string, pseudo bool) error {
		if !httpguts.ValidHeaderFieldValue(value) {
			return badRequest("invalid value for %q", name)
		}
		if pseudo {
			var dst *string
			switch name {
			case ":method":
				dst = &method
			case ":scheme":
				dst = &scheme
			case ":authority":
				dst = &authority
			case ":path":
				dst = &path
			case ":protocol":
				dst = &protocol
			default:
				return badRequest("pseudo-header %q", name)
			}
			if *dst != "" {
				return badRequest("pseudo-header %q twice", name)
			}
			*dst = value
			return nil
		}
		if !httpguts.ValidHeaderFieldName(name) {
			return badRequest("invalid header name %q", name)
		}
		switch {
		case connectionSpecific(name):
			return badRequest("connection-specific header %q (RFC 9114 §4.2)", name)
		case name == "te" && value != "trailers":
			return badRequest("te: %q (only \"trailers\" is allowed)", value)
		}
		h.add(name, value)
		return nil
	})
	if err != nil {
		var re *requestError
		if errors.As(err, &re) {
			return nil, err
		}
		return nil, badRequest("%v", err)
	}
	connect := method == http.MethodConnect
	switch {
	case protocol != "":
		return nil, &requestError{code: http.StatusNotImplemented, msg: "h3: extended CONNECT (:protocol) is not supported"}
	case connect && (scheme != "" || path != ""):
		return nil, badRequest("CONNECT with :scheme or :path (RFC 9114 §4.4: only :authority)")
	case connect && authority == "":
		return nil, badRequest("CONNECT without :authority")
	case !connect && (method == "" || scheme == "" || path == ""):
		return nil, badRequest("missing :method, :scheme or :path")
	}
	if strings.IndexFunc(method, notToken) >= 0 {
		return nil, badRequest("method %q", method)
	}
	hdr := h.h
	hosts := hdr["Host"]
	switch {
	case len(hosts) > 1:
		return nil, badRequest("%d host headers", len(hosts))
	case len(hosts) == 1 && authority != "" && hosts[0] != authority:
		return nil, badRequest(":authority %q and host %q differ", authority, hosts[0])
	case authority == "" && len(hosts) == 1:
		authority = hosts[0]
	}
	delete(hdr, "Host") // it is req.Host (as net/http)
	var u *url.URL
	if connect {
		// As net/http's HTTP/2 server: the authority is the URL's host and
		// the request URI.
		u, path = &url.URL{Host: authority}, authority
	} else if u, err = url.ParseRequestURI(path); err != nil {
		return nil, badRequest(":path %q: %v", path, err)
	}
	size := int64(-1)
	if cl := hdr["Content-Length"]; len(cl) > 0 {
		if size, err = contentLength(cl); err != nil {
			return nil, badRequest("%v", err)
		}
	}
	r := http.Request{
		Method:        method,
		URL:           u,
		Proto:         "HTTP/3.0",
		ProtoMajor:    3,
		Header:        hdr,
		Host:          authority,
		RemoteAddr:    sc.remote,
		RequestURI:    path,
		TLS:           sc.tls,
		ContentLength: size,
	}
	if x.er.eof && br.Buffered() == 0 {
		// The stream ended with the headers: no body.
		if size > 0 {
			return nil, badRequest("content-length %d and no body", size)
		}
		putReader(br)
		r.ContentLength, r.Body = 0, http.NoBody
	} else {
		x.body = body{str: str, br: br, of: "request", contentLength: size}
		r.Body = &x.body
	}
	req := r.WithContext(str.Context())
	if r.Body != http.NoBody {
		x.body.trailer = &req.Trailer
	}
	return req, nil
}

func notToken(r rune) bool { return !httpguts.IsTokenRune(r) }

// headerSink collects decoded fields under their canonical names, with one
// backing array for single values (as net/textproto does).
type headerSink struct {
	h      http.Header
	values []string
}

func (s *headerSink) add(name, value string) {
	k := canonicalKey(name)
	if vv := s.h[k]; vv != nil {
		s.h[k] = append(vv, value)
		return
	}
	if len(s.values) == 0 {
		s.values = make([]string, 8)
	}
	s.values[0] = value
	s.h[k], s.values = s.values[:1:1], s.values[1:]
}
