// Package dataplane runs Micromesh's built-in sidecar: it obtains the
// workload's identity, follows the control plane over xDS, serves the
// app's outbound calls and mTLS callers (HTTP/3 over QUIC and HTTP/2 over
// TLS) through dataplane/proxy, and keeps the instance registered.
package dataplane

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/micromesh/micromesh/dataplane/accesslog"
	"github.com/micromesh/micromesh/dataplane/config"
	"github.com/micromesh/micromesh/dataplane/proxy"
	"github.com/micromesh/micromesh/dataplane/qlogdir"
	"github.com/micromesh/micromesh/dataplane/stats"
	"github.com/micromesh/micromesh/dataplane/tracing"
	"github.com/micromesh/micromesh/dataplane/xdsclient"
	"github.com/micromesh/micromesh/dataplane/xdswire"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/otlpwire"
	"github.com/micromesh/micromesh/internal/upstreams"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
	"github.com/micromesh/micromesh/xds/policymeta"
)

// Options describe a sidecar.
type Options struct {
	// ID is the workload's identity; Credentials its certificate (joined
	// or loaded by the caller); CertDir where the certificate files live
	// (renewals are written there; the control plane's SDS names them).
	Credentials *identity.Credentials
	CertDir     string
	// Instance names this instance (default <service>-<random>).
	Instance     string
	ControlPlane string
	// App is the local app's address (127.0.0.1:PORT), or "" for none
	// (an outbound-only sidecar: nothing reaches it).
	App         string
	AppProtocol string // grpc, http or tcp
	// Upstreams are the TCP services the app reaches at loopback ports of
	// the sidecar (127.0.0.1:PORT each, bound by New: a taken one fails
	// it), tunnelled through the mesh (docs/tcp.md).
	Upstreams []upstreams.Upstream
	// Outbound is the loopback address the app calls out through ("" for
	// none; port 0 picks a free one, Info tells which).
	Outbound string
	// InboundPort takes mTLS traffic: TCP (HTTP/2, HTTP/1.1 over TLS) and
	// UDP (HTTP/3); with an App, 0 picks a port free for both. Both are
	// bound by New: a taken one fails it.
	InboundPort uint16
	// Advertise is the address peers reach the inbound port at (default 127.0.0.1).
	Advertise string
	Admin     string // loopback address for /ready, /config_dump, /metrics ("" for none)
	TTL       time.Duration
	Drain     time.Duration // how long in-flight requests get at shutdown
	AccessLog bool
	// SotW makes the xDS client speak state of the world instead of delta.
	SotW bool
	// NoQUIC registers the instance without its QUIC port, so callers use
	// HTTP/2 over TLS (for comparisons; the QUIC listener still runs).
	NoQUIC bool
	Logger *slog.Logger
	// WaitForApp registers the instance only once the app answers (gRPC
	// health SERVING for grpc apps, a TCP connection for http ones), and
	// pauses heartbeats while it does not, so the registry marks the
	// instance critical. The runtime starts the app after the sidecar
	// listens, so callers never see an instance whose app is not up yet.
	WaitForApp bool
	// QlogDir, if set, receives a qlog trace of every QUIC connection the
	// sidecar opens or accepts (package qlogdir; for debugging: costly).
	QlogDir string
	// StatsInterval is how often the sidecar sends its request metrics
	// to the control plane (package stats; 0: stats.DefaultInterval;
	// negative: never).
	StatsInterval time.Duration
	// Version is registered with the instance.
	Version string
	// Policy is the traffic policy the service's callers apply, registered
	// with the instance as policy_<key> metadata ("timeout": "2s",
	// "retries": "3"; "/pkg.Greeter/Slow:timeout": "30s" for one path;
	// keys in xds.PolicyKeys; see package policymeta). The control plane refuses
	// the registration, and so the start, if one is not valid.
	Policy map[string]string
	// Ready, if set, is called once the sidecar serves and is registered.
	Ready func(Info)
}

// Info describes a running sidecar.
type Info struct {
	NodeID   string
	Instance string
	Outbound string
	Inbound  string
	Admin    string
}

// Sidecar is a running sidecar.
type Sidecar struct {
	o     Options
	log   *slog.Logger
	src   *identity.Source
	proxy *proxy.Proxy
	xds   *xdsclient.Client
	reg   *prometheus.Registry
	lst   listeners
	ready atomic.Bool
	// draining: POST /drain deregistered the instance; heartbeats stop.
	draining atomic.Bool
	drainReg chan struct{}
	app      *appProbe
	config   chan struct{} // closed at the first applied config
	// revoked gets the reason once a revocation list in force revokes the
	// sidecar's own certificate: it stops, so that whatever runs it (the
	// runtime) starts it again with a new join token.
	revoked chan error
	once    sync.Once
	adminL  net.Listener

	// warm holds back configs that refer to what has not arrived yet.
	warm *warmer
	// spans exports traced requests' spans to the control plane.
	spans *tracing.Exporter
	// appSpans exports the spans the app sends the admin listener's
	// /v1/traces (OTLP/HTTP) under the sidecar's service.
	appSpans *tracing.AppExporter
	tap      *accesslog.Exporter // access log records for meshctl tap
	// stats exports request metrics to the control plane; nil if off.
	stats *stats.Exporter
}

// Run runs a sidecar until ctx ends, then deregisters, drains and stops.
func Run(ctx context.Context, o Options) error {
	s, err := New(o)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// New prepares a sidecar and binds its own ports (outbound, inbound,
// admin; Info tells which when one was 0); Run runs it and releases them
// when it returns.
func New(o Options) (*Sidecar, error) {
	if o.Credentials == nil {
		return nil, errors.New("sidecar: no credentials")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Instance == "" {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		o.Instance = o.Credentials.ID.Name + "-" + hex.EncodeToString(b)
	}
	if o.Advertise == "" {
		o.Advertise = "127.0.0.1"
	}
	if o.TTL == 0 {
		o.TTL = 10 * time.Second
	}
	if o.Drain == 0 {
		o.Drain = 5 * time.Second
	}
	if o.AppProtocol == "" {
		o.AppProtocol = "http"
	}
	log := o.Logger.With("component", "sidecar", "instance", o.Instance)
	s := &Sidecar{o: o, log: log, reg: prometheus.NewRegistry(), config: make(chan struct{}), drainReg: make(chan struct{}), revoked: make(chan error, 1)}
	s.warm = &warmer{put: s.put, within: proxy.DefaultInitialFetchTimeout, log: log}
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.src = identity.NewSource(o.Credentials, identity.RemoteRenewer(o.ControlPlane),
		identity.WithSourceLogger(o.Logger.With("component", "sidecar-cert")),
		identity.OnRotate(func(c *identity.Credentials) error { return c.WriteDir(o.CertDir) }))
	s.spans = tracing.NewExporter(tracing.Resource{Instance: o.Instance, Version: o.Version, SDK: "micromesh-sidecar"}, o.Logger.With("component", "tracing"))
	s.appSpans = tracing.NewAppExporter(o.Credentials.ID.Name+"."+o.Credentials.ID.Namespace, tracing.Resource{Instance: o.Instance}, o.Logger.With("component", "tracing"))
	s.tap = accesslog.NewExporter(otlpwire.Resource{Instance: o.Instance, Version: o.Version, SDK: "micromesh-sidecar"}, o.Logger.With("component", "accesslog"))
	var qlogTracer proxy.QUICTracer
	if o.QlogDir != "" {
		var err error
		if qlogTracer, err = qlogdir.Tracer(o.QlogDir, o.Logger.With("component", "qlog")); err != nil {
			return nil, err
		}
	}
	s.proxy = proxy.New(s.src, proxy.Options{
		Self:       o.Credentials.ID.Name + "." + o.Credentials.ID.Namespace,
		Logger:     o.Logger.With("component", "proxy"),
		AccessLog:  o.AccessLog,
		Metrics:    s.reg,
		QUICTracer: qlogTracer,
		Spans:      s.spans,
		Tap:        s.tap,
	})
	s.lst.src = s.src
	s.lst.proxy = s.proxy
	s.lst.log = log
	s.lst.qlog = qlogTracer
	s.lst.conns = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "micromesh_open_connections",
		Help: "Connections open on the sidecar's listeners, by direction and transport (quic, tls, plain).",
	}, []string{"direction", "transport"})
	s.reg.MustRegister(s.lst.conns)
	if o.StatsInterval >= 0 {
		s.stats = stats.NewExporter(s.reg, o.Credentials.ID.Name+"."+o.Credentials.ID.Namespace,
			otlpwire.Resource{Instance: o.Instance, Version: o.Version, SDK: "micromesh-sidecar"}, o.StatsInterval, o.Logger.With("component", "stats"))
	}
	meta := map[string]any{
		"kind":         "builtin",
		"cert_dir":     o.CertDir,
		"app_protocol": o.AppProtocol,
	}
	if o.Outbound != "" {
		if _, _, err := net.SplitHostPort(o.Outbound); err != nil {
			return nil, fmt.Errorf("outbound address %q: %w", o.Outbound, err)
		}
	}
	if o.InboundPort != 0 && o.App == "" {
		return nil, errors.New("an inbound port needs the app's address")
	}
	if o.App != "" {
		_, port, err := net.SplitHostPort(o.App)
		if err != nil {
			return nil, fmt.Errorf("app address %q: %w", o.App, err)
		}
		meta["app_port"] = mustPort(port)
	}
	// Hold our own ports from now on (see listeners.reserve).
	outbound, inbound, err := s.lst.reserve(o.Outbound, o.InboundPort, o.App != "")
	if err != nil {
		return nil, err
	}
	s.o.Outbound, s.o.InboundPort = outbound, inbound
	if outbound != "" {
		_, port, _ := net.SplitHostPort(outbound)
		meta["outbound_port"] = mustPort(port)
	}
	if inbound != 0 {
		meta["inbound_port"] = float64(inbound)
	}
	if len(o.Upstreams) > 0 {
		if err := upstreams.Check(o.Upstreams); err != nil {
			s.lst.shutdown(0)
			return nil, err
		}
		addrs := make([]string, len(o.Upstreams))
		for i, u := range o.Upstreams {
			addrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(int(u.Port)))
		}
		if err := s.lst.reserveTunnels(addrs); err != nil {
			return nil, err
		}
		meta["upstreams"] = upstreams.Format(o.Upstreams)
	}
	if o.Admin != "" {
		ln, err := net.Listen("tcp", o.Admin)
		if err != nil {
			s.lst.shutdown(0)
			return nil, fmt.Errorf("admin address %s: %w", o.Admin, err)
		}
		s.adminL = ln
	}
	if o.WaitForApp && o.App != "" {
		app, err := newAppProbe(o.App, o.AppProtocol, log)
		if err != nil {
			s.closePorts()
			return nil, err
		}
		s.app = app
	}
	node := &xdswire.Node{ID: identity.NodeID(o.Credentials.ID, o.Instance), Cluster: o.Credentials.ID.Name, Metadata: meta, UserAgentName: "micromesh-sidecar"}
	var xopts []xdsclient.Option
	if !o.SotW {
		xopts = append(xopts, xdsclient.Delta())
	}
	s.xds = xdsclient.New(o.ControlPlane, s.controlPlaneTLS, node, s.apply, o.Logger.With("component", "xds"), xopts...)
	s.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "micromesh_xds_connected", Help: "1 while the sidecar has a stream to the control plane."},
			func() float64 {
				if s.xds.Status().Connected {
					return 1
				}
				return 0
			}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "micromesh_xds_updates_total", Help: "Configuration updates applied."},
			func() float64 { return float64(s.xds.Status().Updates) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "micromesh_xds_rejected_total", Help: "Configuration updates refused (NACKed)."},
			func() float64 { return float64(s.xds.Status().NACKs) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "micromesh_spans_exported_total", Help: "Spans of traced requests exported to the control plane."},
			func() float64 { n, _, _ := s.spans.Stats(); return float64(n) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "micromesh_spans_dropped_total", Help: "Spans dropped: the export queue was full, or the control plane refused them."},
			func() float64 { _, d, f := s.spans.Stats(); return float64(d + f) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "micromesh_app_spans_exported_total", Help: "Spans the app sent the sidecar (OTLP/HTTP, /v1/traces on the admin listener) exported to the control plane."},
			func() float64 { n, _, _ := s.appSpans.Stats(); return float64(n) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "micromesh_app_spans_dropped_total", Help: "Spans of the app's dropped: too large, the export queue full, or refused by the control plane."},
			func() float64 { _, d, f := s.appSpans.Stats(); return float64(d + f) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "micromesh_access_log_records_exported_total", Help: "Access log records (meshctl tap) sent to the control plane."},
			func() float64 { n, _, _ := s.tap.Stats(); return float64(n) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "micromesh_access_log_records_dropped_total", Help: "Access log records dropped: the export queue was full, or the control plane refused them."},
			func() float64 { _, d, f := s.tap.Stats(); return float64(d + f) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "micromesh_config_held", Help: "1 while an accepted configuration waits for what it refers to (a new cluster's endpoints) before it goes in force."},
			func() float64 {
				if s.warm.holding() {
					return 1
				}
				return 0
			}),
	)
	return s, nil
}

func mustPort(p string) float64 {
	n, _ := strconv.Atoi(p)
	return float64(n)
}

// controlPlaneTLS is how the sidecar talks to the control plane.
func (s *Sidecar) controlPlaneTLS() *tls.Config {
	return s.src.ClientTLSConfig(identity.AuthorizeID(identity.ControlPlaneID(s.o.Credentials.ID.TrustDomain)))
}

// apply compiles resources and puts them in force (put), unless s.warm
// holds them until what they refer to arrives.
func (s *Sidecar) apply(r config.Resources) error {
	cfg, err := config.Compile(r)
	if err != nil {
		return err
	}
	return s.warm.offer(cfg)
}

// put puts cfg in force: listeners first (a port that cannot be bound
// refuses the config), then the proxy's routing. s.warm orders the calls.
func (s *Sidecar) put(cfg *config.Config) error {
	commit, err := s.lst.prepare(cfg)
	if err != nil {
		return err
	}
	if err := s.proxy.Apply(cfg); err != nil {
		commit(false)
		return err
	}
	commit(true)
	if cfg.Outbound != nil || cfg.Inbound != nil || len(cfg.Tunnels) > 0 {
		s.once.Do(func() { close(s.config) })
	}
	if own := s.src.Current(); own != nil {
		if err := cfg.Revocations.Check(own.ID, own.Chain); err != nil {
			select {
			case s.revoked <- err:
			default: // already told
			}
		}
	}
	return nil
}

// Ready reports whether the sidecar serves and is registered.
func (s *Sidecar) Ready() bool { return s.ready.Load() }

// Hosts lists the authorities the outbound listener routes (name and
// name.namespace of each service the workload can call), sorted, not to be
// changed; nil before the first config. Routes tells whether it routes
// one. The API gateway asks them to tell a service not in the mesh from
// one that is down.
func (s *Sidecar) Hosts() []string {
	if t := s.outboundRoutes(); t != nil {
		return t.Hosts
	}
	return nil
}

// Routes reports whether the outbound listener routes authority (name or
// name.namespace).
func (s *Sidecar) Routes(authority string) bool {
	t := s.outboundRoutes()
	if t == nil {
		return false
	}
	_, known := t.Lookup(authority, "/")
	return known
}

func (s *Sidecar) outboundRoutes() *config.RouteTable {
	cfg := s.proxy.Config()
	if cfg == nil || cfg.Outbound == nil {
		return nil
	}
	return cfg.Routes[cfg.Outbound.Route]
}

// Rotate renews the sidecar's certificate now (it renews at half-life on
// its own); connections in use are kept.
func (s *Sidecar) Rotate(ctx context.Context) error { return s.src.Rotate(ctx) }

// Certificate returns the certificate in force.
func (s *Sidecar) Certificate() *identity.Credentials { return s.src.Current() }

// Run serves until ctx ends, then deregisters, drains and stops.
func (s *Sidecar) Run(ctx context.Context) error {
	defer s.closePorts() // on the way out early: nothing keeps serving
	defer s.warm.close()
	g, gctx := errgroup.WithContext(ctx)
	if ln := s.adminL; ln != nil {
		admin := &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := admin.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			return admin.Close()
		})
	}
	g.Go(func() error {
		select {
		case err := <-s.revoked:
			s.log.Error("this workload's certificate was revoked: stopping (it needs a new join token; the runtime starts it again with one)", "err", err)
			return fmt.Errorf("stopped: %w", err)
		case <-gctx.Done():
			return nil
		}
	})
	xctx, stopXDS := context.WithCancel(context.Background())
	defer stopXDS()
	// Spans and request metrics are exported over a connection of their
	// own (it connects at the first export), until the requests in flight
	// at shutdown are done.
	spansConn, err := grpc.NewClient(s.o.ControlPlane, grpc.WithTransportCredentials(credentials.NewTLS(s.controlPlaneTLS())))
	if err != nil {
		return fmt.Errorf("control plane address %q: %w", s.o.ControlPlane, err)
	}
	spansDone, appSpansDone, statsDone, tapDone := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
	defer func() {
		stopXDS()
		<-spansDone
		<-appSpansDone
		<-statsDone
		<-tapDone
		_ = spansConn.Close()
	}()
	go func() { defer close(spansDone); s.spans.Run(xctx, spansConn) }()
	go func() { defer close(appSpansDone); s.appSpans.Run(xctx, spansConn) }()
	go func() { defer close(tapDone); s.tap.Run(xctx, spansConn) }()
	go func() {
		defer close(statsDone)
		if s.stats != nil {
			s.stats.Run(xctx, spansConn)
		}
	}()
	xdone := make(chan error, 1)
	go func() { xdone <- s.xds.Run(xctx) }()
	g.Go(func() error { return s.src.Run(gctx) })

	select {
	case <-s.config:
	case <-gctx.Done():
		stopXDS()
		<-xdone
		return g.Wait()
	}
	reg, err := s.registryClient()
	if err != nil {
		stopXDS()
		<-xdone
		return err
	}
	defer reg.close()
	if s.app != nil {
		defer s.app.close()
		if err := s.app.wait(gctx); err != nil {
			stopXDS()
			<-xdone
			if gctx.Err() != nil {
				return g.Wait()
			}
			return err
		}
	}
	if err := s.register(gctx, reg); err != nil {
		stopXDS()
		<-xdone
		return err
	}
	s.ready.Store(true)
	s.log.Info("sidecar ready", "node", identity.NodeID(s.o.Credentials.ID, s.o.Instance), "outbound", s.lst.addr(outboundL), "inbound", s.lst.addr(inboundL))
	if s.o.Ready != nil {
		s.o.Ready(s.Info())
	}
	g.Go(func() error { return s.heartbeat(gctx, reg) })
	g.Go(func() error {
		select {
		case <-gctx.Done():
		case <-s.drainReg:
			s.deregister(reg)
		}
		return nil
	})
	<-gctx.Done()

	// Shutdown: leave the mesh first, then let requests in flight finish.
	if !s.draining.Swap(true) {
		s.deregister(reg)
	}
	s.lst.shutdown(s.o.Drain)
	stopXDS()
	<-xdone
	s.proxy.Close()
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// closePorts stops whatever still serves or is bound, at once.
func (s *Sidecar) closePorts() {
	s.lst.shutdown(0)
	if s.adminL != nil {
		_ = s.adminL.Close()
	}
}

// Info describes the sidecar: its addresses are known from New on.
func (s *Sidecar) Info() Info {
	i := Info{NodeID: identity.NodeID(s.o.Credentials.ID, s.o.Instance), Instance: s.o.Instance,
		Outbound: s.lst.addr(outboundL), Inbound: s.lst.addr(inboundL)}
	if s.adminL != nil {
		i.Admin = s.adminL.Addr().String()
	}
	return i
}

type registry struct {
	conn   *grpc.ClientConn
	client registryv1.RegistryServiceClient
}

func (r *registry) close() { _ = r.conn.Close() }

func (s *Sidecar) registryClient() (*registry, error) {
	conn, err := grpc.NewClient(s.o.ControlPlane, grpc.WithTransportCredentials(credentials.NewTLS(s.controlPlaneTLS())))
	if err != nil {
		return nil, err
	}
	return &registry{conn: conn, client: registryv1.NewRegistryServiceClient(conn)}, nil
}

func (s *Sidecar) instance() *registryv1.Instance {
	id := s.o.Credentials.ID
	in := &registryv1.Instance{
		Id: s.o.Instance, Service: id.Name, Namespace: id.Namespace, Address: s.o.Advertise,
		Port: uint32(s.o.InboundPort), Protocol: s.o.AppProtocol, Kind: "builtin", Ttl: durationpb.New(s.o.TTL),
		Version: s.o.Version,
	}
	in.Metadata = policymeta.Metadata(s.o.Policy)
	if cfg := s.proxy.Config(); cfg != nil && cfg.InboundQUIC != nil && !s.o.NoQUIC {
		in.QuicPort = uint32(s.o.InboundPort)
	}
	return in
}

// deregister takes the instance out of the registry; callers stop picking
// it once the control plane has pushed the change.
func (s *Sidecar) deregister(reg *registry) {
	s.ready.Store(false)
	if s.o.InboundPort == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := reg.client.Deregister(ctx, &registryv1.DeregisterRequest{Id: s.o.Instance}); err != nil && status.Code(err) != codes.NotFound {
		s.log.Warn("deregister", "err", err)
		return
	}
	s.log.Info("deregistered")
}

// Drain takes the instance out of the registry and stops heartbeats while
// the proxy keeps serving: what the runtime does before it stops the app.
func (s *Sidecar) Drain() {
	if !s.draining.Swap(true) {
		close(s.drainReg)
	}
}

func (s *Sidecar) register(ctx context.Context, reg *registry) error {
	if s.o.InboundPort == 0 {
		return nil // outbound only: nothing to be reached at
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := reg.client.Register(ctx, &registryv1.RegisterRequest{Instance: s.instance()}); err != nil {
		return fmt.Errorf("register %s: %w", s.o.Instance, err)
	}
	return nil
}

// heartbeat renews the registration three times per TTL; an instance the
// registry forgot (a restarted Consul agent, say) registers again.
func (s *Sidecar) heartbeat(ctx context.Context, reg *registry) error {
	if s.o.InboundPort == 0 {
		return nil
	}
	t := time.NewTicker(s.o.TTL / 3)
	defer t.Stop()
	failing, appDown := false, false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.drainReg:
			return nil
		case <-t.C:
		}
		if s.app != nil {
			up := s.app.healthy(ctx)
			switch {
			case !up && !appDown:
				s.log.Warn("the app is not answering: heartbeats paused, the registry will mark this instance critical", "app", s.o.App)
			case up && appDown:
				s.log.Info("the app answers again: heartbeats resumed")
			}
			appDown = !up
			if !up {
				continue
			}
		}
		hctx, cancel := context.WithTimeout(ctx, s.o.TTL/3)
		_, err := reg.client.Heartbeat(hctx, &registryv1.HeartbeatRequest{Id: s.o.Instance})
		if status.Code(err) == codes.NotFound {
			_, err = reg.client.Register(hctx, &registryv1.RegisterRequest{Instance: s.instance()})
			if err == nil {
				s.log.Info("registered again (the registry had forgotten this instance)")
			}
		}
		cancel()
		switch {
		case err != nil && !failing:
			s.log.Warn("heartbeat failing; the registry will mark this instance critical", "err", err)
			failing = true
		case err == nil && failing:
			s.log.Info("heartbeat recovered")
			failing = false
		}
	}
}
