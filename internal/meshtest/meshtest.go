// Package meshtest is the test harness: tests read like a script of what a
// user does — start a control plane, get credentials, call it — with real
// sockets on loopback and everything stopped by t.Cleanup.
package meshtest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/micromesh/micromesh/controlplane"
	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/dataplane"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/identity/ca"
	"github.com/micromesh/micromesh/internal/home"
	"github.com/micromesh/micromesh/internal/ports"
	"github.com/micromesh/micromesh/internal/syncbuf"
	"github.com/micromesh/micromesh/platform"
	adminv1 "github.com/micromesh/micromesh/proto/admin/v1"
	identityv1 "github.com/micromesh/micromesh/proto/identity/v1"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
	statsv1 "github.com/micromesh/micromesh/proto/stats/v1"
	tapv1 "github.com/micromesh/micromesh/proto/tap/v1"
	tracev1 "github.com/micromesh/micromesh/proto/trace/v1"
	"github.com/micromesh/micromesh/service"
	"github.com/micromesh/micromesh/xds"
)

// Env is one test's mesh: a state directory and what runs in it.
type Env struct {
	t    testing.TB
	Home home.Dir
	logs *syncbuf.Buffer
}

// NewEnv returns an environment with a fresh $MESH_HOME. What its
// processes log is kept, and printed if the test fails.
func NewEnv(t testing.TB) *Env {
	e := &Env{t: t, Home: home.Dir(t.TempDir()), logs: &syncbuf.Buffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs of the test's mesh:\n%s", e.Logs())
		}
	})
	return e
}

// Logs returns everything the environment's processes have logged.
func (e *Env) Logs() string { return e.logs.String() }

func (e *Env) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// ControlPlane is a control plane running in-process.
type ControlPlane struct {
	env    *Env
	Info   home.ServerInfo
	server *controlplane.Server
	stop   func() error
}

// CPOption configures StartControlPlane.
type CPOption func(*controlplane.Config)

// WithConsul makes the control plane use the Consul agent at addr.
func WithConsul(addr string) CPOption {
	return func(c *controlplane.Config) { c.Registry, c.ConsulAddr = controlplane.RegistryConsul, addr }
}

// WithTracing has proxies record percent of the traces that requests
// start (requests that bring a sampled traceparent are always recorded).
func WithTracing(percent float64) CPOption {
	return func(c *controlplane.Config) { c.Tracing = &xds.Tracing{SamplingPercent: percent} }
}

// WithTracesForward has the control plane send the spans it keeps on to
// the OTLP/gRPC collector at endpoint (http://HOST:PORT).
func WithTracesForward(endpoint string) CPOption {
	return func(c *controlplane.Config) { c.TracesForward = endpoint }
}

// StartControlPlane starts a control plane on loopback ports of the
// system's choosing and waits until it is ready.
func (e *Env) StartControlPlane(opts ...CPOption) *ControlPlane {
	e.t.Helper()
	return e.StartControlPlaneAt("127.0.0.1:0", opts...)
}

// StartControlPlaneAt starts a control plane on addr (to restart one where
// its proxies expect it).
func (e *Env) StartControlPlaneAt(addr string, opts ...CPOption) *ControlPlane {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := controlplane.Config{Home: e.Home, Addr: addr, AdminAddr: "127.0.0.1:0", Logger: e.logger()}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := controlplane.New(ctx, cfg)
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	ready := make(chan home.ServerInfo, 1)
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, func(i home.ServerInfo) { ready <- i }) }()
	cp := &ControlPlane{env: e, server: srv}
	var stopped bool
	var stopErr error
	cp.stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			stopErr = <-done
		}
		return stopErr
	}
	e.t.Cleanup(func() { _ = cp.stop() })
	select {
	case cp.Info = <-ready:
	case err := <-done:
		e.t.Fatalf("control plane exited before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		e.t.Fatal("control plane not ready after 30s")
	}
	return cp
}

// Stop stops the control plane and returns what Run returned.
func (c *ControlPlane) Stop() error { return c.stop() }

// Bundle returns the trust bundle from the local CA.
func (c *ControlPlane) Bundle() *identity.Bundle {
	c.env.t.Helper()
	roots, err := identity.ReadCertificates(c.env.Home.RootCert())
	if err != nil {
		c.env.t.Fatal(err)
	}
	return identity.NewBundle(c.Info.TrustDomain, roots)
}

// Token mints a join token for service name in namespace ns.
func (c *ControlPlane) Token(ns, name string) (identity.ID, string) {
	c.env.t.Helper()
	signer, err := ca.LoadTokenSigner(c.env.Home.CA())
	if err != nil {
		c.env.t.Fatal(err)
	}
	id, err := identity.ServiceID(c.Info.TrustDomain, ns, name)
	if err != nil {
		c.env.t.Fatal(err)
	}
	tok, err := signer.Mint(id, time.Minute)
	if err != nil {
		c.env.t.Fatal(err)
	}
	return id, tok
}

// Join gets credentials for service name in namespace ns, as a workload does.
func (c *ControlPlane) Join(ns, name string) *identity.Credentials {
	c.env.t.Helper()
	id, tok := c.Token(ns, name)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	creds, err := identity.Join(ctx, c.Info.Address, c.Bundle(), id, tok)
	if err != nil {
		c.env.t.Fatalf("join as %s: %v", id, err)
	}
	return creds
}

// Home returns the state directory the control plane runs in.
func (c *ControlPlane) Home() home.Dir { return c.env.Home }

// Registry returns the control plane's registry.
func (c *ControlPlane) Registry() registry.Registry { return c.server.Registry() }

// Dial connects to the control plane as creds, closed by t.Cleanup.
func (c *ControlPlane) Dial(creds *identity.Credentials) *grpc.ClientConn {
	c.env.t.Helper()
	cert := creds.TLSCertificate()
	cfg := identity.ClientTLSConfig(func() *identity.Bundle { return creds.Bundle }, func() *tls.Certificate { return cert },
		identity.AuthorizeID(identity.ControlPlaneID(c.Info.TrustDomain)))
	conn, err := grpc.NewClient(c.Info.Address, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		c.env.t.Fatal(err)
	}
	c.env.t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// RegistryClient calls the Registry API with creds.
func (c *ControlPlane) RegistryClient(creds *identity.Credentials) registryv1.RegistryServiceClient {
	return registryv1.NewRegistryServiceClient(c.Dial(creds))
}

// operator connects to the control plane as a micromesh-namespace
// identity, which the control plane's admin APIs admit.
func (c *ControlPlane) operator() *grpc.ClientConn {
	c.env.t.Helper()
	return c.Dial(c.Join(identity.SystemNamespace, "meshtest"))
}

// AdminClient calls the Admin API as a micromesh-namespace identity.
func (c *ControlPlane) AdminClient() adminv1.AdminServiceClient {
	c.env.t.Helper()
	return adminv1.NewAdminServiceClient(c.operator())
}

// TraceClient calls the trace API as a micromesh-namespace identity.
func (c *ControlPlane) TraceClient() tracev1.TraceServiceClient {
	c.env.t.Helper()
	return tracev1.NewTraceServiceClient(c.operator())
}

// StatsClient calls the stats API as a micromesh-namespace identity.
func (c *ControlPlane) StatsClient() statsv1.StatsServiceClient {
	c.env.t.Helper()
	return statsv1.NewStatsServiceClient(c.operator())
}

// IdentityClient calls the Identity API as a micromesh-namespace identity
// (an operator: it may revoke certificates).
func (c *ControlPlane) IdentityClient() identityv1.IdentityServiceClient {
	c.env.t.Helper()
	return identityv1.NewIdentityServiceClient(c.operator())
}

// TapClient calls the tap API as a micromesh-namespace identity.
func (c *ControlPlane) TapClient() tapv1.TapServiceClient {
	c.env.t.Helper()
	return tapv1.NewTapServiceClient(c.operator())
}

// Logs returns what the environment's processes have logged.
func (c *ControlPlane) Logs() string { return c.env.Logs() }

// Sidecar is a built-in sidecar running in-process.
type Sidecar struct {
	Info  dataplane.Info
	Creds *identity.Credentials
	stop  func()
	// exited is closed when the sidecar's Run returns, with its error in
	// exitErr; expectExit: a test waits for it to stop on its own.
	exited     chan struct{}
	exitErr    error
	expectExit atomic.Bool
}

// SidecarOption configures StartSidecar.
type SidecarOption func(*dataplane.Options)

// WithApp sets the app the sidecar fronts (address and protocol).
func WithApp(addr, protocol string) SidecarOption {
	return func(o *dataplane.Options) { o.App, o.AppProtocol = addr, protocol }
}

// WithOptions changes any of the sidecar's options.
func WithOptions(f func(*dataplane.Options)) SidecarOption { return SidecarOption(f) }

// WithInstance names the instance.
func WithInstance(name string) SidecarOption { return func(o *dataplane.Options) { o.Instance = name } }

// StartSidecar joins service name of namespace ns and runs its sidecar on
// free loopback ports, waiting until it serves and is registered.
func (c *ControlPlane) StartSidecar(ns, name string, opts ...SidecarOption) *Sidecar {
	t := c.env.t
	t.Helper()
	creds := c.Join(ns, name)
	certDir := filepath.Join(t.TempDir(), "certs")
	if err := creds.WriteDir(certDir); err != nil {
		t.Fatal(err)
	}
	o := dataplane.Options{
		Credentials: creds, CertDir: certDir, ControlPlane: c.Info.Address,
		// Port 0: the sidecar picks its ports and binds them at once.
		Outbound: "127.0.0.1:0", Admin: "127.0.0.1:0", TTL: 3 * time.Second, Drain: time.Second, Logger: c.env.logger(),
	}
	for _, opt := range opts {
		opt(&o)
	}
	s, err := c.runSidecar(ns, name, o)
	if err != nil {
		t.Fatalf("sidecar %s.%s: %v", name, ns, err)
	}
	s.Creds = creds
	return s
}

// runSidecar runs a sidecar until the test ends; it returns once the
// sidecar is ready, or with the error it exited with.
func (c *ControlPlane) runSidecar(ns, name string, o dataplane.Options) (*Sidecar, error) {
	t := c.env.t
	t.Helper()
	ready := make(chan dataplane.Info, 1)
	o.Ready = func(i dataplane.Info) { ready <- i }
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sidecar{exited: make(chan struct{})}
	go func() {
		s.exitErr = dataplane.Run(ctx, o)
		close(s.exited)
	}()
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			cancel()
			<-s.exited
			if s.exitErr != nil && !s.expectExit.Load() {
				t.Errorf("sidecar %s.%s: %v", name, ns, s.exitErr)
			}
		})
	}
	select {
	case s.Info = <-ready:
		t.Cleanup(s.stop)
		return s, nil
	case <-s.exited:
		cancel()
		return nil, fmt.Errorf("exited: %w", s.exitErr)
	case <-time.After(30 * time.Second):
		t.Cleanup(s.stop)
		return nil, errors.New("not ready after 30s")
	}
}

// Stop stops the sidecar (deregister, drain, stop).
func (s *Sidecar) Stop() { s.stop() }

// WaitExit waits up to d for the sidecar to stop on its own and returns
// the error it stopped with; it fails the test if it runs on.
func (s *Sidecar) WaitExit(t testing.TB, d time.Duration) error {
	t.Helper()
	s.expectExit.Store(true)
	select {
	case <-s.exited:
		return s.exitErr
	case <-time.After(d):
		t.Fatalf("the sidecar %s still runs after %v", s.Info.NodeID, d)
		return nil
	}
}

// CSR returns a certificate request for id with a new key.
func CSR(t testing.TB, id identity.ID) []byte {
	t.Helper()
	key, err := identity.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := identity.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// FreePort returns a port free for both TCP and UDP on loopback now, below
// the ephemeral range, so that no connection of a parallel test takes it
// before the test binds it (ports.FreeOutsideEphemeral).
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := ports.FreeOutsideEphemeral(1)
	if err != nil {
		t.Fatal(err)
	}
	return p[0]
}

// SignedCredentials signs credentials for service name of namespace ns with
// the CA's intermediate, valid from notBefore to notAfter: for certificates
// the CA would never issue (expired ones).
func (c *ControlPlane) SignedCredentials(ns, name string, notBefore, notAfter time.Time) *identity.Credentials {
	t := c.env.t
	t.Helper()
	key, err := identity.ReadKey(filepath.Join(c.env.Home.CA(), "intermediate.key"))
	if err != nil {
		t.Fatal(err)
	}
	inters, err := identity.ReadCertificates(filepath.Join(c.env.Home.CA(), "intermediate.crt"))
	if err != nil {
		t.Fatal(err)
	}
	id, err := identity.ServiceID(c.Info.TrustDomain, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := identity.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: notBefore, NotAfter: notAfter,
		URIs: []*url.URL{id.URL()}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, inters[0], leafKey.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &identity.Credentials{ID: id, Chain: []*x509.Certificate{leaf, inters[0]}, Key: leafKey, Bundle: c.Bundle()}
}

// Service is a framework service running in the test behind its sidecar.
type Service struct {
	*Sidecar
	// App is where the service itself listens (the sidecar's app).
	App string
}

// StartService runs a framework service (service.New) in the test:
// register adds its handlers; it serves gRPC on a free loopback port
// behind a sidecar of its own, like `meshctl run` would start it.
func (c *ControlPlane) StartService(ns, name string, register func(*service.Service), opts ...SidecarOption) *Service {
	t := c.env.t
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	svc := service.New(service.Name(name), service.Logger(c.env.logger()), service.GracePeriod(time.Second))
	register(svc)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("service %s: %v", name, err)
		}
	})
	sc := c.StartSidecar(ns, name, append([]SidecarOption{WithApp(lis.Addr().String(), "grpc")}, opts...)...)
	return &Service{Sidecar: sc, App: lis.Addr().String()}
}

// SetAccountKeys gives the control plane the JWK set accounts' tokens are
// signed with, as meshctl server does once the auth service starts (for a
// test that signs tokens of its own).
func (c *ControlPlane) SetAccountKeys(jwks []byte) { c.server.SetAccountKeys(jwks) }

// StartPlatform runs the platform services (store, ...) on this control
// plane, each behind its own sidecar, as `meshctl server` does (the auth
// service's keys given to the control plane).
func (c *ControlPlane) StartPlatform() {
	t := c.env.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := platform.Start(ctx, platform.Options{Home: c.env.Home, ControlPlane: c.Info.Address, AccountKeys: c.server.SetAccountKeys, Logger: c.env.logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Stop)
}

// DialThrough connects to service authority (`name.namespace`) through a
// sidecar's outbound listener, as service.Dial does inside a service.
func DialThrough(t testing.TB, outbound, authority string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+outbound, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(authority))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
