// Package gateway is the mesh's API gateway: HTTP from outside the mesh to
// its services, as Micro's API gateway mapped it. `POST /helloworld/call`
// with a JSON body calls endpoint Helloworld.Call of service helloworld
// and answers its response as JSON; a service that is not gRPC gets the
// request as it came, its path less the service's segment. docs/gateway.md
// has the whole mapping.
//
// The gateway is a workload of the mesh like any other: it has its own
// identity (spiffe://<td>/ns/micromesh/svc/gateway), and its calls leave
// through a built-in sidecar of its own, run in-process — HTTP/3 over QUIC
// with mTLS to the service's sidecar, which applies the service's RBAC to
// the gateway's identity (a service's deny_from=gateway.micromesh shuts
// it out), and its callers' policy (timeouts, retries, faults, splits).
// It learns which services exist from its sidecar's routes and which
// speak gRPC from the registry; what an endpoint takes from the service's
// own gRPC reflection.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/home"
	"github.com/micromesh/micromesh/internal/meshcheck"
	"github.com/micromesh/micromesh/internal/servingcert"
	"github.com/micromesh/micromesh/internal/version"
	"github.com/micromesh/micromesh/platform/edge"
	authv1 "github.com/micromesh/micromesh/proto/auth/v1"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
	statsv1 "github.com/micromesh/micromesh/proto/stats/v1"
	tapv1 "github.com/micromesh/micromesh/proto/tap/v1"
	tracev1 "github.com/micromesh/micromesh/proto/trace/v1"
	"github.com/micromesh/micromesh/service/auth"
)

// Service is the gateway's service name, in the platform's namespace.
const Service = "gateway"

// Options configure a gateway.
type Options struct {
	// Addr is where it serves HTTP (host:port; port 0 picks one).
	Addr string
	// Namespace is the namespace of services a path names without one
	// (/helloworld/...; /helloworld.prod/... names its own). Default
	// "default".
	Namespace string
	// Home is the server's state: the gateway's certificate is minted
	// from its CA.
	Home home.Dir
	// ControlPlane is the control plane's address.
	ControlPlane string
	// Auth is what the gateway asks of requests' access tokens: AuthOff,
	// AuthOptional (the default) or AuthRequired.
	Auth string
	// CORSOrigins are web origins whose pages may call the gateway from a
	// browser (scheme://host[:port]).
	CORSOrigins []string
	// Timeout bounds a call of one request and one answer (default 30 s;
	// streams are not bounded).
	Timeout time.Duration
	// TLS, if set, names the certificate and key the gateway serves HTTPS
	// with (HTTP/2 and HTTP/1.1) — a public CA's, for clients from
	// outside; renewed files are picked up with no restart
	// (servingcert). Unset, the gateway serves plain HTTP.
	TLS servingcert.Files
	// ACME, if set (instead of TLS), has the gateway serve HTTPS with
	// certificates it gets and renews itself from an ACME CA (Let's
	// Encrypt, say) for the domains it names.
	ACME ACME
	// HTTP3, with TLS or ACME, also serves HTTP/3 over QUIC on the same
	// port (UDP) and advertises it to HTTPS clients (Alt-Svc).
	HTTP3 bool
	// RedirectAddr, with TLS or ACME, is where plain HTTP is answered with
	// a redirect to the same URL over HTTPS (308; port 80, usually) — and,
	// with ACME, the CA's http-01 challenges.
	RedirectAddr string
	// RateLimit bounds each client's requests to the services, per
	// second: each account (a request with a verified access token) or,
	// without one, each client address; past it, 429 with Retry-After.
	// RateLimitBurst is how many at once (0: the rate, rounded up). 0:
	// no limit.
	RateLimit      float64
	RateLimitBurst int
	// Metrics, if set, gets the gateway's metrics (the server's /metrics).
	Metrics prometheus.Registerer
	Logger  *slog.Logger
}

// Gateway is a running API gateway.
type Gateway struct {
	addr     string
	scheme   string // http or https
	srv      *http.Server
	served   chan error
	h3       *http3Server // nil unless Options.HTTP3
	redirect *redirector  // nil unless Options.RedirectAddr
	sidecar  *edge.Sidecar
	handler  *Handler
	public   http.Handler // handler behind the token check
	log      *slog.Logger
}

// Start joins the mesh as the gateway, starts its sidecar and serves HTTP
// on o.Addr; it returns once the sidecar has its configuration and the
// address is bound.
func Start(ctx context.Context, o Options) (_ *Gateway, err error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if err := identity.ValidateName("namespace", o.Namespace); err != nil {
		return nil, err
	}
	if o.Auth == "" {
		o.Auth = AuthOptional
	}
	if err := ValidateAuthMode(o.Auth); err != nil {
		return nil, err
	}
	for _, origin := range o.CORSOrigins {
		if err := ValidateOrigin(origin); err != nil {
			return nil, err
		}
	}
	if o.Timeout < 0 {
		return nil, fmt.Errorf("the gateway's timeout %v: must be positive", o.Timeout)
	}
	if err := ValidateClientLimit(o.RateLimit, o.RateLimitBurst); err != nil {
		return nil, fmt.Errorf("the gateway's rate limit: %w", err)
	}
	if !o.TLS.IsZero() && !o.ACME.IsZero() {
		return nil, errors.New("the gateway's certificate comes from files or from an ACME CA, not both")
	}
	if o.HTTP3 && o.TLS.IsZero() && o.ACME.IsZero() {
		return nil, errors.New("HTTP/3 needs TLS: give the gateway a certificate and key, or ACME domains")
	}
	if o.RedirectAddr != "" && o.TLS.IsZero() && o.ACME.IsZero() {
		return nil, errors.New("a redirect to HTTPS needs TLS: give the gateway a certificate and key, or ACME domains")
	}
	log := o.Logger.With("component", "gateway")
	// tlsConf and h3Conf: the HTTPS and HTTP/3 listeners', nil for plain
	// HTTP; acmeCA, with ACME.
	var tlsConf, h3Conf *tls.Config
	var acmeCA *acmeCerts
	switch {
	case !o.TLS.IsZero():
		certs, err := servingcert.Load(o.TLS, log)
		if err != nil {
			return nil, fmt.Errorf("the API gateway's TLS: %w", err)
		}
		tlsConf, h3Conf = serverTLS(certs.GetCertificate), serverTLS(certs.GetCertificate)
	case !o.ACME.IsZero():
		a := o.ACME
		if a.Cache == "" {
			a.Cache = o.Home.ACMECache()
		}
		if acmeCA, err = newACME(a, log); err != nil {
			return nil, fmt.Errorf("the API gateway's ACME: %w", err)
		}
		tlsConf, h3Conf = acmeCA.tlsConfig(), serverTLS(acmeCA.getCertificate)
	}
	lis, sc, err := edge.Listen(ctx, edge.Options{Name: Service, Home: o.Home, ControlPlane: o.ControlPlane, Logger: o.Logger}, o.Addr, "API gateway", "--gateway-addr")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = lis.Close()
		}
	}()
	g := &Gateway{addr: lis.Addr().String(), scheme: "http", served: make(chan error, 1), sidecar: sc, log: log}
	g.handler, err = NewHandler(HandlerOptions{
		Namespace: o.Namespace, Timeout: o.Timeout, Outbound: sc.Outbound, Hosts: sc.Hosts, Routes: sc.Routes,
		Protocols: RegistryProtocols(registryv1.NewRegistryServiceClient(sc.ControlPlane)), Metrics: o.Metrics, Logger: log,
	})
	if err != nil {
		sc.Stop()
		return nil, err
	}
	var services http.Handler = g.handler
	if o.RateLimit > 0 {
		services = newClientLimit(g.handler, o.RateLimit, o.RateLimitBurst, o.Metrics, log)
	}
	g.public = services
	if o.Auth != AuthOff {
		client := authv1.NewAuthServiceClient(withAuthority{g.handler.conn, platformAuthority})
		g.public = &authenticated{next: services, mode: o.Auth, client: client, namespace: o.Namespace,
			verifier: auth.NewVerifier(func(ctx context.Context) (string, error) {
				resp, err := client.PublicKeys(ctx, &authv1.PublicKeysRequest{})
				return resp.GetJwks(), err
			})}
	}
	g.public = g.handler.observed(g.public)
	loopback := IsLoopback(g.addr)
	handler := SameOrigin(g.public, loopback, o.CORSOrigins...)
	g.srv = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	if tlsConf == nil {
		go func() { g.served <- g.srv.Serve(lis) }()
	} else {
		g.scheme = "https"
		g.srv.TLSConfig = tlsConf
		if o.HTTP3 {
			if g.h3, err = listenHTTP3(g.addr, handler, h3Conf, log); err != nil {
				g.handler.Close()
				sc.Stop()
				return nil, err
			}
			g.srv.Handler = g.h3.advertised(handler)
		}
		if o.RedirectAddr != "" {
			var challenges func(http.Handler) http.Handler
			if acmeCA != nil {
				challenges = acmeCA.httpHandler
			}
			if g.redirect, err = listenRedirect(o.RedirectAddr, g.addr, challenges, log); err != nil {
				if g.h3 != nil {
					g.h3.stop(ctx)
				}
				g.handler.Close()
				sc.Stop()
				return nil, err
			}
		}
		go func() { g.served <- g.srv.ServeTLS(lis, "", "") }()
		if acmeCA != nil {
			acmeCA.warm()
		}
	}
	if !loopback && o.Auth != AuthRequired {
		log.Warn("the API gateway listens beyond loopback without --gateway-auth required: every service it can reach answers whoever reaches it", "addr", g.addr, "auth", o.Auth)
	}
	log.Info("API gateway ready", "url", g.URL(), "http3", g.h3 != nil, "namespace", o.Namespace, "auth", o.Auth)
	return g, nil
}

// maxHeaderBytes bounds a request's head, over every protocol.
const maxHeaderBytes = 64 << 10

// IsLoopback reports whether a listening address (host:port) is a
// loopback one.
func IsLoopback(addr string) bool {
	ip := net.ParseIP(hostOf(addr))
	return ip != nil && ip.IsLoopback()
}

func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h
}

// Addr is where the gateway serves HTTP (TCP, and UDP for HTTP/3).
func (g *Gateway) Addr() string { return g.addr }

// URL is the gateway's base URL: http://ADDR, or https://ADDR with TLS.
func (g *Gateway) URL() string { return g.scheme + "://" + g.addr }

// RedirectAddr is where plain HTTP is redirected to HTTPS ("" for none).
func (g *Gateway) RedirectAddr() string {
	if g.redirect == nil {
		return ""
	}
	return g.redirect.addr
}

// Handler is the gateway's HTTP handler, access tokens checked as
// Options.Auth says.
func (g *Gateway) Handler() http.Handler { return g.public }

// OperatorHandler is the gateway's handler with no token check: the
// dashboard's, which serves the operator on loopback.
func (g *Gateway) OperatorHandler() http.Handler { return g.handler.observed(g.handler) }

// ListServices lists the mesh's services with their instances, as the
// gateway's identity sees them (every namespace).
func (g *Gateway) ListServices(ctx context.Context) (*registryv1.ListServicesResponse, error) {
	return registryv1.NewRegistryServiceClient(g.sidecar.ControlPlane).ListServices(ctx, &registryv1.ListServicesRequest{})
}

// Traces reads the traces the control plane keeps, as the gateway's
// platform identity (the dashboard shows them).
func (g *Gateway) Traces() tracev1.TraceServiceClient {
	return tracev1.NewTraceServiceClient(g.sidecar.ControlPlane)
}

// Stats returns a client of the control plane's stats API, as the
// gateway's platform identity.
func (g *Gateway) Stats() statsv1.StatsServiceClient {
	return statsv1.NewStatsServiceClient(g.sidecar.ControlPlane)
}

// Registry returns a client of the control plane's registry API, as the
// gateway's platform identity (the dashboard's policy changes).
func (g *Gateway) Registry() registryv1.RegistryServiceClient {
	return registryv1.NewRegistryServiceClient(g.sidecar.ControlPlane)
}

// Tap returns a client of the control plane's tap API, as the gateway's
// platform identity (the dashboard's live requests).
func (g *Gateway) Tap() tapv1.TapServiceClient {
	return tapv1.NewTapServiceClient(g.sidecar.ControlPlane)
}

// Check checks the mesh (meshcheck.Run) as the gateway's platform
// identity: the dashboard's health view.
func (g *Gateway) Check(ctx context.Context) []meshcheck.Result {
	return meshcheck.Run(ctx, g.sidecar.ControlPlane, g.sidecar.ControlPlane.Target(), version.Version)
}

// Stop stops taking requests, lets those in flight finish (a few seconds
// at most: streams are cut), then stops the sidecar.
func (g *Gateway) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if g.h3 != nil {
		g.h3.stop(ctx)
	}
	if g.redirect != nil {
		g.redirect.stop(ctx)
	}
	if err := g.srv.Shutdown(ctx); err != nil {
		_ = g.srv.Close()
	}
	if err := <-g.served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		g.log.Warn("serving", "err", err)
	}
	g.handler.Close()
	g.sidecar.Stop()
}
