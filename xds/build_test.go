package xds

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// testMesh: db (a TCP service behind a built-in sidecar), hello (three built-in sidecars serving QUIC, two zones, three
// versions split 90/10/0), world
// (one built-in, one Envoy: so TLS for everyone), grpcsrv (a proxyless
// server, one endpoint critical), store (a platform service), and billing in
// namespace prod (unreachable from default); outside the mesh payments
// (the system's roots), maps (its own CA, port 8443) and rates (gRPC) for default,
// one named hello (the mesh service wins) and one for prod.
func testMesh() *Mesh {
	return &Mesh{
		TrustDomain: "micromesh.local",
		Roots:       []byte("-----BEGIN CERTIFICATE-----\nTEST ROOT\n-----END CERTIFICATE-----\n"),
		Revocations: []byte("-----BEGIN X509 CRL-----\nTEST CRL\n-----END X509 CRL-----\n"),
		AccountKeys: []byte(`{"keys":[{"use":"sig","kty":"EC","kid":"test-key","crv":"P-256","alg":"ES256","x":"TEST-X","y":"TEST-Y"}]}`),
		Tracing:     &Tracing{SamplingPercent: 2.5},
		Services: []Service{
			{Name: "grpcsrv", Namespace: "default", Protocol: ProtocolGRPC, Policy: faultyPolicy(), Routes: []RoutePolicy{
				{Path: "/pkg.Grpc/Slow", Timeout: 30 * time.Second, PerTryTimeout: 5 * time.Second, Retries: 0}, // no fault of its own
			}, Endpoints: []Endpoint{
				{ID: "g1", Address: "10.0.0.5", Port: 7000, Kind: KindProxyless, Health: HealthPassing},
				{ID: "g2", Address: "10.0.0.6", Port: 7000, Kind: KindProxyless, Health: HealthCritical},
			}},
			{Name: "hello", Namespace: "default", Protocol: ProtocolGRPC, Policy: helloPolicy(), Routes: []RoutePolicy{
				{Path: "/pkg.Hello/Expensive", RateLimit: 2, RateLimitBurst: 1, AllowFrom: "batch.jobs", DenyFrom: "*.default", Scopes: "billing"}, // one more caller, and none of its namespace, on this path alone; an account with scope billing
			}, Split: []VersionWeight{{"v1", 90}, {"v2", 10}, {"v3", 0}}, SplitHeader: "x-version", Endpoints: []Endpoint{
				{ID: "h1", Address: "10.0.0.1", Port: 8443, QUICPort: 8443, Kind: KindBuiltin, Version: "v1", Health: HealthPassing, Region: "eu", Zone: "eu-1a", Weight: 2},
				{ID: "h2", Address: "10.0.0.2", Port: 8443, QUICPort: 8443, Kind: KindBuiltin, Version: "v2", Health: HealthWarning, Region: "eu", Zone: "eu-1b"},
				{ID: "h3", Address: "10.0.0.7", Port: 8443, QUICPort: 8443, Kind: KindBuiltin, Version: "v3", Health: HealthPassing, Region: "eu", Zone: "eu-1b"},
			}},
			{Name: "world", Namespace: "default", Protocol: ProtocolHTTP, Policy: Policy{
				Timeout: 2 * time.Second, PerTryTimeout: time.Second, Retries: 1, MaxConnections: 10, MaxPendingRequests: 10,
				MaxRequests: 100, MaxRetries: 2, Consecutive5xx: 3, BaseEjectionTime: 10 * time.Second, MaxEjectionPercent: 100, LoadBalancer: "round_robin",
				RateLimit: 50, RateLimitBurst: 100, AccessLog: true,
				Scopes: "*",                                                           // any account of default
				Mirror: Mirror{Service: "ghost", Namespace: "prod", Share: 1_000_000}, // not reachable from default: no mirror
			}, Routes: []RoutePolicy{
				{Path: "/reports/", Prefix: true, Timeout: time.Minute, PerTryTimeout: time.Second, Retries: 3, RetryOn: "5xx,429,resource-exhausted", Fault: Fault{Abort: 503, AbortShare: 1_000_000, Header: "x-chaos"},
					Mirror: Mirror{Service: "hello", Share: 250_000}, Scopes: "ops,reports"},
			}, Endpoints: []Endpoint{
				{ID: "w1", Address: "10.0.0.3", Port: 8443, QUICPort: 8443, Kind: KindBuiltin, Health: HealthPassing},
				{ID: "w2", Address: "10.0.0.4", Port: 15006, Kind: KindEnvoy, Health: HealthPassing},
			}},
			{Name: "db", Namespace: "default", Protocol: ProtocolTCP, Policy: DefaultPolicy, Endpoints: []Endpoint{
				{ID: "d1", Address: "10.0.0.8", Port: 8443, QUICPort: 8443, Kind: KindBuiltin, Health: HealthPassing},
			}},
			{Name: "billing", Namespace: "prod", Protocol: ProtocolGRPC, Endpoints: []Endpoint{
				{ID: "b1", Address: "10.1.0.1", Port: 8443, QUICPort: 8443, Kind: KindBuiltin, Health: HealthPassing},
			}},
			{Name: "store", Namespace: SystemNamespace, Protocol: ProtocolGRPC, Endpoints: []Endpoint{
				{ID: "s1", Address: "127.0.0.1", Port: 9443, QUICPort: 9443, Kind: KindBuiltin, Health: HealthPassing},
			}},
		},
		Externals: []External{
			{Name: "hello", Namespace: "default", Host: "hello.example", Port: 443},
			{Name: "maps", Namespace: "default", Host: "maps.example", Port: 8443, CA: []byte("-----BEGIN CERTIFICATE-----\nTEST MAPS CA\n-----END CERTIFICATE-----\n")},
			{Name: "payments", Namespace: "default", Host: "api.payments.example", Port: 443},
			{Name: "rates", Namespace: "default", Host: "rates.example", Port: 443, Protocol: ProtocolGRPC},
			{Name: "ledger", Namespace: "prod", Host: "ledger.example", Port: 443},
		},
	}
}

// faultyPolicy: the default with a delay in 12.5 % of the calls and
// UNAVAILABLE in 0.05 %.
func faultyPolicy() Policy {
	p := DefaultPolicy
	p.Fault = Fault{Delay: 50 * time.Millisecond, DelayShare: 125_000, AbortGRPC: 14, AbortShare: 500}
	return p
}

// helloPolicy: the default with a rate limit whose burst is under a
// second of it (so the bucket refills in fills of the burst).
func helloPolicy() Policy {
	p := DefaultPolicy
	p.RateLimit, p.RateLimitBurst = 20, 5
	// Callers of other namespaces it admits, and one of its own it refuses.
	p.AllowFrom, p.DenyFrom = "*.reports,orders.shop", "legacy.default"
	p.AccessLog = true
	return p
}

var testProxies = map[string]Proxy{
	"builtin": {NodeID: "spiffe://micromesh.local/ns/default/svc/hello~h1", Namespace: "default", Service: "hello", Kind: KindBuiltin,
		InboundPort: 8443, OutboundPort: 15001, AppPort: 8080, AppProtocol: ProtocolGRPC, CertDir: "/var/lib/micromesh/hello/certs"},
	"envoy": {NodeID: "spiffe://micromesh.local/ns/default/svc/world~w2", Namespace: "default", Service: "world", Kind: KindEnvoy,
		InboundPort: 15006, OutboundPort: 15001, AppPort: 8080, AppProtocol: ProtocolHTTP, CertDir: "/etc/envoy/certs",
		Upstreams: []Upstream{{Service: "db", Port: 15432}}},
	// db's own sidecar: its app takes tunnels; it reaches db itself (a
	// replica) and billing, which prod does not let default reach (the
	// listener is there, its cluster is not).
	"tcp": {NodeID: "spiffe://micromesh.local/ns/default/svc/db~d1", Namespace: "default", Service: "db", Kind: KindBuiltin,
		InboundPort: 8443, AppPort: 5432, AppProtocol: ProtocolTCP, CertDir: "/var/lib/micromesh/db/certs",
		Upstreams: []Upstream{{Service: "db", Port: 15432}, {Service: "billing", Namespace: "prod", Port: 15433}}},
	"proxyless": {NodeID: "spiffe://micromesh.local/ns/default/svc/client", Namespace: "default", Service: "client", Kind: KindProxyless},
	"platform": {NodeID: "spiffe://micromesh.local/ns/micromesh/svc/store~s1", Namespace: SystemNamespace, Service: "store", Kind: KindBuiltin,
		InboundPort: 9443, AppPort: 9080, AppProtocol: ProtocolGRPC, CertDir: "/var/lib/micromesh/store/certs"},
}

func TestGolden(t *testing.T) {
	for name, p := range testProxies {
		t.Run(name, func(t *testing.T) {
			r, err := Build(testMesh(), p)
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			golden(t, filepath.Join(name, "listeners.json"), r.Listeners)
			golden(t, filepath.Join(name, "routes.json"), r.Routes)
			golden(t, filepath.Join(name, "clusters.json"), r.Clusters)
			golden(t, filepath.Join(name, "endpoints.json"), r.Endpoints)
			golden(t, filepath.Join(name, "secrets.json"), r.Secrets)
		})
	}
}

// golden compares resources, as indented JSON, with testdata/file.
func golden[T proto.Message](t *testing.T, file string, resources []T) {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteString("[")
	for i, r := range resources {
		if i > 0 {
			buf.WriteString(",")
		}
		b, err := protojson.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
	}
	buf.WriteString("]")
	// protojson varies its whitespace on purpose; normalize it.
	var out bytes.Buffer
	if err := json.Indent(&out, buf.Bytes(), "", "  "); err != nil {
		t.Fatal(err)
	}
	out.WriteString("\n")
	path := filepath.Join("testdata", file)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("%s differs from the golden file (run with -update if the change is intended):\n%s", path, firstDiff(out.String(), string(want)))
	}
}

func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(g) && i < len(w); i++ {
		if g[i] != w[i] {
			return "line " + itoa(i+1) + ":\n got: " + g[i] + "\nwant: " + w[i]
		}
	}
	return "lengths differ"
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestBuildIsDeterministic(t *testing.T) {
	m := testMesh()
	// Shuffle the input order: the output must not follow it.
	m2 := testMesh()
	for i, j := 0, len(m2.Services)-1; i < j; i, j = i+1, j-1 {
		m2.Services[i], m2.Services[j] = m2.Services[j], m2.Services[i]
	}
	for name, p := range testProxies {
		a, err := Build(m, p)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Build(m2, p)
		if err != nil {
			t.Fatal(err)
		}
		if !equalResources(a, b) {
			t.Errorf("%s: output depends on the order of services", name)
		}
	}
}

func equalResources(a, b *Resources) bool {
	eq := func(x, y []proto.Message) bool {
		if len(x) != len(y) {
			return false
		}
		for i := range x {
			if !proto.Equal(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	return eq(msgs(a.Listeners), msgs(b.Listeners)) && eq(msgs(a.Routes), msgs(b.Routes)) &&
		eq(msgs(a.Clusters), msgs(b.Clusters)) && eq(msgs(a.Endpoints), msgs(b.Endpoints)) && eq(msgs(a.Secrets), msgs(b.Secrets))
}

func msgs[T proto.Message](in []T) []proto.Message {
	out := make([]proto.Message, len(in))
	for i, m := range in {
		out[i] = m
	}
	return out
}

func TestScoping(t *testing.T) {
	r, err := Build(testMesh(), testProxies["builtin"])
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range r.Clusters {
		names = append(names, c.Name)
	}
	if got := strings.Join(names, ","); got != "db.default,grpcsrv.default,hello.default,hello.default|v1,hello.default|v2,hello.default|v3,inbound|app,maps.default,payments.default,rates.default,store.micromesh,world.default" {
		t.Errorf("clusters of a default-namespace proxy: %s (billing.prod and prod's external ledger must not be reachable; the mesh's hello wins over the external one)", got)
	}
	var hosts []string
	for _, vh := range r.Routes[0].VirtualHosts {
		hosts = append(hosts, strings.Join(vh.Domains, "|"))
	}
	if got := strings.Join(hosts, ","); got != "db|db.default,grpcsrv|grpcsrv.default,hello|hello.default,world|world.default,store.micromesh,maps|maps.default,payments|payments.default,rates|rates.default" {
		t.Errorf("virtual hosts: %s", got)
	}
}

// A platform proxy (the API gateway's) reaches every service, whatever
// its namespace: every service admits the platform's identities.
func TestPlatformProxiesReachEveryService(t *testing.T) {
	gw := Proxy{NodeID: "gateway~0", Namespace: SystemNamespace, Service: "gateway", Kind: KindBuiltin, OutboundPort: 15001, CertDir: "/certs"}
	r, err := Build(testMesh(), gw)
	if err != nil {
		t.Fatal(err)
	}
	var hosts []string
	for _, vh := range r.Routes[0].VirtualHosts {
		hosts = append(hosts, strings.Join(vh.Domains, "|"))
	}
	got := strings.Join(hosts, ",")
	if !strings.Contains(got, "billing.prod") || !strings.Contains(got, "hello.default") || !strings.Contains(got, "store|store.micromesh") {
		t.Errorf("virtual hosts of the gateway's proxy: %s (want every namespace's services)", got)
	}
	if strings.Contains(got, "payments") || strings.Contains(got, "ledger") {
		t.Errorf("virtual hosts of the gateway's proxy: %s (want no external service: the mesh is no relay to the outside)", got)
	}
}

func TestTransportPerPair(t *testing.T) {
	m := testMesh()
	tests := []struct {
		proxy, service string
		want           string
	}{
		{"builtin", "hello", "envoy.transport_sockets.quic"},  // built-in ↔ built-in
		{"builtin", "world", "envoy.transport_sockets.tls"},   // one Envoy endpoint
		{"builtin", "grpcsrv", "envoy.transport_sockets.tls"}, // proxyless server
		{"envoy", "hello", "envoy.transport_sockets.tls"},     // Envoy caller
		{"proxyless", "hello", "envoy.transport_sockets.tls"}, // proxyless caller
		{"platform", "store", "envoy.transport_sockets.quic"},
	}
	for _, tc := range tests {
		r, err := Build(m, testProxies[tc.proxy])
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, c := range r.Clusters {
			if strings.HasPrefix(c.Name, tc.service+".") {
				found = true
				if got := c.TransportSocket.Name; got != tc.want {
					t.Errorf("%s → %s: %s, want %s", tc.proxy, tc.service, got, tc.want)
				}
			}
		}
		if !found && tc.proxy != "platform" {
			t.Errorf("%s has no cluster for %s", tc.proxy, tc.service)
		}
	}
}

func TestBuildRejectsIncompleteProxies(t *testing.T) {
	for name, p := range map[string]Proxy{
		"no namespace":       {NodeID: "x", Service: "a", Kind: KindBuiltin, OutboundPort: 1, CertDir: "/c"},
		"unknown kind":       {NodeID: "x", Namespace: "d", Service: "a", Kind: "nginx"},
		"no ports":           {NodeID: "x", Namespace: "d", Service: "a", Kind: KindEnvoy, CertDir: "/c"},
		"inbound, no app":    {NodeID: "x", Namespace: "d", Service: "a", Kind: KindEnvoy, InboundPort: 1, CertDir: "/c"},
		"no cert directory":  {NodeID: "x", Namespace: "d", Service: "a", Kind: KindBuiltin, OutboundPort: 1},
		"proxyless upstream": {NodeID: "x", Namespace: "d", Service: "a", Kind: KindProxyless, Upstreams: []Upstream{{Service: "db", Port: 2}}},
		"upstream on the app's port": {NodeID: "x", Namespace: "d", Service: "a", Kind: KindBuiltin, InboundPort: 1, AppPort: 2, CertDir: "/c",
			Upstreams: []Upstream{{Service: "db", Port: 2}}},
		"upstream, no port":       {NodeID: "x", Namespace: "d", Service: "a", Kind: KindBuiltin, CertDir: "/c", Upstreams: []Upstream{{Service: "db"}}},
		"one upstream twice":      {NodeID: "x", Namespace: "d", Service: "a", Kind: KindBuiltin, CertDir: "/c", Upstreams: []Upstream{{Service: "db", Port: 2}, {Service: "db", Namespace: "d", Port: 3}}},
		"two upstreams, one port": {NodeID: "x", Namespace: "d", Service: "a", Kind: KindBuiltin, CertDir: "/c", Upstreams: []Upstream{{Service: "db", Port: 2}, {Service: "cache", Port: 2}}},
	} {
		if _, err := Build(testMesh(), p); !errors.Is(err, ErrInvalidProxy) {
			t.Errorf("%s: %v, want ErrInvalidProxy", name, err)
		}
	}
}

func TestValidateCatchesDanglingReferences(t *testing.T) {
	r, err := Build(testMesh(), testProxies["proxyless"])
	if err != nil {
		t.Fatal(err)
	}
	r.Routes = nil // API listeners now point at a missing route
	if err := r.Validate(); err == nil || !strings.Contains(err.Error(), `refers to route "outbound"`) {
		t.Errorf("Validate = %v; want a missing-route error", err)
	}
	r, _ = Build(testMesh(), testProxies["builtin"])
	r.Endpoints = r.Endpoints[1:]
	if err := r.Validate(); err == nil || !strings.Contains(err.Error(), "has no endpoints") {
		t.Errorf("Validate = %v; want a missing-endpoints error", err)
	}
}

// A split TCP service's tunnel spreads connections over the versions with
// a share (their clusters in the shared resources), never one of weight 0.
func TestTunnelToASplitService(t *testing.T) {
	m := testMesh()
	for i := range m.Services {
		if s := &m.Services[i]; s.Name == "db" {
			s.Endpoints = append(s.Endpoints, Endpoint{ID: "d2", Address: "10.0.0.9", Port: 8443, QUICPort: 8443, Kind: KindBuiltin, Version: "v2", Health: HealthPassing})
			s.Endpoints[0].Version = "v1"
			s.Split = []VersionWeight{{"v1", 90}, {"v2", 10}, {"v3", 0}}
		}
	}
	r, err := Build(m, testProxies["tcp"])
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	var tp tcpproxyv3.TcpProxy
	for _, l := range r.Listeners {
		if l.Name == UpstreamListenerName("default", "db") {
			if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&tp); err != nil {
				t.Fatal(err)
			}
		}
	}
	var got []string
	for _, c := range tp.GetWeightedClusters().GetClusters() {
		got = append(got, fmt.Sprintf("%s=%d", c.GetName(), c.GetWeight()))
	}
	if strings.Join(got, ",") != "db.default|v1=90,db.default|v2=10" {
		t.Errorf("weighted clusters = %v", got)
	}
	clusters := map[string]bool{}
	for _, c := range r.Clusters {
		clusters[c.Name] = true
	}
	if !clusters["db.default|v1"] || !clusters["db.default|v2"] {
		t.Errorf("the versions' clusters are missing: %v", clusters)
	}
}
