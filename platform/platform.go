// Package platform runs the platform's primitives — store, broker, events,
// config and auth — as services on the mesh inside `meshctl
// server`: each has its own identity (spiffe://<td>/ns/micromesh/svc/<name>),
// its own gRPC server (the framework's) and its own sidecar, and is reached
// like any other service, through the caller's sidecar. Tenancy comes from
// the caller's verified identity. The API gateway (package gateway) and
// the remote proxy (package remote) run here too, calling into the mesh
// from outside it.
package platform

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/micromesh/micromesh/dataplane"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/identity/ca"
	"github.com/micromesh/micromesh/internal/atomicfile"
	"github.com/micromesh/micromesh/internal/envconfig"
	"github.com/micromesh/micromesh/internal/home"
	"github.com/micromesh/micromesh/internal/meshclient"
	"github.com/micromesh/micromesh/internal/servingcert"
	"github.com/micromesh/micromesh/internal/version"
	"github.com/micromesh/micromesh/platform/auth"
	"github.com/micromesh/micromesh/platform/broker"
	"github.com/micromesh/micromesh/platform/config"
	"github.com/micromesh/micromesh/platform/dashboard"
	"github.com/micromesh/micromesh/platform/events"
	"github.com/micromesh/micromesh/platform/gateway"
	"github.com/micromesh/micromesh/platform/natsserver"
	"github.com/micromesh/micromesh/platform/remote"
	"github.com/micromesh/micromesh/platform/store"
	"github.com/micromesh/micromesh/platform/tenancy"
	authv1 "github.com/micromesh/micromesh/proto/auth/v1"
	brokerv1 "github.com/micromesh/micromesh/proto/broker/v1"
	configv1 "github.com/micromesh/micromesh/proto/config/v1"
	eventsv1 "github.com/micromesh/micromesh/proto/events/v1"
	storev1 "github.com/micromesh/micromesh/proto/store/v1"
	"github.com/micromesh/micromesh/service"
	userauth "github.com/micromesh/micromesh/service/auth"
)

// Options configure the platform services.
type Options struct {
	Home home.Dir
	// ControlPlane is where the sidecars reach the control plane.
	ControlPlane string
	// AccountKeys, if set, is given the auth service's public keys (a JWK
	// set) once it has them: the control plane's SetAccountKeys, so that
	// services' sidecars verify accounts' tokens.
	AccountKeys func(jwks []byte)
	// NATSURL points the broker (and later events and config) at an
	// external NATS cluster; empty runs one in-process.
	NATSURL string
	// StorePostgres, if set, is the PostgreSQL DSN the store keeps its
	// records in instead of the embedded bbolt file.
	StorePostgres string
	// EventsRetention is how long events are kept (default 24 h).
	EventsRetention time.Duration
	// GatewayAddr, if set, is where the API gateway serves HTTP (package
	// gateway); GatewayNamespace the namespace of the services its paths
	// name without one (default "default").
	GatewayAddr      string
	GatewayNamespace string
	// GatewayAuth is what the gateway asks of access tokens (gateway.AuthOff,
	// AuthOptional: the default, AuthRequired).
	GatewayAuth string
	// GatewayCORSOrigins may call the gateway from browsers; GatewayTimeout
	// bounds its unary calls (default 30 s).
	GatewayCORSOrigins []string
	GatewayTimeout     time.Duration
	// GatewayTLS, if set, makes the gateway serve HTTPS with this
	// certificate and key; GatewayHTTP3 then adds HTTP/3 on the same port.
	GatewayTLS servingcert.Files
	// GatewayACME, instead of GatewayTLS, has the gateway get its
	// certificates from an ACME CA.
	GatewayACME  gateway.ACME
	GatewayHTTP3 bool
	// GatewayRedirectAddr, with GatewayTLS, answers plain HTTP with a
	// redirect to HTTPS.
	GatewayRedirectAddr string
	// GatewayRateLimit bounds each client's requests per second (0: none);
	// GatewayRateLimitBurst how many at once (gateway.Options).
	GatewayRateLimit      float64
	GatewayRateLimitBurst int
	// DashboardAddr, if set, is where the dashboard serves HTTP (package
	// dashboard); it needs the gateway.
	DashboardAddr string
	// RemoteProxyAddr, if set, is where the remote proxy serves gRPC over
	// TLS (package remote).
	RemoteProxyAddr string
	// Advertise is the IP address the platform services' sidecars are
	// reached at by other hosts (default 127.0.0.1).
	Advertise string
	// Metrics, if set, gets the metrics of what runs here (the server's
	// /metrics).
	Metrics prometheus.Registerer
	Logger  *slog.Logger
}

// Host runs the platform services.
type Host struct {
	stops         []func()
	gatewayAddr   string
	gatewayURL    string
	dashboardAddr string
	proxyAddr     string
}

// GatewayAddr is where the API gateway serves HTTP ("" for none).
func (h *Host) GatewayAddr() string { return h.gatewayAddr }

// GatewayURL is the API gateway's base URL, http:// or https:// ("" for
// none).
func (h *Host) GatewayURL() string { return h.gatewayURL }

// DashboardAddr is where the dashboard serves HTTP ("" for none).
func (h *Host) DashboardAddr() string { return h.dashboardAddr }

// RemoteProxyAddr is where the remote proxy serves ("" for none).
func (h *Host) RemoteProxyAddr() string { return h.proxyAddr }

// Start starts every platform service and returns once each is
// registered.
func Start(ctx context.Context, o Options) (_ *Host, err error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	h := &Host{}
	defer func() {
		if err != nil {
			h.Stop()
		}
	}()
	// The accounts first: the other services act for the accounts the
	// remote proxy calls them for, verifying their tokens with its keys.
	signer, err := ca.LoadTokenSigner(o.Home.CA())
	if err != nil {
		return nil, err
	}
	accounts, err := auth.Open(filepath.Join(string(o.Home), "auth"), signer.TrustDomain(), o.Logger.With("component", "auth"))
	if err != nil {
		return nil, err
	}
	h.stops = append(h.stops, func() { _ = accounts.Close() })
	forAccounts := service.ServerOptions(tenancy.Accounts(userauth.NewVerifier(func(context.Context) (string, error) {
		b, err := accounts.PublicKeySet()
		return string(b), err
	}))...)

	var b store.Backend
	if o.StorePostgres != "" {
		b, err = store.OpenPostgres(ctx, o.StorePostgres, 0, o.Logger.With("component", "store", "backend", "postgres"))
	} else {
		b, err = store.OpenBolt(filepath.Join(string(o.Home), "store", "store.db"), 0, o.Logger.With("component", "store", "backend", "bbolt"))
	}
	if err != nil {
		return nil, err
	}
	h.stops = append(h.stops, func() { _ = b.Close() })
	err = h.serve(ctx, o, "store", func(s *service.Service) {
		storev1.RegisterStoreServiceServer(s.Server(), store.NewServer(b))
	}, forAccounts)
	if err != nil {
		return nil, err
	}

	connect, err := h.nats(o)
	if err != nil {
		return nil, err
	}
	nc, err := connect("broker")
	if err != nil {
		return nil, fmt.Errorf("broker: connecting to NATS: %w", err)
	}
	h.stops = append(h.stops, nc.Close)
	err = h.serve(ctx, o, "broker", func(s *service.Service) {
		brokerv1.RegisterBrokerServiceServer(s.Server(), broker.NewServer(nc))
	}, forAccounts)
	if err != nil {
		return nil, err
	}

	enc, err := connect("events")
	if err != nil {
		return nil, fmt.Errorf("events: connecting to NATS: %w", err)
	}
	h.stops = append(h.stops, enc.Close)
	ev, err := events.NewServer(enc, o.EventsRetention)
	if err != nil {
		return nil, err
	}
	err = h.serve(ctx, o, "events", func(s *service.Service) {
		eventsv1.RegisterEventsServiceServer(s.Server(), ev)
	}, forAccounts)
	if err != nil {
		return nil, err
	}

	key, err := secretKey(o.Home)
	if err != nil {
		return nil, err
	}
	cnc, err := connect("config")
	if err != nil {
		return nil, fmt.Errorf("config: connecting to NATS: %w", err)
	}
	h.stops = append(h.stops, cnc.Close)
	cfg, err := config.NewServer(ctx, cnc, key)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	err = h.serve(ctx, o, "config", func(s *service.Service) {
		configv1.RegisterConfigServiceServer(s.Server(), cfg)
	}, forAccounts)
	if err != nil {
		return nil, err
	}

	if o.AccountKeys != nil {
		jwks, err := accounts.PublicKeySet()
		if err != nil {
			return nil, fmt.Errorf("the auth service's public keys: %w", err)
		}
		o.AccountKeys(jwks)
	}
	err = h.serve(ctx, o, "auth", func(s *service.Service) {
		authv1.RegisterAuthServiceServer(s.Server(), accounts)
	})
	if err != nil {
		return nil, err
	}

	if o.GatewayAddr != "" {
		gw, err := gateway.Start(ctx, gateway.Options{Addr: o.GatewayAddr, Namespace: o.GatewayNamespace, Auth: o.GatewayAuth, CORSOrigins: o.GatewayCORSOrigins, Timeout: o.GatewayTimeout, TLS: o.GatewayTLS, ACME: o.GatewayACME, HTTP3: o.GatewayHTTP3, RedirectAddr: o.GatewayRedirectAddr, RateLimit: o.GatewayRateLimit, RateLimitBurst: o.GatewayRateLimitBurst, Home: o.Home, ControlPlane: o.ControlPlane, Metrics: o.Metrics, Logger: o.Logger})
		if err != nil {
			return nil, err
		}
		h.stops = append(h.stops, gw.Stop)
		h.gatewayAddr, h.gatewayURL = gw.Addr(), gw.URL()
		if o.DashboardAddr != "" {
			if err := h.dashboard(o.DashboardAddr, gw, o.Logger); err != nil {
				return nil, err
			}
		}
	} else if o.DashboardAddr != "" {
		return nil, errors.New("the dashboard calls services through the API gateway: run both, or neither (--dashboard-addr off)")
	}
	if o.RemoteProxyAddr != "" {
		p, err := remote.Start(ctx, remote.Options{Addr: o.RemoteProxyAddr, Home: o.Home, ControlPlane: o.ControlPlane, Metrics: o.Metrics, Logger: o.Logger})
		if err != nil {
			return nil, err
		}
		h.stops = append(h.stops, p.Stop)
		h.proxyAddr = p.Addr()
	}
	return h, nil
}

// dashboard serves the dashboard at addr.
func (h *Host) dashboard(addr string, gw *gateway.Gateway, log *slog.Logger) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("dashboard address %s: %w (pick another with --dashboard-addr, or turn it off with --dashboard-addr off)", addr, err)
	}
	if !gateway.IsLoopback(lis.Addr().String()) {
		_ = lis.Close()
		return fmt.Errorf("dashboard address %s: the dashboard has no login and serves the operator: it listens on loopback only", addr)
	}
	srv := &http.Server{
		Handler:           gateway.SameOrigin(dashboard.New(dashboard.Options{API: gw.OperatorHandler(), Services: gw.ListServices, Traces: gw.Traces(), Stats: gw.Stats(), Check: gw.Check, Tap: gw.Tap(), Registry: gw.Registry()}), true),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	h.dashboardAddr = lis.Addr().String()
	h.stops = append(h.stops, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
		<-served
	})
	log.Info("dashboard ready", "component", "dashboard", "addr", h.dashboardAddr)
	return nil
}

// secretKey is the key config secrets are sealed with: $MESH_CONFIG_KEY
// (base64), else $MESH_HOME/config/secret.key, made (0600) on first use.
func secretKey(h home.Dir) ([]byte, error) {
	if v := os.Getenv(envconfig.ConfigKey); v != "" {
		key, err := base64.StdEncoding.DecodeString(v)
		if err != nil || len(key) != 32 {
			return nil, fmt.Errorf("$%s: want 32 bytes in base64", envconfig.ConfigKey)
		}
		return key, nil
	}
	path := filepath.Join(string(h), "config", "secret.key")
	key, err := os.ReadFile(path)
	if err == nil {
		if len(key) != 32 {
			return nil, fmt.Errorf("%s: want 32 bytes, found %d", path, len(key))
		}
		return key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	return key, atomicfile.Write(path, key, 0o600)
}

// nats starts the embedded NATS server, or points at the external one.
func (h *Host) nats(o Options) (func(name string) (*nats.Conn, error), error) {
	if o.NATSURL != "" {
		return func(name string) (*nats.Conn, error) {
			return nats.Connect(o.NATSURL, nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
		}, nil
	}
	ns, err := natsserver.Start(filepath.Join(string(o.Home), "nats"), o.Logger)
	if err != nil {
		return nil, err
	}
	h.stops = append(h.stops, ns.Shutdown)
	return ns.Connect, nil
}

// serve runs one platform service and its sidecar.
func (h *Host) serve(ctx context.Context, o Options, name string, register func(*service.Service), opts ...service.Option) error {
	log := o.Logger.With("platform", name)
	creds, err := meshclient.JoinAs(ctx, o.Home, o.ControlPlane, identity.SystemNamespace, name)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	instance := name + "-0"
	certDir := filepath.Join(o.Home.Sidecar(instance), "certs")
	if err := creds.WriteDir(certDir); err != nil {
		return err
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	svc := service.New(append([]service.Option{service.Name(name), service.Version(version.Version), service.Logger(log), service.GracePeriod(5 * time.Second)}, opts...)...)
	register(svc)
	sctx, stopService := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- svc.Serve(sctx, lis) }()

	ready := make(chan dataplane.Info, 1)
	dctx, stopSidecar := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() {
		ran <- dataplane.Run(dctx, dataplane.Options{
			Credentials: creds, CertDir: certDir, Instance: instance, ControlPlane: o.ControlPlane,
			App: lis.Addr().String(), AppProtocol: "grpc", // InboundPort 0: it picks a free one
			Drain: time.Second, WaitForApp: true, Version: version.Version, Advertise: o.Advertise, Logger: log.With("sidecar", instance),
			Ready: func(i dataplane.Info) { ready <- i },
		})
	}()
	stop := func() {
		stopSidecar() // deregister, drain
		if err := <-ran; err != nil {
			log.Warn("sidecar", "err", err)
		}
		stopService()
		if err := <-served; err != nil {
			log.Warn("service", "err", err)
		}
	}
	var info dataplane.Info
	select {
	case info = <-ready:
	case err := <-ran:
		stopService()
		<-served
		return fmt.Errorf("%s: the sidecar exited before it was ready: %w", name, err)
	case <-ctx.Done():
		stop()
		return ctx.Err()
	}
	h.stops = append(h.stops, stop)
	log.Info("platform service ready", "service", name, "inbound", info.Inbound)
	return nil
}

// Stop stops the platform services, each sidecar before its service, in
// the reverse order of their start.
func (h *Host) Stop() {
	for i := len(h.stops) - 1; i >= 0; i-- {
		h.stops[i]()
	}
	h.stops = nil
}
