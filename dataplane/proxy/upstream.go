package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/micromesh/micromesh/dataplane/config"
	"github.com/micromesh/micromesh/dataplane/h1"
	"github.com/micromesh/micromesh/dataplane/h3"
	"github.com/micromesh/micromesh/identity"
)

// upstream is a cluster with its live state: transport (connection pools),
// balancer, circuit-breaker counters.
type upstream struct {
	cluster *config.Cluster
	rt      http.RoundTripper
	close   func()
	scheme  string
	lb      *balancer
	active  atomic.Int64 // requests in flight (max_requests)
	retries atomic.Int64 // retries in flight (max_retries)
}

// sameTransport reports whether a and b can share connections.
func sameTransport(a, b *config.Cluster) bool {
	same := a.Transport == b.Transport && a.SAN == b.SAN && a.HTTP2 == b.HTTP2 && a.ConnectTimeout == b.ConnectTimeout
	if same && a.Transport == config.TransportExternal {
		x, y := a.External, b.External
		same = x.ServerName == y.ServerName && bytes.Equal(x.RootsPEM, y.RootsPEM) && x.MinVersion == y.MinVersion && x.MaxVersion == y.MaxVersion
	}
	if same && (a.Transport == config.TransportPlain && !a.HTTP2 || a.Transport == config.TransportExternal) {
		// The HTTP/1.1 pool enforces the connection limits itself.
		same = a.Limits.MaxConnections == b.Limits.MaxConnections && a.Limits.MaxPendingRequests == b.Limits.MaxPendingRequests
	}
	return same
}

// newUpstream builds the state of cluster c, keeping prev's connections
// and endpoint state when its transport is the same.
func (p *Proxy) newUpstream(c *config.Cluster, prev *upstream) (*upstream, error) {
	u := &upstream{cluster: c}
	var prevLB *balancer
	if prev != nil {
		prevLB = prev.lb
	}
	u.lb = newBalancer(c, prevLB)
	ejections := p.m.ejections.WithLabelValues(c.Name)
	u.lb.onEject = ejections.Inc
	if prev != nil && prev.rt != nil && sameTransport(prev.cluster, c) {
		u.rt, u.close, u.scheme = prev.rt, prev.close, prev.scheme
		return u, nil
	}
	switch c.Transport {
	case config.TransportQUIC, config.TransportTLS:
		id, err := identity.ParseID(c.SAN)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: %w", c.Name, err)
		}
		tlsConf := p.creds.ClientTLSConfig(identity.AuthorizeID(id))
		u.scheme = "https"
		if c.Transport == config.TransportQUIC {
			t := &h3.Transport{
				TLSClientConfig: tlsConf,
				QUICConfig: &quic.Config{
					HandshakeIdleTimeout: c.ConnectTimeout,
					MaxIdleTimeout:       2 * time.Minute,
					KeepAlivePeriod:      15 * time.Second,
					Tracer:               p.qlog,
				},
				Logger: p.log.With("cluster", c.Name),
			}
			u.rt, u.close = t, func() { _ = t.Close() }
			return u, nil
		}
		h2Conf := tlsConf.Clone()
		h2Conf.NextProtos = []string{"h2"}
		u.rt, u.close = h2Transport(c.ConnectTimeout, h2Conf)
		return u, nil
	case config.TransportExternal:
		// A service outside the mesh: HTTP/1.1 over TLS, the server checked
		// by its name; no client certificate (the mesh's identity stays
		// in the mesh).
		x := c.External
		conf := &tls.Config{ServerName: x.ServerName, RootCAs: x.Roots, MinVersion: x.MinVersion, MaxVersion: x.MaxVersion, NextProtos: []string{"http/1.1"}}
		u.scheme = "https"
		if c.HTTP2 { // gRPC
			conf.NextProtos = []string{"h2"}
			u.rt, u.close = h2Transport(c.ConnectTimeout, conf)
			return u, nil
		}
		t := &h1.Transport{
			DialContext:    tlsDialer(c.ConnectTimeout, conf),
			MaxIdlePerHost: 256,
			IdleTimeout:    90 * time.Second,
			MaxConns:       int(c.Limits.MaxConnections),
			MaxPending:     int(c.Limits.MaxPendingRequests),
		}
		u.rt, u.close = t, t.CloseIdleConnections
		return u, nil
	case config.TransportPlain:
		u.scheme = "http"
		if !c.HTTP2 {
			// The app over loopback: HTTP/1.1, one goroutine per exchange.
			t := &h1.Transport{
				DialContext:    dialer(c.ConnectTimeout),
				MaxIdlePerHost: 1024,
				IdleTimeout:    90 * time.Second,
				MaxConns:       int(c.Limits.MaxConnections),
				MaxPending:     int(c.Limits.MaxPendingRequests),
			}
			u.rt, u.close = t, t.CloseIdleConnections
			return u, nil
		}
		t := &http.Transport{
			DialContext:         dialer(c.ConnectTimeout),
			MaxIdleConns:        4096,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
			Protocols:           new(http.Protocols),
		}
		t.Protocols.SetUnencryptedHTTP2(true)
		u.rt, u.close = t, t.CloseIdleConnections
		return u, nil
	}
	return nil, fmt.Errorf("cluster %s: transport %q is not supported", c.Name, c.Transport)
}

// h2Transport is HTTP/2 over TLS with conf (its NextProtos h2), pinging
// idle connections.
func h2Transport(timeout time.Duration, conf *tls.Config) (http.RoundTripper, func()) {
	t := &http.Transport{
		DialTLSContext:      tlsDialer(timeout, conf),
		DisableCompression:  true,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     2 * time.Minute,
		Protocols:           new(http.Protocols),
		HTTP2:               &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 15 * time.Second},
	}
	t.Protocols.SetHTTP2(true)
	return t, t.CloseIdleConnections
}

// connectError marks a failure to connect to an upstream: the dial or the
// TLS handshake.
type connectError struct{ err error }

func (e *connectError) Error() string { return e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

func connectFailure(err error) bool {
	var ce *connectError
	return errors.As(err, &ce) || errors.Is(err, h3.ErrConnect)
}

// dialer opens TCP connections for the upstream transports, marking their
// failures as connect failures.
func dialer(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, &connectError{err}
		}
		return c, nil
	}
}

// tlsDialer opens TLS connections (dial and handshake, bounded by timeout),
// marking their failures as connect failures.
func tlsDialer(timeout time.Duration, conf *tls.Config) func(ctx context.Context, network, addr string) (net.Conn, error) {
	dial := dialer(timeout)
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		hctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		tc := tls.Client(c, conf)
		if err := tc.HandshakeContext(hctx); err != nil {
			_ = c.Close()
			return nil, &connectError{err}
		}
		return tc, nil
	}
}
