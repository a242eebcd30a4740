// Package controlplane is the Micromesh control plane server: it opens the
// embedded CA, serves the Identity API (and, later, xDS and the registry and
// runtime APIs) over gRPC with mTLS, and exposes /metrics and health on a
// loopback admin port.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	collectorlogsv1 "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	collectormetricsv1 "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	collectortracev1 "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/controlplane/registry/consul"
	"github.com/micromesh/micromesh/controlplane/registry/embedded"
	"github.com/micromesh/micromesh/controlplane/rollout"
	"github.com/micromesh/micromesh/controlplane/stats"
	"github.com/micromesh/micromesh/controlplane/tap"
	"github.com/micromesh/micromesh/controlplane/traces"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/identity/ca"
	"github.com/micromesh/micromesh/internal/home"
	adminv1 "github.com/micromesh/micromesh/proto/admin/v1"
	identityv1 "github.com/micromesh/micromesh/proto/identity/v1"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
	runtimev1 "github.com/micromesh/micromesh/proto/runtime/v1"
	statsv1 "github.com/micromesh/micromesh/proto/stats/v1"
	tapv1 "github.com/micromesh/micromesh/proto/tap/v1"
	tracev1 "github.com/micromesh/micromesh/proto/trace/v1"
	"github.com/micromesh/micromesh/runtime"
	"github.com/micromesh/micromesh/xds"
)

// Config configures the control plane.
type Config struct {
	Home        home.Dir      // state directory
	Addr        string        // gRPC listen address (xDS and APIs, mTLS)
	AdminAddr   string        // HTTP listen address for /metrics, /healthz, /ready
	TrustDomain string        // for a new CA; empty keeps the existing one (default micromesh.local)
	CertTTL     time.Duration // workload certificate lifetime; 0 means the default (24h)
	// Registry is "embedded" (default: bbolt under Home/registry) or "consul".
	Registry   string
	ConsulAddr string // the Consul agent's HTTP address, for Registry "consul"
	Logger     *slog.Logger
	// SidecarCommand is how the runtime starts a sidecar (default: this
	// program's `sidecar` command).
	SidecarCommand []string
	// Advertise is the IP address the sidecars the runtime starts are
	// reached at by other hosts (default 127.0.0.1: this host only).
	Advertise string
	// Tracing, if set, has proxies trace requests and export their spans
	// to the control plane (nil: no proxy traces). TracesMaxAge and
	// TracesMaxSpans bound the spans kept (0: traces.DefaultMaxAge,
	// traces.DefaultMaxSpans).
	Tracing        *xds.Tracing
	TracesMaxAge   time.Duration
	TracesMaxSpans int
	// TracesForward, if set, is another OTLP/gRPC collector the spans are
	// sent on to (http://HOST:PORT, or https:// for TLS).
	TracesForward string
}

// Registry backends.
const (
	RegistryEmbedded = "embedded"
	RegistryConsul   = "consul"
)

// Server is a control plane whose listeners are bound and CA is open, ready to Run.
type Server struct {
	cfg      Config
	log      *slog.Logger
	ca       *ca.CA
	creds    *identity.Source
	grpc     *grpc.Server
	health   *health.Server
	admin    *http.Server
	grpcLn   net.Listener
	adminLn  net.Listener
	metrics  *metrics
	reg      registry.Registry
	runtime  *runtime.Runtime
	closeReg func() error
	ads      *ads
	regAPI   *registryAPI
	xdsStop  context.CancelFunc
	// firstGen is closed once the registry's first snapshot is the mesh
	// (the ADS generation leaves 0, which happens once).
	firstGen chan struct{}

	// streams are the open streams, ended when their caller is revoked.
	streams *liveStreams

	// The keys accounts' access tokens are signed with (SetAccountKeys);
	// keysChanged wakes watchRegistry to build with new ones.
	keysMu      sync.Mutex
	keys        []byte
	keysChanged chan struct{}

	traces *traces.Store
	stats  *stats.Store
	// rollouts moves progressive rollouts on (meshctl rollout).
	rollouts *rollout.Runner
	forward  *traces.Forwarder
	// tap has the watchers of services' requests: while a service has
	// any, its proxies send them (xds.Service.Tapped).
	tap *tap.Hub
}

// SetAccountKeys gives the mesh the JWK set (JSON) the auth service signs
// accounts' access tokens with: the proxies of services whose policy asks
// for tokens (scopes) verify them with it. Until it is set, no token
// verifies and those services refuse the requests their policy covers.
func (s *Server) SetAccountKeys(jwks []byte) {
	s.keysMu.Lock()
	s.keys = slices.Clone(jwks)
	s.keysMu.Unlock()
	select {
	case s.keysChanged <- struct{}{}:
	default: // a rebuild is already due; it reads the latest keys
	}
}

func (s *Server) accountKeys() []byte {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	return s.keys
}

// gracePeriod bounds how long shutdown waits for in-flight RPCs.
const gracePeriod = 5 * time.Second

// New opens the CA under cfg.Home and binds the listeners, so that a port
// conflict or a bad CA is reported before anything runs.
func New(ctx context.Context, cfg Config) (_ *Server, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger.With("component", "controlplane")
	if err := cfg.Home.Ensure(); err != nil {
		return nil, err
	}
	var caOpts []ca.Option
	caOpts = append(caOpts, ca.WithLogger(cfg.Logger.With("component", "ca")))
	if cfg.TrustDomain != "" {
		caOpts = append(caOpts, ca.WithTrustDomain(cfg.TrustDomain))
	}
	if cfg.CertTTL != 0 {
		caOpts = append(caOpts, ca.WithCertificateTTL(cfg.CertTTL))
	}
	ca, err := ca.Open(ctx, cfg.Home.CA(), caOpts...)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, ca: ca, firstGen: make(chan struct{}), keysChanged: make(chan struct{}, 1)}
	defer func() {
		if err != nil {
			s.close()
		}
	}()

	s.grpcLn, err = net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("control plane address %s: %w (is another server running? pick another with --addr)", cfg.Addr, err)
	}
	s.adminLn, err = net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		return nil, fmt.Errorf("admin address %s: %w (pick another with --admin-addr)", cfg.AdminAddr, err)
	}

	own, err := ca.IssueServing(ctx, identity.ControlPlaneID(ca.TrustDomain()), servingHosts(s.grpcLn.Addr()))
	if err != nil {
		return nil, fmt.Errorf("issue the control plane's certificate: %w", err)
	}
	s.creds = identity.NewSource(own, ca.RenewFunc(), identity.WithSourceLogger(cfg.Logger.With("component", "controlplane-cert")))

	if s.reg, s.closeReg, err = openRegistry(ctx, cfg); err != nil {
		return nil, err
	}

	s.metrics = newMetrics(ca, s.creds)
	s.streams = newLiveStreams()
	s.ads = newADS(cfg.Logger.With("component", "xds"), ca.Bundle(), newXDSMetrics(s.metrics.reg))
	s.grpc = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(s.creds.ServerTLSConfigOptionalClient())),
		grpc.MaxRecvMsgSize(1<<20),
		// A control plane holds a connection per proxy; what proxies send is
		// small. gRPC's 32 KiB read buffer per connection was the largest
		// item of the heap at 1,000 proxies.
		grpc.ReadBufferSize(4<<10),
		grpc.ChainUnaryInterceptor(s.metrics.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.metrics.streamInterceptor, s.streams.intercept),
	)
	identityv1.RegisterIdentityServiceServer(s.grpc, &identityAPI{ca: ca, log: cfg.Logger.With("component", "identity-api"), issued: s.metrics.issued})
	s.regAPI = &registryAPI{reg: s.reg, bundle: ca.Bundle(), log: cfg.Logger.With("component", "registry-api"), inMesh: s.ads.waitMesh}
	registryv1.RegisterRegistryServiceServer(s.grpc, s.regAPI)
	adminv1.RegisterAdminServiceServer(s.grpc, &adminAPI{ads: s.ads, bundle: ca.Bundle(), reg: s.reg, started: time.Now()})
	if s.traces, err = traces.Open(cfg.Home.Traces(), traces.Options{MaxAge: cfg.TracesMaxAge, MaxSpans: cfg.TracesMaxSpans, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	caller := func(ctx context.Context) (identity.ID, error) { return verifiedPeer(ctx, ca.Bundle()) }
	collector := traces.NewCollector(s.traces, caller, cfg.Logger)
	if cfg.TracesForward != "" {
		if s.forward, err = traces.NewForwarder(cfg.TracesForward, cfg.Logger); err != nil {
			return nil, err
		}
		collector.ForwardTo(s.forward)
	}
	collectortracev1.RegisterTraceServiceServer(s.grpc, collector)
	tracev1.RegisterTraceServiceServer(s.grpc, traces.NewAPI(s.traces, caller))
	s.metrics.registerTraces(collector, s.traces, s.forward)
	s.stats = stats.NewStore()
	s.rollouts = rollout.NewRunner(s.reg, s.stats, s.retire, cfg.Logger)
	statsCollector := stats.NewCollector(s.stats, caller, cfg.Logger)
	collectormetricsv1.RegisterMetricsServiceServer(s.grpc, statsCollector)
	statsv1.RegisterStatsServiceServer(s.grpc, stats.NewAPI(s.stats, caller, s.registeredServices))
	s.metrics.registerStats(statsCollector)
	s.tap = tap.NewHub()
	tapCollector := tap.NewCollector(s.tap, caller, cfg.Logger)
	collectorlogsv1.RegisterLogsServiceServer(s.grpc, tapCollector)
	tapv1.RegisterTapServiceServer(s.grpc, tap.NewAPI(s.tap, caller))
	s.metrics.registerTap(tapCollector)
	s.runtime, err = runtime.Open(runtime.Options{
		Home: cfg.Home, ControlPlane: s.grpcLn.Addr().String(), TrustDomain: ca.TrustDomain(),
		Mint: ca.Tokens().Mint, SidecarCommand: cfg.SidecarCommand, Advertise: cfg.Advertise, Logger: cfg.Logger,
		AppTracing: cfg.Tracing != nil,
	})
	if err != nil {
		return nil, err
	}
	runtimev1.RegisterRuntimeServiceServer(s.grpc, &runtimeAPI{rt: s.runtime, bundle: ca.Bundle()})
	xdsCtx, xdsStop := context.WithCancel(context.Background())
	s.xdsStop = xdsStop
	discovery.RegisterAggregatedDiscoveryServiceServer(s.grpc, s.ads.service(xdsCtx))
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc)
	s.metrics.registerGRPC(s.grpc)
	s.admin = &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// servingHosts lists the names clients may dial the control plane by.
func servingHosts(addr net.Addr) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if tcp, ok := addr.(*net.TCPAddr); ok && !tcp.IP.IsUnspecified() && !tcp.IP.IsLoopback() {
		hosts = append(hosts, tcp.IP.String())
	}
	if h, err := os.Hostname(); err == nil && identity.ValidateTrustDomain(h) == nil {
		hosts = append(hosts, h)
	}
	return hosts
}

// Info describes the running server.
func (s *Server) Info() home.ServerInfo {
	return home.ServerInfo{
		Address:      s.grpcLn.Addr().String(),
		AdminAddress: s.adminLn.Addr().String(),
		TrustDomain:  s.ca.TrustDomain(),
		PID:          os.Getpid(),
	}
}

// Run serves until ctx ends, then stops gracefully. ready, if not nil, is
// called once everything is serving.
func (s *Server) Run(ctx context.Context, ready func(home.ServerInfo)) error {
	defer s.close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := s.grpc.Serve(s.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("grpc: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := s.admin.Serve(s.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("admin: %w", err)
		}
		return nil
	})
	g.Go(func() error { return s.ca.Run(gctx) })
	g.Go(func() error { return s.creds.Run(gctx) })
	g.Go(func() error { return s.watchRegistry(gctx) })
	g.Go(func() error { s.expireTraces(gctx); return nil })
	g.Go(func() error { s.rollouts.Run(gctx, rolloutTick); return nil })
	if s.forward != nil {
		g.Go(func() error { s.forward.Run(gctx); return nil })
	}
	g.Go(func() error {
		<-gctx.Done()
		// Services first: their sidecars deregister through us.
		s.runtime.Close()
		s.stop()
		return nil
	})

	info := s.Info()
	info.Started = time.Now().UTC()
	if err := s.cfg.Home.WriteServerInfo(info); err != nil {
		s.stop()
		_ = g.Wait()
		return err
	}
	defer func() { _ = s.cfg.Home.RemoveServerInfo(info.PID) }()
	// Ready once proxies can get the mesh: the registry's first snapshot
	// is applied (a Watch delivers it at once, or fails the start).
	select {
	case <-s.firstGen:
	case <-gctx.Done():
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(identityv1.IdentityService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	s.metrics.ready.Store(true)
	s.log.Info("control plane ready", "addr", info.Address, "admin", info.AdminAddress, "trust_domain", info.TrustDomain, "home", string(s.cfg.Home))
	if ready != nil {
		ready(info)
	}
	s.runtime.Resume()
	return g.Wait()
}

// stop drains: health says NOT_SERVING, xDS streams end (proxies keep
// their config and reconnect), other RPCs in flight get gracePeriod.
func (s *Server) stop() {
	s.metrics.ready.Store(false)
	s.health.Shutdown()
	s.xdsStop()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(gracePeriod):
		s.grpc.Stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), gracePeriod)
	defer cancel()
	_ = s.admin.Shutdown(ctx)
}

// openRegistry opens the configured registry backend.
func openRegistry(ctx context.Context, cfg Config) (registry.Registry, func() error, error) {
	log := cfg.Logger.With("component", "registry")
	switch cfg.Registry {
	case "", RegistryEmbedded:
		r, err := embedded.Open(cfg.Home.Registry(), embedded.WithLogger(log))
		if err != nil {
			return nil, nil, err
		}
		return r, r.Close, nil
	case RegistryConsul:
		r, err := consul.New(ctx, cfg.ConsulAddr, consul.WithLogger(log))
		if err != nil {
			return nil, nil, err
		}
		return r, func() error { return nil }, nil
	default:
		return nil, nil, fmt.Errorf("registry %q: choose %q or %q", cfg.Registry, RegistryEmbedded, RegistryConsul)
	}
}

// Registry returns the server's registry.
func (s *Server) Registry() registry.Registry { return s.reg }

// Metrics is the registry the admin port's /metrics serves: what runs
// beside the control plane (the API gateway) adds its own there.
func (s *Server) Metrics() prometheus.Registerer { return s.metrics.reg }

// revokedStreamGrace is how long a revoked caller's open streams outlive a
// new revocation list: enough for its proxy to receive the list.
const revokedStreamGrace = 2 * time.Second

// Debounce bounds: a change is applied once the registry has been quiet for
// debounceQuiet, and never later than debounceMax after it arrived.
const (
	debounceQuiet = 10 * time.Millisecond
	debounceMax   = 100 * time.Millisecond
)

// watchRegistry turns registry snapshots into mesh generations, debounced.
func (s *Server) watchRegistry(ctx context.Context) error {
	ch, err := s.reg.Watch(ctx)
	if err != nil {
		return fmt.Errorf("watch the registry: %w", err)
	}
	roots := identity.EncodeCertificates(s.ca.Bundle().Roots())
	var (
		latest   registry.Snapshot
		pending  bool
		first    time.Time
		quiet    = time.NewTimer(time.Hour)
		deadline <-chan time.Time
		linger   lingering
		expire   = time.NewTimer(time.Hour) // the next lingering cluster goes
	)
	quiet.Stop()
	expire.Stop()
	defer expire.Stop()
	apply := func() {
		mesh := buildMesh(s.ca.TrustDomain(), roots, latest)
		if crl := s.ca.Revocations(); crl != nil {
			mesh.Revocations = crl.PEM()
		}
		mesh.AccountKeys = s.accountKeys()
		mesh.Tracing = s.cfg.Tracing
		for i := range mesh.Services {
			sv := &mesh.Services[i]
			sv.Tapped = s.tap.Tapped(sv.Name + "." + sv.Namespace)
		}
		if next := linger.apply(mesh, time.Now()); !next.IsZero() {
			expire.Reset(time.Until(next))
		}
		s.ads.update(mesh, first)
		pending, deadline = false, nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-expire.C:
			first = time.Now()
			apply()
		case <-s.keysChanged:
			if s.ads.currentGen().version != 0 { // else the first snapshot brings them
				first = time.Now()
				apply()
			}
		case <-s.tap.Changed():
			if s.ads.currentGen().version != 0 {
				first = time.Now()
				apply()
			}
		case <-s.ca.RevocationsChanged():
			if s.ads.currentGen().version != 0 {
				first = time.Now()
				apply()
			}
			// The revoked proxies get the list first, and a built-in
			// sidecar that finds itself on it stops (whatever runs it
			// starts it again with a new join token); then their streams
			// end. Their new calls are refused already.
			crl := s.ca.Revocations()
			go func() {
				select {
				case <-ctx.Done():
				case <-time.After(revokedStreamGrace):
					if n := s.streams.end(crl); n > 0 {
						s.log.Warn("ended the streams of revoked certificates", "streams", n)
					}
				}
			}()
		case snap, ok := <-ch:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("the registry watch ended")
			}
			latest = snap
			s.regAPI.observe(snap)
			s.rollouts.Observe(snap.Splits)
			if s.ads.currentGen().version == 0 {
				first = time.Now()
				apply() // the first: proxies are waiting for it, nothing to coalesce
				close(s.firstGen)
				continue
			}
			if !pending {
				pending, first = true, time.Now()
				deadline = time.After(debounceMax)
			}
			quiet.Reset(debounceQuiet)
		case <-quiet.C:
			if pending {
				apply()
			}
		case <-deadline:
			if pending {
				apply()
			}
		}
	}
}

func (s *Server) close() {
	if s.grpcLn != nil {
		_ = s.grpcLn.Close()
	}
	if s.adminLn != nil {
		_ = s.adminLn.Close()
	}
	if s.xdsStop != nil {
		s.xdsStop()
	}
	if s.closeReg != nil {
		if err := s.closeReg(); err != nil {
			s.log.Warn("close registry", "err", err)
		}
	}
	if s.traces != nil {
		if err := s.traces.Close(); err != nil {
			s.log.Warn("close traces", "err", err)
		}
	}
	if err := s.ca.Close(); err != nil {
		s.log.Warn("close CA", "err", err)
	}
}

// rolloutTick is how often rollouts in progress are judged: often
// enough that a failing canary is rolled back within seconds of its
// callers' sidecars reporting (every 10 s).
const rolloutTick = 2 * time.Second

// expireTraces drops spans past their age, and request metrics past the
// longest window, at start and every minute.
func (s *Server) expireTraces(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		if err := s.traces.Expire(time.Now()); err != nil {
			s.log.Warn("expire traces", "err", err)
		}
		s.stats.Expire()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// registeredServices lists the registry's services ("name.namespace")
// with their instances' IDs, for the stats API.
func (s *Server) registeredServices(ctx context.Context) (map[string][]string, error) {
	snap, err := registry.List(ctx, s.reg)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, inst := range snap.Instances {
		k := inst.Service + "." + inst.Namespace
		out[k] = append(out[k], inst.ID)
	}
	return out, nil
}

// retire stops the runtime's instances of a version of a service, for a
// rollout that ended asking for it (rollout.Retirer).
func (s *Server) retire(ctx context.Context, ns, name, version string) (bool, error) {
	if s.runtime == nil {
		return false, nil
	}
	err := s.runtime.Kill(ctx, ns, name, version)
	if errors.Is(err, runtime.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}
