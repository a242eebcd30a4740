package h3

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"

	"github.com/quic-go/quic-go"
)

// NextProto is the ALPN protocol of HTTP/3.
const NextProto = "h3"

// Transport is an http.RoundTripper speaking HTTP/3 to https URLs. It keeps
// one QUIC connection per address and multiplexes requests on it as
// streams.
type Transport struct {
	// TLSClientConfig configures TLS (certificates, peer verification); its
	// NextProtos are replaced by h3.
	TLSClientConfig *tls.Config
	// QUICConfig configures the QUIC connections (nil: quic-go's defaults).
	QUICConfig *quic.Config
	// Logger receives what goes wrong on connections (nil: slog.Default).
	Logger *slog.Logger

	mu      sync.Mutex
	conns   map[string]*clientConn
	dialing map[string]*dialCall
	closed  bool
}

type dialCall struct {
	done chan struct{}
	cc   *clientConn
	err  error
}

var errClosed = errors.New("h3: transport closed")

// RoundTrip sends req and returns the response; the body streams from the
// peer as the caller reads it.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil || req.URL.Scheme != "https" || req.URL.Host == "" {
		return nil, fmt.Errorf("h3: cannot send to %v: an https URL with a host is required", req.URL)
	}
	if req.Method == http.MethodConnect && req.Header.Get(":protocol") != "" {
		return nil, errors.New("h3: extended CONNECT is not supported")
	}
	hasBody := req.Body != nil && req.Body != http.NoBody
	w := writeBufs.Get().(*writeBuf)
	defer writeBufs.Put(w)
	head, err := appendRequestHeaders(w.b[:0], req, hasBody)
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, err
	}
	w.b = head
	for try := 0; ; try++ {
		cc, err := t.conn(req.Context(), req.URL.Host)
		if err != nil {
			if req.Body != nil {
				_ = req.Body.Close()
			}
			return nil, err
		}
		resp, err := cc.roundTrip(req, w, hasBody)
		if err == nil {
			return resp, nil
		}
		// A connection that went away before the stream opened sent nothing:
		// forget it and try a fresh one once.
		if errors.Is(err, errConnGone) {
			t.forget(req.URL.Host, cc)
			if try == 0 {
				continue
			}
			if req.Body != nil {
				_ = req.Body.Close()
			}
		}
		return nil, err
	}
}

// ConnStats returns the transport statistics of the open connection to
// addr (RTT, congestion window, packets and bytes sent, received and
// lost), and false if there is none.
func (t *Transport) ConnStats(addr string) (quic.ConnectionStats, bool) {
	t.mu.Lock()
	cc := t.conns[addr]
	t.mu.Unlock()
	if cc == nil || cc.qc.Context().Err() != nil {
		return quic.ConnectionStats{}, false
	}
	return cc.qc.ConnectionStats(), true
}

// conn returns the connection to addr, dialling it if there is none; one
// dial per address at a time.
func (t *Transport) conn(ctx context.Context, addr string) (*clientConn, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, errClosed
	}
	if cc := t.conns[addr]; cc != nil {
		if cc.usable() {
			t.mu.Unlock()
			return cc, nil
		}
		delete(t.conns, addr)
	}
	call := t.dialing[addr]
	if call == nil {
		call = &dialCall{done: make(chan struct{})}
		if t.dialing == nil {
			t.dialing = map[string]*dialCall{}
		}
		t.dialing[addr] = call
		go t.dial(addr, call)
	}
	t.mu.Unlock()
	select {
	case <-call.done:
		return call.cc, call.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// dial opens a connection for every caller waiting on call. It does not
// use any one caller's context: the others still want the connection.
func (t *Transport) dial(addr string, call *dialCall) {
	ctx := context.Background()
	var cancel context.CancelFunc = func() {}
	if t.QUICConfig != nil && t.QUICConfig.HandshakeIdleTimeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, t.QUICConfig.HandshakeIdleTimeout)
	}
	defer cancel()
	var tlsConf *tls.Config
	if t.TLSClientConfig != nil {
		tlsConf = t.TLSClientConfig.Clone()
	} else {
		tlsConf = &tls.Config{}
	}
	tlsConf.NextProtos = []string{NextProto}
	qc, err := quic.DialAddr(ctx, addr, tlsConf, t.QUICConfig)
	var cc *clientConn
	if err == nil {
		cc, err = newClientConn(qc, t.logger().With("peer", addr))
	}
	if err != nil {
		err = fmt.Errorf("%w to %s: %w", ErrConnect, addr, err)
	}
	t.mu.Lock()
	delete(t.dialing, addr)
	switch {
	case err != nil:
	case t.closed:
		cc.close(errNoError, "")
		cc, err = nil, errClosed
	default:
		if t.conns == nil {
			t.conns = map[string]*clientConn{}
		}
		t.conns[addr] = cc
	}
	t.mu.Unlock()
	call.cc, call.err = cc, err
	close(call.done)
}

func (t *Transport) forget(addr string, cc *clientConn) {
	t.mu.Lock()
	if t.conns[addr] == cc {
		delete(t.conns, addr)
	}
	t.mu.Unlock()
}

func (t *Transport) logger() *slog.Logger {
	if t.Logger != nil {
		return t.Logger
	}
	return slog.Default()
}

// Close closes every connection; requests in flight fail.
func (t *Transport) Close() error {
	t.mu.Lock()
	t.closed = true
	conns := t.conns
	t.conns = nil
	t.mu.Unlock()
	for _, cc := range conns {
		cc.close(errNoError, "")
	}
	return nil
}

// clientConn is one QUIC connection with its HTTP/3 control state.
type clientConn struct {
	qc  *quic.Conn
	log *slog.Logger

	mu     sync.Mutex
	goAway bool // the peer sent GOAWAY: no new requests
	active int  // requests in flight
}

// begin counts a request in; false if the connection takes no more.
func (cc *clientConn) begin() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.goAway {
		return false
	}
	cc.active++
	return true
}

// end counts a request out. After the peer's GOAWAY the connection closes
// with its last request, as the peer (draining) waits for.
func (cc *clientConn) end() {
	cc.mu.Lock()
	cc.active--
	last := cc.goAway && cc.active == 0
	cc.mu.Unlock()
	if last {
		cc.close(errNoError, "")
	}
}

var errConnGone = errors.New("h3: connection closed")

// ErrConnect wraps a failure to open a connection (no request was sent on
// it).
var ErrConnect = errors.New("h3: connecting")

func newClientConn(qc *quic.Conn, log *slog.Logger) (*clientConn, error) {
	cc := &clientConn{qc: qc, log: log}
	if _, err := openControl(qc); err != nil {
		cc.close(errInternal, "")
		return nil, err
	}
	go acceptUniStreams(qc, false, cc.onGoAway)
	return cc, nil
}

func (cc *clientConn) usable() bool {
	if cc.qc.Context().Err() != nil {
		return false
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return !cc.goAway
}

func (cc *clientConn) close(code uint64, msg string) { closeConn(cc.qc, code, msg) }

// onGoAway records the server's GOAWAY: no new requests on this
// connection, which closes with its last one.
func (cc *clientConn) onGoAway() {
	cc.mu.Lock()
	cc.goAway = true
	idle := cc.active == 0
	cc.mu.Unlock()
	cc.log.Debug("peer sent GOAWAY")
	if idle {
		cc.close(errNoError, "")
	}
}
