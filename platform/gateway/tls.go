package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// serverTLS is the gateway's TLS for clients from outside: TLS 1.2 at
// least (public clients), Go's default cipher suites and curves, the
// certificate getCert gives now (the operator's files', or the ACME CA's).
func serverTLS(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: getCert}
}

// http3Server serves the gateway's handler over HTTP/3 on the UDP port of
// the same number as its TCP one.
type http3Server struct {
	srv    *http3.Server
	conn   net.PacketConn
	altSvc string // the Alt-Svc value HTTPS answers carry
	served chan error
	log    *slog.Logger
}

// listenHTTP3 binds UDP at addr (the gateway's TCP address, its port
// chosen) and serves h on it.
func listenHTTP3(addr string, h http.Handler, tlsConf *tls.Config, log *slog.Logger) (*http3Server, error) {
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("the API gateway's HTTP/3 (UDP) at %s: %w (the TCP port is the gateway's; HTTP/3 takes the UDP port of the same number)", addr, err)
	}
	_, port, _ := net.SplitHostPort(addr)
	s := &http3Server{
		conn: conn, altSvc: fmt.Sprintf(`h3=":%s"; ma=86400`, port), served: make(chan error, 1), log: log,
		srv: &http3.Server{
			Handler:        h,
			TLSConfig:      tlsConf,
			MaxHeaderBytes: maxHeaderBytes,
			IdleTimeout:    2 * time.Minute,
			// A config of our own keeps 0-RTT off (http3.Server allows it
			// when given none): a replayed early request would reach a
			// service twice.
			QUICConfig: &quic.Config{MaxIdleTimeout: 2 * time.Minute},
		},
	}
	go func() { s.served <- s.srv.Serve(conn) }()
	return s, nil
}

// advertised tells HTTPS clients that HTTP/3 is served too (RFC 7838):
// browsers and curl --http3 move to it for their next requests.
func (s *http3Server) advertised(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Alt-Svc", s.altSvc)
		h.ServeHTTP(w, r)
	})
}

// stop ends the HTTP/3 connections gracefully (GOAWAY; requests in flight
// finish until ctx is done).
func (s *http3Server) stop(ctx context.Context) {
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
	_ = s.conn.Close()
	if err := <-s.served; err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, quic.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		s.log.Warn("serving HTTP/3", "err", err)
	}
}

// redirector answers plain HTTP with a redirect to the same URL over
// HTTPS: the host the client asked for, the gateway's HTTPS port (left out
// when 443), the path and query as sent. 308 keeps the method and body
// (a POST stays a POST).
type redirector struct {
	addr   string
	srv    *http.Server
	served chan error
	log    *slog.Logger
}

// listenRedirect redirects plain HTTP at addr to httpsAddr; challenges, if
// not nil, wraps the redirect with what answers an ACME CA's http-01
// challenges.
func listenRedirect(addr, httpsAddr string, challenges func(http.Handler) http.Handler, log *slog.Logger) (*redirector, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("the API gateway's redirect to HTTPS at %s: %w (pick another, or leave it out)", addr, err)
	}
	_, port, _ := net.SplitHostPort(httpsAddr)
	if port == "443" {
		port = ""
	}
	rd := &redirector{addr: lis.Addr().String(), served: make(chan error, 1), log: log}
	var redirect http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if host == "" {
			http.Error(w, "the request names no host (Host header) to redirect to over HTTPS", http.StatusBadRequest)
			return
		}
		if port != "" {
			host = net.JoinHostPort(host, port)
		} else if strings.Contains(host, ":") {
			host = "[" + host + "]" // an IPv6 literal
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
	if challenges != nil {
		redirect = challenges(redirect)
	}
	rd.srv = &http.Server{
		Handler:           redirect,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	go func() { rd.served <- rd.srv.Serve(lis) }()
	log.Info("redirecting plain HTTP to HTTPS", "addr", rd.addr)
	return rd, nil
}

func (rd *redirector) stop(ctx context.Context) {
	if err := rd.srv.Shutdown(ctx); err != nil {
		_ = rd.srv.Close()
	}
	if err := <-rd.served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		rd.log.Warn("redirecting to HTTPS", "err", err)
	}
}
