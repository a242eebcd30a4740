package controlplane_test

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/adstest"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/poll"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
)

func sidecarMeta(certDir string) map[string]any {
	return map[string]any{"kind": "builtin", "inbound_port": 18443.0, "outbound_port": 15001.0, "app_port": 8080.0, "app_protocol": "grpc", "cert_dir": certDir}
}

func dialAs(t *testing.T, cp *meshtest.ControlPlane, creds *identity.Credentials) *adstest.Conn {
	t.Helper()
	var conn *adstest.Conn
	var err error
	if creds == nil {
		conn, err = adstest.Dial(cp.Info.Address, cp.Bundle(), nil)
	} else {
		conn, err = adstest.Dial(cp.Info.Address, cp.Bundle(), creds.TLSCertificate())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// firstResponse subscribes to listeners and returns the first response or error.
func firstResponse(t *testing.T, conn *adstest.Conn, node string, meta map[string]any) (*discovery.DiscoveryResponse, error) {
	t.Helper()
	s, err := conn.StreamSotW(ctxT(t), adstest.Node(node, meta))
	if err != nil {
		return nil, err
	}
	if err := s.Subscribe(resource.ListenerType); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	// A stream the server refused fails Send with io.EOF; Recv has the status.
	return s.Recv()
}

func TestADSRefusesWhatItCannotTrust(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	web := cp.Join("default", "web")
	tests := []struct {
		name  string
		creds *identity.Credentials
		node  string
		meta  map[string]any
		code  codes.Code
		want  string
	}{
		{"no certificate", nil, identity.NodeID(web.ID, ""), sidecarMeta("/c"), codes.Unauthenticated, "present a certificate"},
		{"node ID of another service", web, "spiffe://micromesh.local/ns/default/svc/db", sidecarMeta("/c"), codes.PermissionDenied, "claims"},
		{"node ID of another namespace", web, "spiffe://micromesh.local/ns/prod/svc/web~1", sidecarMeta("/c"), codes.PermissionDenied, "claims"},
		{"node ID that is not a SPIFFE ID", web, "web-1", sidecarMeta("/c"), codes.InvalidArgument, "SPIFFE ID"},
		{"no kind", web, identity.NodeID(web.ID, "1"), map[string]any{}, codes.InvalidArgument, "kind"},
		{"sidecar without cert_dir", web, identity.NodeID(web.ID, "1"), map[string]any{"kind": "builtin", "outbound_port": 15001.0}, codes.InvalidArgument, "cert_dir"},
		{"bad port", web, identity.NodeID(web.ID, "1"), map[string]any{"kind": "envoy", "inbound_port": 70000.0, "cert_dir": "/c"}, codes.InvalidArgument, "port"},
		{"bad upstreams", web, identity.NodeID(web.ID, "1"), map[string]any{"kind": "builtin", "outbound_port": 15001.0, "cert_dir": "/c", "upstreams": "db"}, codes.InvalidArgument, "SERVICE[.NAMESPACE]=PORT"},
		{"upstream on the outbound port", web, identity.NodeID(web.ID, "1"), map[string]any{"kind": "builtin", "outbound_port": 15001.0, "cert_dir": "/c", "upstreams": "db=15001"}, codes.InvalidArgument, "port 15001 is the outbound port"},
		{"one upstream twice", web, identity.NodeID(web.ID, "1"), map[string]any{"kind": "builtin", "outbound_port": 15001.0, "cert_dir": "/c", "upstreams": "db=1,db.default=2"}, codes.InvalidArgument, "db.default is named twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := firstResponse(t, dialAs(t, cp, tc.creds), tc.node, tc.meta)
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("stream error = %v; want %v mentioning %q", err, tc.code, tc.want)
			}
		})
	}
}

func TestSidecarGetsItsListenersAndNACKsAreKept(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	ctx := ctxT(t)
	reg := cp.Registry()
	if err := reg.Register(ctx, registry.Instance{ID: "hello-1", Service: "hello", Address: "127.0.0.1", Port: 9443, QUICPort: 9443}); err != nil {
		t.Fatal(err)
	}
	web := cp.Join("default", "web")
	node := identity.NodeID(web.ID, "web-1")
	s, err := dialAs(t, cp, web).StreamSotW(ctx, adstest.Node(node, sidecarMeta("/var/lib/web/certs")))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Subscribe(resource.ListenerType); err != nil {
		t.Fatal(err)
	}
	lds, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	names, _ := adstest.Names(lds)
	slices.Sort(names)
	if strings.Join(names, ",") != "inbound,inbound-quic,outbound" {
		t.Errorf("listeners = %v", names)
	}
	for _, a := range lds.GetResources() {
		var l listener.Listener
		if err := a.UnmarshalTo(&l); err != nil || l.ValidateAll() != nil {
			t.Errorf("listener %s does not validate: %v %v", l.GetName(), err, l.ValidateAll())
		}
	}
	if err := s.Ack(lds); err != nil {
		t.Fatal(err)
	}

	// Clusters: NACK the first version.
	if err := s.Subscribe(resource.ClusterType); err != nil {
		t.Fatal(err)
	}
	cds, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Nack(cds, "", "test: refusing clusters"); err != nil {
		t.Fatal(err)
	}
	st := proxyStatus(t, cp, node)
	// The NACKed version is recorded (a later one may be served already:
	// the registration's push can follow the stream's opening).
	waitUntil(t, "the NACK is recorded", func() bool {
		st = proxyStatus(t, cp, node)
		return st["CDS"].nackedVersion == cds.GetVersionInfo()
	})
	if st["CDS"].err != "test: refusing clusters" || st["LDS"].acked != st["LDS"].served {
		t.Errorf("status after NACK: %+v", st)
	}
	if !strings.Contains(metrics(t, cp), `micromesh_xds_nacks_total{type="CDS"} 1`) {
		t.Error("the NACK is not counted in /metrics")
	}
	if !strings.Contains(cp.Logs(), "proxy rejected config (NACK)") || !strings.Contains(cp.Logs(), "test: refusing clusters") {
		t.Error("the NACK is not logged with its detail")
	}

	// A change brings a new CDS version, which the proxy accepts.
	if err := reg.Register(ctx, registry.Instance{ID: "world-1", Service: "world", Address: "127.0.0.1", Port: 9444}); err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetTypeUrl() == resource.ClusterType {
			if resp.GetVersionInfo() == cds.GetVersionInfo() {
				t.Fatal("the new CDS response repeats the NACKed version")
			}
			if err := s.Ack(resp); err != nil {
				t.Fatal(err)
			}
			break
		}
		_ = s.Ack(resp)
	}
	waitUntil(t, "CDS synced after the change", func() bool { st = proxyStatus(t, cp, node); return st["CDS"].acked == st["CDS"].served })
}

func TestDeltaSendsOnlyWhatChanged(t *testing.T) {
	cp, client := meshOfAAndB(t)
	ctx, reg := ctxT(t), cp.Registry()
	d, err := dialAs(t, cp, client).StreamDelta(ctx, adstest.Node(identity.NodeID(client.ID, ""), map[string]any{"kind": "proxyless"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Subscribe(resource.EndpointType, "a.default", "b.default"); err != nil {
		t.Fatal(err)
	}
	first, err := d.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(first.GetResources()) != 2 {
		t.Fatalf("first delta response has %d resources, want 2", len(first.GetResources()))
	}
	if err := d.Ack(first); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register(ctx, registry.Instance{ID: "b-2", Service: "b", Address: "127.0.0.1", Port: 9003}); err != nil {
		t.Fatal(err)
	}
	next, err := d.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(next.GetResources()) != 1 || next.GetResources()[0].GetName() != "b.default" {
		t.Fatalf("after a change to b, the delta response holds %v", next.GetResources())
	}
	// The ACK completes a convergence: the histogram counts one more (the
	// first response may count too, if the registrations' generation was
	// pushed after the client connected).
	before := convergences(t, cp)
	if err := d.Ack(next); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the convergence histogram counts the ACK", func() bool { return convergences(t, cp) == before+1 })
}

// A proxy that reconnects offering the versions it holds is sent only
// what changed meanwhile: the versions delta responses carry are the ones
// the server compares.
func TestDeltaReconnectionGetsOnlyWhatChanged(t *testing.T) {
	cp, client := meshOfAAndB(t)
	ctx, reg := ctxT(t), cp.Registry()
	node := adstest.Node(identity.NodeID(client.ID, ""), map[string]any{"kind": "proxyless"})
	conn := dialAs(t, cp, client)
	first, err := conn.StreamDelta(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Subscribe(resource.EndpointType, "a.default", "b.default"); err != nil {
		t.Fatal(err)
	}
	resp, err := first.Recv()
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]string{}
	for _, r := range resp.GetResources() {
		held[r.GetName()] = r.GetVersion()
	}
	if len(held) != 2 {
		t.Fatalf("first delta response holds %v, want a and b", held)
	}
	if err := first.CloseSend(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the first stream is gone", func() bool { return len(proxyStatus(t, cp, node.GetId())) == 0 })

	if err := reg.Register(ctx, registry.Instance{ID: "b-2", Service: "b", Address: "127.0.0.1", Port: 9003}); err != nil {
		t.Fatal(err)
	}
	again, err := conn.StreamDelta(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Resume(resource.EndpointType, held, "a.default", "b.default"); err != nil {
		t.Fatal(err)
	}
	resp, err = again.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != "b.default" || len(resp.GetRemovedResources()) != 0 {
		t.Fatalf("after reconnecting with a and b held and b changed, the response holds %v, removes %v; want b only", resp.GetResources(), resp.GetRemovedResources())
	}
}

// meshOfAAndB starts a control plane with services a and b registered and
// joins a client of their namespace.
func meshOfAAndB(t *testing.T) (*meshtest.ControlPlane, *identity.Credentials) {
	t.Helper()
	cp := meshtest.NewEnv(t).StartControlPlane()
	for _, in := range []registry.Instance{
		{ID: "a-1", Service: "a", Address: "127.0.0.1", Port: 9001},
		{ID: "b-1", Service: "b", Address: "127.0.0.1", Port: 9002},
	} {
		if err := cp.Registry().Register(ctxT(t), in); err != nil {
			t.Fatal(err)
		}
	}
	return cp, cp.Join("default", "client")
}

// convergences is the count of the control plane's convergence histogram.
func convergences(t *testing.T, cp *meshtest.ControlPlane) int {
	t.Helper()
	for _, l := range strings.Split(metrics(t, cp), "\n") {
		if v, ok := strings.CutPrefix(l, "micromesh_xds_convergence_seconds_count "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("convergence count %q: %v", v, err)
			}
			return n
		}
	}
	return 0
}

type typeState struct {
	served, acked string
	nackedVersion string
	err           string
}

func proxyStatus(t *testing.T, cp *meshtest.ControlPlane, node string) map[string]typeState {
	t.Helper()
	resp, err := cp.AdminClient().ProxyStatus(ctxT(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]typeState{}
	for _, p := range resp.GetProxies() {
		if p.GetNodeId() != node {
			continue
		}
		for _, ts := range p.GetTypes() {
			out[ts.GetType()] = typeState{served: ts.GetServedVersion(), acked: ts.GetAckedVersion(),
				nackedVersion: ts.GetNackedVersion(), err: ts.GetNackError()}
		}
	}
	return out
}

func metrics(t *testing.T, cp *meshtest.ControlPlane) string {
	return get(t, "http://"+cp.Info.AdminAddress+"/metrics")
}

// A control plane that starts again gives the proxies that reconnect at
// once the mesh as its registry has it — not an empty one before the
// registry's first snapshot is in (an app calling out would be told its
// peers are not in the mesh).
func TestRestartedControlPlaneServesTheRegistrysMesh(t *testing.T) {
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	ctx := ctxT(t)
	if err := cp.Registry().Register(ctx, registry.Instance{ID: "hello-1", Service: "hello", Address: "127.0.0.1", Port: 9443, QUICPort: 9443}); err != nil {
		t.Fatal(err)
	}
	web := cp.Join("default", "web")
	addr := cp.Info.Address
	for round := range 5 {
		if err := cp.Stop(); err != nil {
			t.Fatal(err)
		}
		cp = env.StartControlPlaneAt(addr)
		s, err := dialAs(t, cp, web).StreamSotW(ctx, adstest.Node(identity.NodeID(web.ID, "web-1"), sidecarMeta("/var/lib/web/certs")))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Subscribe(resource.RouteType, "outbound"); err != nil {
			t.Fatal(err)
		}
		rds, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var rc route.RouteConfiguration
		if len(rds.GetResources()) != 1 || rds.GetResources()[0].UnmarshalTo(&rc) != nil {
			t.Fatalf("round %d: routes response %v", round, rds)
		}
		var hosts []string
		for _, vh := range rc.GetVirtualHosts() {
			hosts = append(hosts, vh.GetDomains()...)
		}
		if !slices.Contains(hosts, "hello") {
			t.Fatalf("round %d: the first routes after a restart have hosts %v, want hello's", round, hosts)
		}
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, what, 10*time.Second, 20*time.Millisecond, cond)
}

// Read your writes: once Register answers, a proxy that connects is
// configured with the new instance (the registry's change reaches the mesh
// debounced; a caller started at once — meshctl call --as right after
// meshctl run — had been told the service was not in the mesh).
func TestARegisteredInstanceIsInTheNextProxysConfig(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	caller := cp.Join("default", "caller")
	conn := dialAs(t, cp, caller)
	for i := range 12 {
		name := fmt.Sprintf("svc%d", i)
		reg := cp.RegistryClient(cp.Join("default", name))
		if _, err := reg.Register(ctxT(t), &registryv1.RegisterRequest{Instance: &registryv1.Instance{
			Id: name + "-1", Service: name, Namespace: "default", Address: "127.0.0.1", Port: 8443, QuicPort: 8443, Kind: "builtin",
		}}); err != nil {
			t.Fatal(err)
		}
		s, err := conn.StreamSotW(ctxT(t), adstest.Node(identity.NodeID(caller.ID, fmt.Sprint(i)), sidecarMeta("/c")))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Subscribe(resource.ClusterType); err != nil {
			t.Fatal(err)
		}
		cds, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if names, _ := adstest.Names(cds); !slices.Contains(names, name+".default") {
			t.Fatalf("registered %s, then a new proxy got clusters %v", name, names)
		}
	}
}
