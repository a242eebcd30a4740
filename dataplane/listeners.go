package dataplane

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/micromesh/micromesh/dataplane/config"
	"github.com/micromesh/micromesh/dataplane/h1"
	"github.com/micromesh/micromesh/dataplane/h3"
	"github.com/micromesh/micromesh/dataplane/proxy"
	"github.com/micromesh/micromesh/identity"
)

type listenerKind int

const (
	outboundL listenerKind = iota // loopback, plaintext: HTTP/1.1 and h2c from the app
	inboundL                      // TCP + TLS: HTTP/2 and HTTP/1.1 from peers
	quicL                         // UDP + QUIC: HTTP/3 from peers
)

// listeners binds and serves what LDS names. A new config is bound before
// it is applied (a port that cannot be bound refuses it), and a replaced
// listener is shut down gracefully after the swap.
//
// The sidecar's own ports (its outbound address and inbound port) are
// bound at start, before the control plane has said anything (reserve):
// a taken port fails the start with the reason instead of a refused
// config the control plane would not send again, nothing can take a port
// between registration and the first config, and "127.0.0.1:0" asks the
// kernel for a free one. LDS then adopts the reserved sockets.
type listeners struct {
	src   *identity.Source
	proxy *proxy.Proxy
	log   *slog.Logger
	conns *prometheus.GaugeVec
	qlog  proxy.QUICTracer // nil: no qlog traces

	mu       sync.Mutex
	cur      [3]*served
	reserved [3]*served // bound at start, not yet adopted by a config
	// tunnels are the tcp_proxy listeners in force, by address;
	// reservedTunnels the upstreams' addresses bound at start.
	tunnels         map[string]*tunnelListener
	reservedTunnels map[string]net.Listener
}

type served struct {
	addr string
	tcp  net.Listener
	udp  net.PacketConn
	http *http.Server
	h1   *h1.Server
	h3   *h3.Server
}

func wanted(cfg *config.Config) [3]string {
	var w [3]string
	if cfg.Outbound != nil {
		w[outboundL] = cfg.Outbound.Address
	}
	if cfg.Inbound != nil {
		w[inboundL] = cfg.Inbound.Address
	}
	if cfg.InboundQUIC != nil {
		w[quicL] = cfg.InboundQUIC.Address
	}
	return w
}

// prepare binds the listeners cfg adds or moves. commit(true) starts them
// and retires the ones they replace; commit(false) releases them.
func (l *listeners) prepare(cfg *config.Config) (commit func(bool), err error) {
	l.mu.Lock()
	want := wanted(cfg)
	var fresh [3]*served
	var adopted [3]bool
	release := func() {
		for k, f := range fresh {
			switch {
			case f == nil:
			case adopted[k]:
				l.reserved[k] = f // still ours, for the next config
			default:
				f.closeNow()
			}
		}
	}
	for k, addr := range want {
		if addr == "" || (l.cur[k] != nil && l.cur[k].addr == addr) {
			continue
		}
		if r := l.reserved[k]; r != nil {
			if r.addr == addr {
				fresh[k], adopted[k], l.reserved[k] = r, true, nil
				continue
			}
			if samePort(r.addr, addr) {
				// Our port on another host address: let it go and bind
				// what the config says.
				r.closeNow()
				l.reserved[k] = nil
			}
		}
		f := &served{addr: addr}
		if listenerKind(k) == quicL {
			f.udp, err = net.ListenPacket("udp", addr)
		} else {
			f.tcp, err = net.Listen("tcp", addr)
		}
		if err != nil {
			release()
			l.mu.Unlock()
			return nil, fmt.Errorf("listener %s: %w", addr, err)
		}
		fresh[k] = f
	}
	commitTunnels, releaseTunnels, err := l.prepareTunnels(cfg)
	if err != nil {
		release()
		l.mu.Unlock()
		return nil, err
	}
	return func(ok bool) {
		defer l.mu.Unlock()
		if !ok {
			release()
			releaseTunnels()
			return
		}
		commitTunnels()
		for k := range want {
			old := l.cur[k]
			switch {
			case fresh[k] != nil:
				l.serve(listenerKind(k), cfg, fresh[k])
				l.cur[k] = fresh[k]
			case want[k] == "":
				l.cur[k] = nil
			default:
				old = nil // unchanged
			}
			if old != nil {
				go old.shutdown(5 * time.Second)
			}
		}
	}, nil
}

// reserve binds the sidecar's own ports: outbound (TCP on loopback; port 0
// picks one) and, with pickInbound or a non-zero inboundPort, the inbound
// port (TCP and UDP on all addresses, as the control plane's inbound
// listeners name them; pickInbound finds one free for both). It returns
// the outbound address and inbound port bound.
func (l *listeners) reserve(outbound string, inboundPort uint16, pickInbound bool) (string, uint16, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fail := func(err error) (string, uint16, error) {
		l.closeReservedLocked()
		return "", 0, err
	}
	if outbound != "" {
		ln, err := net.Listen("tcp", outbound)
		if err != nil {
			return fail(fmt.Errorf("outbound %s: %w", outbound, err))
		}
		host, _, _ := net.SplitHostPort(outbound)
		outbound = net.JoinHostPort(host, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
		l.reserved[outboundL] = &served{addr: outbound, tcp: ln}
	}
	if inboundPort == 0 && !pickInbound {
		return outbound, 0, nil
	}
	for attempt := 1; ; attempt++ {
		addr := net.JoinHostPort("0.0.0.0", strconv.Itoa(int(inboundPort)))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fail(fmt.Errorf("inbound port %d (TCP, for TLS): %w", inboundPort, err))
		}
		port := ln.Addr().(*net.TCPAddr).Port
		addr = net.JoinHostPort("0.0.0.0", strconv.Itoa(port))
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			_ = ln.Close()
			if inboundPort == 0 && attempt < 20 {
				continue // free for TCP, taken for UDP: pick again
			}
			return fail(fmt.Errorf("inbound port %d (UDP, for QUIC): %w", port, err))
		}
		l.reserved[inboundL] = &served{addr: addr, tcp: ln}
		l.reserved[quicL] = &served{addr: addr, udp: pc}
		return outbound, uint16(port), nil
	}
}

func (l *listeners) closeReservedLocked() {
	for k, r := range l.reserved {
		if r != nil {
			r.closeNow()
			l.reserved[k] = nil
		}
	}
	for addr, ln := range l.reservedTunnels {
		_ = ln.Close()
		delete(l.reservedTunnels, addr)
	}
}

// maxStreams is QUIC's largest stream limit (2^60): a peer never runs out,
// so no MAX_STREAMS frame is ever sent.
const maxStreams = 1 << 60

func samePort(a, b string) bool {
	_, pa, errA := net.SplitHostPort(a)
	_, pb, errB := net.SplitHostPort(b)
	return errA == nil && errB == nil && pa == pb
}

func (l *listeners) serve(k listenerKind, cfg *config.Config, f *served) {
	errLog := log.New(slogWriter{l.log}, "", 0)
	switch k {
	case outboundL:
		// HTTP/1.1 in one goroutine per exchange (package h1); h2c (gRPC)
		// handed to net/http.
		count := countConns(l.conns.WithLabelValues("outbound", "plain"))
		h2c := &http.Server{Handler: l.proxy.Outbound(), Protocols: new(http.Protocols), ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 5 * time.Minute, ErrorLog: errLog,
			ConnState: count}
		h2c.Protocols.SetUnencryptedHTTP2(true)
		f.h1 = &h1.Server{Handler: l.proxy.Outbound(), H2: h2c, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 5 * time.Minute, Logger: l.log, ConnState: count}
		go func() { _ = f.h1.Serve(f.tcp) }()
	case inboundL:
		tlsConf := l.src.ServerTLSConfig(identity.AuthorizeAny())
		tlsConf.NextProtos = cfg.Inbound.ALPN
		f.http = &http.Server{Handler: l.proxy.Inbound(), TLSConfig: tlsConf, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 5 * time.Minute, ErrorLog: errLog,
			ConnState: countConns(l.conns.WithLabelValues("inbound", "tls"))}
		go func() { _ = f.http.ServeTLS(f.tcp, "", "") }()
	case quicL:
		// HTTP/3 in one goroutine per request (package h3).
		g := l.conns.WithLabelValues("inbound", "quic")
		f.h3 = &h3.Server{
			Handler:           l.proxy.Inbound(),
			TLSConfig:         l.src.ServerTLSConfig(identity.AuthorizeAny()),
			Logger:            l.log,
			ReadHeaderTimeout: 30 * time.Second, // as the HTTP/1.1 and HTTP/2 listeners
			QUICConfig: &quic.Config{
				MaxIdleTimeout:  2 * time.Minute,
				KeepAlivePeriod: 15 * time.Second,
				// No per-connection stream limit: quic-go grants each
				// closed stream back with a MAX_STREAMS frame of its own,
				// one more packet per request (and the peer's ACK of it);
				// with the limit at QUIC's maximum it never needs to.
				// Requests in flight are bounded by the app cluster's
				// circuit breaker (max_requests); a peer is an
				// authenticated mesh workload, and could open more
				// connections under any per-connection limit. Envoy's
				// HTTP/2 default is unbounded too.
				MaxIncomingStreams: maxStreams,
				Tracer:             l.qlog,
			},
			ConnState: func(_ *quic.Conn, open bool) {
				if open {
					g.Inc()
				} else {
					g.Dec()
				}
			},
		}
		go func() { _ = f.h3.Serve(f.udp) }()
	}
}

func (l *listeners) addr(k listenerKind) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.cur[k]
	if f == nil {
		f = l.reserved[k]
	}
	switch {
	case f == nil:
		return ""
	case f.tcp != nil:
		return f.tcp.Addr().String()
	default:
		return f.udp.LocalAddr().String()
	}
}

// shutdown stops every listener, giving requests in flight drain.
func (l *listeners) shutdown(drain time.Duration) {
	l.mu.Lock()
	cur := l.cur
	l.cur = [3]*served{}
	tunnels := l.tunnels
	l.tunnels = nil
	l.closeReservedLocked()
	l.mu.Unlock()
	var wg sync.WaitGroup
	for _, f := range cur {
		if f != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f.shutdown(drain)
			}()
		}
	}
	for _, t := range tunnels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.shutdown(drain)
		}()
	}
	wg.Wait()
}

func (f *served) shutdown(drain time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if f.http != nil {
		if err := f.http.Shutdown(ctx); err != nil {
			_ = f.http.Close()
		}
	}
	if f.h1 != nil {
		if err := f.h1.Shutdown(ctx); err != nil {
			_ = f.h1.Close()
		}
	}
	if f.h3 != nil {
		if err := f.h3.Shutdown(ctx); err != nil {
			_ = f.h3.Close()
		}
	}
	f.closeNow()
}

func (f *served) closeNow() {
	if f.tcp != nil {
		_ = f.tcp.Close()
	}
	if f.udp != nil {
		_ = f.udp.Close()
	}
}

// countConns keeps g at the number of open connections of a server.
func countConns(g prometheus.Gauge) func(net.Conn, http.ConnState) {
	return func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			g.Inc()
		case http.StateClosed, http.StateHijacked:
			g.Dec()
		}
	}
}

// slogWriter sends net/http's error log (TLS handshake failures: plaintext
// or unauthenticated peers) to slog at debug level.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug(strings.TrimSpace(string(p)))
	return len(p), nil
}
