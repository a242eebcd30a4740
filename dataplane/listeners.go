package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/micromesh/micromesh/dataplane/config"
	"github.com/micromesh/micromesh/dataplane/h1"
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
type listeners struct {
	src   *identity.Source
	proxy *proxy.Proxy
	log   *slog.Logger
	conns *prometheus.GaugeVec

	mu  sync.Mutex
	cur [3]*served
}

type served struct {
	addr string
	tcp  net.Listener
	udp  net.PacketConn
	http *http.Server
	h1   *h1.Server
	h3   *http3.Server
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
	release := func() {
		for _, f := range fresh {
			if f != nil {
				f.closeNow()
			}
		}
	}
	for k, addr := range want {
		if addr == "" || (l.cur[k] != nil && l.cur[k].addr == addr) {
			continue
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
	return func(ok bool) {
		defer l.mu.Unlock()
		if !ok {
			release()
			return
		}
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
		f.h3 = &http3.Server{
			Handler:   l.proxy.Inbound(),
			TLSConfig: http3.ConfigureTLSConfig(l.src.ServerTLSConfig(identity.AuthorizeAny())),
			QUICConfig: &quic.Config{
				MaxIdleTimeout:     2 * time.Minute,
				KeepAlivePeriod:    15 * time.Second,
				MaxIncomingStreams: 4096,
			},
			ConnContext: func(ctx context.Context, c *quic.Conn) context.Context {
				g := l.conns.WithLabelValues("inbound", "quic")
				g.Inc()
				go func() {
					<-c.Context().Done()
					g.Dec()
				}()
				return ctx
			},
		}
		go func() { _ = f.h3.Serve(f.udp) }()
	}
}

func (l *listeners) addr(k listenerKind) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.cur[k]
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
		if err := f.h3.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			_ = f.h3.Close()
		}
		_ = f.h3.Close()
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
