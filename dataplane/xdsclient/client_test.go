package xdsclient_test

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/dataplane/config"
	"github.com/micromesh/micromesh/dataplane/xdsclient"
	"github.com/micromesh/micromesh/dataplane/xdswire"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/poll"
)

// sidecar is an xDS client whose config is compiled and kept, as the
// proxy does.
type sidecar struct {
	client *xdsclient.Client
	cfg    atomic.Pointer[config.Config]
	refuse func(config.Resources) error
	done   chan error
	cancel context.CancelFunc
}

// modes are the protocols every client test runs with.
var modes = []struct {
	name string
	opts []xdsclient.Option
}{{"sotw", nil}, {"delta", []xdsclient.Option{xdsclient.Delta()}}}

func startSidecar(t *testing.T, cp *meshtest.ControlPlane, refuse func(config.Resources) error, opts ...xdsclient.Option) *sidecar {
	t.Helper()
	creds := cp.Join("default", "web")
	meta := map[string]any{"kind": "builtin", "inbound_port": 18443.0, "outbound_port": 15001.0, "app_port": 8080.0, "cert_dir": t.TempDir()}
	node := &xdswire.Node{ID: creds.ID.String() + "~web-1", Metadata: meta}
	cert := creds.TLSCertificate()
	tlsConfig := func() *tls.Config {
		return identity.ClientTLSConfig(func() *identity.Bundle { return creds.Bundle }, func() *tls.Certificate { return cert },
			identity.AuthorizeID(identity.ControlPlaneID(creds.ID.TrustDomain)))
	}
	sc := &sidecar{refuse: refuse, done: make(chan error, 1)}
	apply := func(r config.Resources) error {
		if sc.refuse != nil {
			if err := sc.refuse(r); err != nil {
				return err
			}
		}
		c, err := config.Compile(r)
		if err != nil {
			return err
		}
		sc.cfg.Store(c)
		return nil
	}
	sc.client = xdsclient.New(cp.Info.Address, tlsConfig, node, apply, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), opts...)
	ctx, cancel := context.WithCancel(context.Background())
	sc.cancel = cancel
	go func() { sc.done <- sc.client.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-sc.done
	})
	return sc
}

func (s *sidecar) endpoints(cluster string) int {
	c := s.cfg.Load()
	if c == nil || c.Clusters[cluster] == nil {
		return -1
	}
	return len(c.Clusters[cluster].Endpoints)
}

func register(t *testing.T, cp *meshtest.ControlPlane, id, svc string) {
	t.Helper()
	if err := cp.Registry().Register(context.Background(), registry.Instance{ID: id, Service: svc, Address: "127.0.0.1", Port: 9443, QUICPort: 9443}); err != nil {
		t.Fatal(err)
	}
}

func TestClientFollowsTheMesh(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { testClientFollowsTheMesh(t, m.opts...) })
	}
}

func testClientFollowsTheMesh(t *testing.T, opts ...xdsclient.Option) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	register(t, cp, "hello-1", "hello")
	sc := startSidecar(t, cp, nil, opts...)
	// Resources arrive in more than one response (the route configuration
	// and the secret may come after the endpoints): wait for all of them.
	waitUntil(t, "hello has one endpoint, the routes and the secret are in", func() bool {
		c := sc.cfg.Load()
		return sc.endpoints("hello.default") == 1 && c != nil && c.Certificate != nil && len(c.Missing()) == 0
	})
	c := sc.cfg.Load()
	if c.Outbound == nil || c.Inbound == nil || c.InboundQUIC == nil || !hasHost(c.Routes["outbound"], "hello") || c.Certificate == nil || len(c.Roots) == 0 {
		t.Fatalf("incomplete config: %+v", c)
	}
	register(t, cp, "hello-2", "hello")
	waitUntil(t, "hello has two endpoints", func() bool { return sc.endpoints("hello.default") == 2 })
	register(t, cp, "world-1", "world")
	waitUntil(t, "a new service is routed", func() bool {
		c := sc.cfg.Load()
		return hasHost(c.Routes["outbound"], "world") && sc.endpoints("world.default") == 1
	})
	if st := sc.client.Status(); !st.Connected || st.Updates == 0 || st.LastNACK != "" {
		t.Errorf("status = %+v", st)
	}
}

func TestClientNACKsWhatItCannotApplyAndKeepsItsConfig(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { testClientNACKsWhatItCannotApplyAndKeepsItsConfig(t, m.opts...) })
	}
}

func testClientNACKsWhatItCannotApplyAndKeepsItsConfig(t *testing.T, opts ...xdsclient.Option) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	register(t, cp, "hello-1", "hello")
	sc := startSidecar(t, cp, func(r config.Resources) error {
		for _, c := range r.Clusters {
			if c.Name == "evil.default" {
				return errors.New("test: evil cluster refused")
			}
		}
		return nil
	}, opts...)
	waitUntil(t, "hello is routed", func() bool { return sc.endpoints("hello.default") == 1 })
	register(t, cp, "evil-1", "evil")
	waitUntil(t, "the client NACKs", func() bool { return strings.Contains(sc.client.Status().LastNACK, "test: evil cluster refused") })
	if c := sc.cfg.Load(); c.Clusters["evil.default"] != nil || sc.endpoints("hello.default") != 1 {
		t.Fatal("a refused config was applied, or the good one lost")
	}
	waitUntil(t, "the control plane records the NACK", func() bool {
		resp, err := cp.AdminClient().ProxyStatus(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range resp.GetProxies() {
			for _, ts := range p.GetTypes() {
				if ts.GetType() == "CDS" && strings.Contains(ts.GetNackError(), "evil cluster refused") {
					return true
				}
			}
		}
		return false
	})
	// The control plane must not resend the refused version in a loop.
	before := sc.client.Status().Updates
	time.Sleep(300 * time.Millisecond)
	if sc.client.Status().Updates != before {
		t.Error("updates kept arriving while nothing changed")
	}
}

func TestClientKeepsConfigWhileTheControlPlaneIsAway(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { testClientKeepsConfigWhileTheControlPlaneIsAway(t, m.opts...) })
	}
}

func testClientKeepsConfigWhileTheControlPlaneIsAway(t *testing.T, opts ...xdsclient.Option) {
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	register(t, cp, "hello-1", "hello")
	sc := startSidecar(t, cp, nil, opts...)
	waitUntil(t, "hello is routed", func() bool { return sc.endpoints("hello.default") == 1 })
	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the client sees the control plane gone", func() bool { return !sc.client.Status().Connected })
	if sc.endpoints("hello.default") != 1 {
		t.Fatal("the config was lost with the control plane")
	}
	// The same control plane comes back on the same address.
	cp2 := env.StartControlPlaneAt(cp.Info.Address)
	register(t, cp2, "hello-2", "hello")
	waitUntil(t, "the client resyncs with the restarted control plane", func() bool {
		return sc.client.Status().Connected && sc.endpoints("hello.default") == 2
	})
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, what, 15*time.Second, 10*time.Millisecond, cond)
}

func hasHost(t *config.RouteTable, host string) bool {
	if t == nil {
		return false
	}
	_, known := t.Lookup(host, "/")
	return known
}
