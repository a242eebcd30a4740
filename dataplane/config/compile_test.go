package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math"
	"math/big"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	xdsmatcher "github.com/cncf/xds/go/xds/type/matcher/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	mutationv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbac "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	commonratelimit "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	rbacfilter "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	exprpb "google.golang.org/genproto/googleapis/api/expr/v1alpha1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/micromesh/micromesh/dataplane/xdswire"
	"github.com/micromesh/micromesh/dataplane/xdswire/xdswiretest"
	"github.com/micromesh/micromesh/xds"
)

// meshFor builds what the control plane serves a built-in sidecar of
// service svc in namespace ns: the dataplane must take all of it.
func meshFor(t *testing.T, ns, svc string) envoyResources {
	t.Helper()
	m := &xds.Mesh{TrustDomain: "micromesh.local", Roots: []byte("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"), Services: []xds.Service{
		{Name: "hello", Namespace: "default", Protocol: xds.ProtocolGRPC, Endpoints: []xds.Endpoint{
			{ID: "h1", Address: "10.0.0.1", Port: 8443, QUICPort: 8443, Kind: xds.KindBuiltin, Health: xds.HealthPassing, Zone: "a"},
			{ID: "h2", Address: "10.0.0.2", Port: 8443, QUICPort: 8443, Kind: xds.KindBuiltin, Health: xds.HealthCritical, Zone: "b"},
		}},
		{Name: "world", Namespace: "default", Protocol: xds.ProtocolHTTP, Endpoints: []xds.Endpoint{
			{ID: "w1", Address: "10.0.0.3", Port: 15006, Kind: xds.KindEnvoy, Health: xds.HealthPassing},
		}},
		{Name: "store", Namespace: xds.SystemNamespace, Protocol: xds.ProtocolGRPC, Endpoints: []xds.Endpoint{
			{ID: "s1", Address: "10.0.0.9", Port: 9443, QUICPort: 9443, Kind: xds.KindBuiltin, Health: xds.HealthPassing},
		}},
	}}
	return sidecarOf(t, m, ns, svc)
}

func TestCompileWhatTheControlPlaneServes(t *testing.T) {
	c, err := Compile(meshFor(t, "default", "client").wire(t))
	if err != nil {
		t.Fatal(err)
	}
	if c.Outbound == nil || c.Outbound.Address != "127.0.0.1:15001" || c.Outbound.Route != "outbound" {
		t.Fatalf("outbound = %+v", c.Outbound)
	}
	if c.Inbound == nil || c.Inbound.Address != "0.0.0.0:18443" || c.Inbound.UDP || !c.Inbound.RequireClientCert {
		t.Fatalf("inbound = %+v", c.Inbound)
	}
	if c.InboundQUIC == nil || !c.InboundQUIC.UDP || strings.Join(c.InboundQUIC.ALPN, ",") != "h3" {
		t.Fatalf("inbound QUIC = %+v", c.InboundQUIC)
	}
	rt := c.Routes["outbound"]
	for host, cl := range map[string]string{"hello": "hello.default", "hello.default": "hello.default", "world": "world.default", "store.micromesh": "store.micromesh"} {
		if r := lookup(rt, host); r == nil || r.Cluster != cl {
			t.Errorf("route for %q = %+v, want cluster %s", host, r, cl)
		}
	}
	if r := lookup(rt, "billing"); r != nil {
		t.Errorf("an unknown host routes to %+v", r)
	}
	if r := lookup(rt, "hello"); r.Timeout != 0 || r.Retry == nil || !r.Retry.On.GRPC(14) || r.Retry.NumRetries != 2 {
		t.Errorf("hello route = %+v / %+v: a gRPC route has no timeout and retries UNAVAILABLE", r, r.Retry)
	}
	if r := lookup(rt, "world"); r.Timeout == 0 {
		t.Error("an HTTP route has no timeout")
	}
	hello := c.Clusters["hello.default"]
	if hello.Transport != TransportQUIC || hello.SAN != "spiffe://micromesh.local/ns/default/svc/hello" || !hello.LeastRequest || hello.Outlier == nil {
		t.Errorf("hello cluster = %+v", hello)
	}
	if len(hello.Endpoints) != 2 || !hello.Endpoints[0].Healthy || hello.Endpoints[1].Healthy {
		t.Errorf("hello endpoints (one healthy, one critical) = %+v", hello.Endpoints)
	}
	if w := c.Clusters["world.default"]; w.Transport != TransportTLS || w.Endpoints[0].Address != "10.0.0.3:15006" {
		t.Errorf("world cluster = %+v", w)
	}
	if app := c.Clusters["inbound|app"]; app.Transport != TransportPlain || !app.HTTP2 || app.Endpoints[0].Address != "127.0.0.1:8080" {
		t.Errorf("app cluster = %+v", app)
	}
	// The app cluster sets no circuit breakers: Envoy's defaults apply.
	if got := c.Clusters["inbound|app"].Limits; got != (Limits{MaxConnections: 1024, MaxPendingRequests: 1024, MaxRequests: 1024, MaxRetries: 3}) {
		t.Errorf("app cluster limits = %+v, want Envoy's defaults", got)
	}
	if got, want := hello.Limits, (Limits{MaxConnections: xds.DefaultPolicy.MaxConnections, MaxPendingRequests: xds.DefaultPolicy.MaxPendingRequests,
		MaxRequests: xds.DefaultPolicy.MaxRequests, MaxRetries: xds.DefaultPolicy.MaxRetries}); got != want {
		t.Errorf("hello cluster limits = %+v, want the service policy's %+v", got, want)
	}
	if c.Certificate == nil || c.Certificate.Chain != "/certs/cert.pem" || c.Certificate.Key != "/certs/key.pem" || len(c.Roots) == 0 {
		t.Errorf("secrets: %+v, %d bytes of roots", c.Certificate, len(c.Roots))
	}
	in := lookup(c.Inbound.Route, "anything")
	if in == nil || in.Cluster != "inbound|app" || len(in.HeadersToRemove) != 1 || in.HeadersToAdd[0].Value != PeerURISAN {
		t.Errorf("inbound route = %+v", in)
	}
}

func TestCompiledRBACIsTheDefaultRules(t *testing.T) {
	req := func(principal string) Request { return Request{Principal: principal, Method: "POST", Path: "/x"} }
	c, err := Compile(meshFor(t, "default", "client").wire(t))
	if err != nil {
		t.Fatal(err)
	}
	for principal, want := range map[string]bool{
		"spiffe://micromesh.local/ns/default/svc/web":  true,
		"spiffe://micromesh.local/ns/prod/svc/web":     false,
		"spiffe://micromesh.local/ns/defaultx/svc/web": false,
		"spiffe://other.example/ns/default/svc/web":    false,
		"": false,
		// The platform's identities (CLI, gateway, runtime) reach every namespace.
		"spiffe://micromesh.local/ns/micromesh/svc/meshctl": true,
		"spiffe://micromesh.local/ns/micromeshx/svc/web":    false,
		"spiffe://other.example/ns/micromesh/svc/meshctl":   false,
	} {
		if got, _ := c.Inbound.RBAC.Allowed(req(principal)); got != want {
			t.Errorf("default namespace admits %q: %v, want %v", principal, got, want)
		}
	}
	platform, err := Compile(meshFor(t, xds.SystemNamespace, "store").wire(t))
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := platform.Inbound.RBAC.Allowed(req("spiffe://micromesh.local/ns/prod/svc/web")); !ok {
		t.Error("a platform service refuses an identity of the trust domain")
	}
}

func TestCompileRefusesWhatItCannotHonour(t *testing.T) {
	refusals(t, []refusal{
		{"two filter chains", func(r *envoyResources) {
			l := findListener(r, "outbound")
			l.FilterChains = append(l.FilterChains, proto.Clone(l.FilterChains[0]).(*listener.FilterChain))
		}, "filter chains"},
		{"plaintext listener off loopback", func(r *envoyResources) {
			findListener(r, "outbound").Address.GetSocketAddress().Address = "0.0.0.0"
		}, "loopback"},
		{"ring hash", func(r *envoyResources) { r.Clusters[0].LbPolicy = cluster.Cluster_RING_HASH }, "load-balancing policy"},
		{"unknown HTTP filter", func(r *envoyResources) {
			l := findListener(r, "inbound")
			m := &hcm.HttpConnectionManager{}
			mustUnpack(t, l.FilterChains[0].Filters[0].GetTypedConfig(), m)
			m.HttpFilters = append([]*hcm.HttpFilter{{Name: "envoy.filters.http.lua", ConfigType: luaConfig()}}, m.HttpFilters...)
			l.FilterChains[0].Filters[0].ConfigType = typedConfig(m)
		}, "not supported"},
		{"inbound without client certificates", func(r *envoyResources) {
			setRequireClientCert(t, findListener(r, "inbound"), false)
		}, "require client certificates"},
		// Rules the proxy cannot evaluate are refused, never read as if
		// they were not there (which would admit more than they allow).
		{"RBAC policy with a CEL condition", func(r *envoyResources) {
			mutateRBAC(t, findListener(r, "inbound"), func(f *rbacfilter.RBAC) {
				for _, p := range f.Rules.Policies {
					p.Condition = &exprpb.Expr{}
				}
			})
		}, "condition is not supported"},
		{"RBAC matcher instead of rules", func(r *envoyResources) {
			mutateRBAC(t, findListener(r, "inbound"), func(f *rbacfilter.RBAC) { f.Matcher = &xdsmatcher.Matcher{} })
		}, "RBAC matcher is not supported"},
		{"RBAC permission on a destination port", func(r *envoyResources) {
			mutateRBAC(t, findListener(r, "inbound"), func(f *rbacfilter.RBAC) {
				for _, p := range f.Rules.Policies {
					p.Permissions = []*rbac.Permission{{Rule: &rbac.Permission_DestinationPort{DestinationPort: 80}}}
				}
			})
		}, "permission destination_port is not supported"},
		{"custom cluster type", func(r *envoyResources) {
			r.Clusters[0].ClusterDiscoveryType = &cluster.Cluster_ClusterType{ClusterType: &cluster.Cluster_CustomClusterType{Name: "x"}}
		}, "cluster_type is not supported"},
		{"redirect route", func(r *envoyResources) {
			r.Routes[0].VirtualHosts[0].Routes[0].Action = &route.Route_Redirect{Redirect: &route.RedirectAction{}}
		}, "only routes to a named cluster"},
		{"route matching on the TLS context", func(r *envoyResources) {
			r.Routes[0].VirtualHosts[0].Routes[0].Match.TlsContext = &route.RouteMatch_TlsContextMatchOptions{Presented: wrapperspb.Bool(true)}
		}, "matching on tls_context is not supported"},
		{"a query parameter matcher without a name", func(r *envoyResources) {
			r.Routes[0].VirtualHosts[0].Routes[0].Match.QueryParameters = []*route.QueryParameterMatcher{{}}
		}, "needs a name"},
		{"route matching on :path as a header", func(r *envoyResources) {
			r.Routes[0].VirtualHosts[0].Routes[0].Match.Headers = []*route.HeaderMatcher{{Name: ":path",
				HeaderMatchSpecifier: &route.HeaderMatcher_PresentMatch{PresentMatch: true}}}
		}, "header matcher on :path is not supported"},
		{"route header matcher on :scheme", func(r *envoyResources) {
			r.Routes[0].VirtualHosts[0].Routes[0].Match.Headers = []*route.HeaderMatcher{{Name: ":scheme"}}
		}, "header matcher on :scheme is not supported"},
		{"route matching by a regex that does not compile", func(r *envoyResources) {
			r.Routes[0].VirtualHosts[0].Routes[0].Match.PathSpecifier = &route.RouteMatch_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: "/(a"}}
		}, `safe_regex "/(a"`},
		{"a path-separated prefix ending in /", func(r *envoyResources) {
			r.Routes[0].VirtualHosts[0].Routes[0].Match.PathSpecifier = &route.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api/"}
		}, "must start with / and hold no ?, # or trailing /"},
		{"route matching by a path match policy", func(r *envoyResources) {
			r.Routes[0].VirtualHosts[0].Routes[0].Match.PathSpecifier = &route.RouteMatch_PathMatchPolicy{PathMatchPolicy: &core.TypedExtensionConfig{Name: "uri_template"}}
		}, "path match path_match_policy is not supported"},
		{"virtual host without routes", func(r *envoyResources) { r.Routes[0].VirtualHosts[0].Routes = nil }, "has no routes"},
		{"success-rate outlier detection", func(r *envoyResources) {
			r.Clusters[0].OutlierDetection.EnforcingSuccessRate = wrapperspb.UInt32(100)
		}, "enforcing_success_rate is not supported"},
		{"failure-percentage outlier detection", func(r *envoyResources) {
			r.Clusters[0].OutlierDetection.EnforcingFailurePercentage = wrapperspb.UInt32(10)
		}, "enforcing_failure_percentage is not supported"},
		{"client certificates forwarded", func(r *envoyResources) {
			mutateHCM(t, findListener(r, "inbound"), func(m *hcm.HttpConnectionManager) {
				m.ForwardClientCertDetails = hcm.HttpConnectionManager_APPEND_FORWARD
			})
		}, "forward_client_cert_details APPEND_FORWARD is not supported"},
		{"slashes merged", func(r *envoyResources) {
			mutateHCM(t, findListener(r, "inbound"), func(m *hcm.HttpConnectionManager) { m.MergeSlashes = true })
		}, "merge_slashes is not supported"},
		{"websocket upgrades", func(r *envoyResources) {
			mutateHCM(t, findListener(r, "inbound"), func(m *hcm.HttpConnectionManager) {
				m.UpgradeConfigs = []*hcm.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}}
			})
		}, `upgrade_configs.upgrade_type "websocket" is not supported`},
		{"CONNECT on the outbound listener", func(r *envoyResources) {
			mutateHCM(t, findListener(r, "outbound"), func(m *hcm.HttpConnectionManager) {
				m.UpgradeConfigs = []*hcm.HttpConnectionManager_UpgradeConfig{{UpgradeType: "CONNECT"}}
			})
		}, "CONNECT on the outbound listener is not supported"},
		{"response headers to add", func(r *envoyResources) {
			r.Routes[0].VirtualHosts[0].ResponseHeadersToAdd = []*core.HeaderValueOption{{Header: &core.HeaderValue{Key: "x", Value: "y"}}}
		}, "response_headers_to_add is not supported"},
		{"a host-wide retry policy", func(r *envoyResources) {
			r.Routes[0].VirtualHosts[0].RetryPolicy = &route.RetryPolicy{RetryOn: "5xx"}
		}, "retry_policy is not supported"},
		{"per-route filter config", func(r *envoyResources) {
			r.Routes[0].VirtualHosts[0].Routes[0].TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.rbac": mustAny(t, &rbacfilter.RBACPerRoute{})}
		}, `typed_per_filter_config "envoy.filters.http.rbac" (type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute) is not supported (only a local rate limit's or a fault's)`},
		{"a route's rate limit without its bucket", func(r *envoyResources) {
			r.Routes[0].VirtualHosts[0].Routes[0].TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.local_ratelimit": mustAny(t, &ratelimitv3.LocalRateLimit{StatPrefix: "x", FilterEnabled: percent(100)})}
		}, "needs a token bucket"},
		{"prefix rewrite", func(r *envoyResources) {
			r.Routes[0].VirtualHosts[0].Routes[0].GetRoute().PrefixRewrite = "/v2/"
		}, "prefix_rewrite is not supported"},
		{"host rewrite from a header", func(r *envoyResources) {
			r.Routes[0].VirtualHosts[0].Routes[0].GetRoute().HostRewriteSpecifier = &route.RouteAction_HostRewriteHeader{HostRewriteHeader: "x-host"}
		}, "host_rewrite_header is not supported"},
		{"grpc-timeout enforced by the proxy", func(r *envoyResources) {
			r.Routes[0].VirtualHosts[0].Routes[0].GetRoute().MaxStreamDuration = &route.RouteAction_MaxStreamDuration{GrpcTimeoutHeaderMax: durationpb.New(0)}
		}, "grpc_timeout_header_max/offset is not supported"},
		{"least request over three choices", func(r *envoyResources) {
			r.Clusters[0].LbConfig = &cluster.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &cluster.Cluster_LeastRequestLbConfig{ChoiceCount: wrapperspb.UInt32(3)}}
		}, "choice_count 3 is not supported"},
		{"panic threshold past 100 %", func(r *envoyResources) {
			r.Clusters[0].CommonLbConfig = &cluster.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 150}}
		}, "healthy_panic_threshold 150 is not a percentage"},
		{"a timeout from the caller's header", func(r *envoyResources) {
			mutateHCM(t, findListener(r, "inbound"), func(m *hcm.HttpConnectionManager) {
				m.HttpFilters[len(m.HttpFilters)-1].ConfigType = &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{RespectExpectedRqTimeout: true})}
			})
		}, "router respect_expected_rq_timeout is not supported"},
		{"upstream access logs", func(r *envoyResources) {
			mutateHCM(t, findListener(r, "outbound"), func(m *hcm.HttpConnectionManager) {
				m.HttpFilters[len(m.HttpFilters)-1].ConfigType = &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{UpstreamLog: []*accesslogv3.AccessLog{{Name: "x"}}})}
			})
		}, "router upstream_log is not supported"},
		{"listener filters", func(r *envoyResources) {
			findListener(r, "inbound").ListenerFilters = []*listener.ListenerFilter{{Name: "envoy.filters.listener.original_dst"}}
		}, "listener_filters is not supported"},
		{"a listener not bound", func(r *envoyResources) {
			findListener(r, "outbound").BindToPort = wrapperspb.Bool(false)
		}, "bind_to_port false is not supported"},
		{"original destinations", func(r *envoyResources) {
			findListener(r, "outbound").UseOriginalDst = wrapperspb.Bool(true)
		}, "use_original_dst is not supported"},
		{"more addresses", func(r *envoyResources) {
			findListener(r, "inbound").AdditionalAddresses = []*listener.AdditionalAddress{{Address: &core.Address{}}}
		}, "additional_addresses is not supported"},
		{"headers added to every request", func(r *envoyResources) {
			r.Routes[0].RequestHeadersToAdd = []*core.HeaderValueOption{{Header: &core.HeaderValue{Key: "x", Value: "y"}}}
		}, "request_headers_to_add is not supported"},
		{"headers only internal callers may send", func(r *envoyResources) {
			r.Routes[0].InternalOnlyHeaders = []string{"x-internal"}
		}, "internal_only_headers is not supported"},
		{"the peer's address taken as the client's", func(r *envoyResources) {
			mutateHCM(t, findListener(r, "outbound"), func(m *hcm.HttpConnectionManager) { m.UseRemoteAddress = wrapperspb.Bool(true) })
		}, "use_remote_address is not supported"},
		{"request IDs in answers", func(r *envoyResources) {
			mutateHCM(t, findListener(r, "inbound"), func(m *hcm.HttpConnectionManager) { m.AlwaysSetRequestIdInResponse = true })
		}, "always_set_request_id_in_response is not supported"},
		{"a Via header", func(r *envoyResources) {
			mutateHCM(t, findListener(r, "outbound"), func(m *hcm.HttpConnectionManager) { m.Via = "mesh" })
		}, "via is not supported"},
		{"Envoy's user-agent headers", func(r *envoyResources) {
			mutateHCM(t, findListener(r, "outbound"), func(m *hcm.HttpConnectionManager) { m.AddUserAgent = wrapperspb.Bool(true) })
		}, "add_user_agent is not supported"},
		{"5xx ejection enforced half the time", func(r *envoyResources) {
			r.Clusters[0].OutlierDetection.EnforcingConsecutive_5Xx = wrapperspb.UInt32(50)
		}, "enforcing_consecutive_5xx of 50% is not supported"},
	})
}

func TestMissingReferencesAreWarming(t *testing.T) {
	r := meshFor(t, "default", "client")
	r.Routes, r.Endpoints = nil, nil // not arrived yet
	c, err := Compile(r.wire(t))
	if err != nil {
		t.Fatalf("missing RDS and EDS must not fail the compile: %v", err)
	}
	if c.Routes["outbound"] != nil || len(c.Clusters["hello.default"].Endpoints) != 0 {
		t.Error("resources appeared from nowhere")
	}
	// Missing names each of them, so the proxy holds calls until they come.
	missing := strings.Join(c.Missing(), "; ")
	for _, want := range []string{"route configuration outbound", "endpoints of hello.default", "endpoints of world.default"} {
		if !strings.Contains(missing, want) {
			t.Errorf("Missing() = %q, want it to name %q", missing, want)
		}
	}
	// Everything arrived, an empty endpoints resource included: warm.
	full := meshFor(t, "default", "client")
	full.Endpoints[0].Endpoints = nil // arrived, and empty
	c, err = Compile(full.wire(t))
	if err != nil {
		t.Fatal(err)
	}
	if m := c.Missing(); len(m) != 0 {
		t.Errorf("a complete config misses %v", m)
	}
	// A route to a cluster that is not there (its removal came first).
	gone := meshFor(t, "default", "client")
	for i, cl := range gone.Clusters {
		if cl.Name == "world.default" {
			gone.Clusters = append(gone.Clusters[:i], gone.Clusters[i+1:]...)
			break
		}
	}
	if c, err = Compile(gone.wire(t)); err != nil {
		t.Fatal(err)
	}
	if m := strings.Join(c.Missing(), "; "); m != "cluster world.default" {
		t.Errorf("routes to a cluster that is not there: Missing() = %q", m)
	}
}

func findListener(r *envoyResources, name string) *listener.Listener {
	for _, l := range r.Listeners {
		if l.Name == name {
			return l
		}
	}
	panic("no listener " + name)
}

// Thresholds a cluster leaves unset are Envoy's defaults; those it sets
// are kept, 0 included.
func TestCircuitBreakerThresholdsDefaultAsEnvoys(t *testing.T) {
	cl := &cluster.Cluster{
		Name:                 "app",
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
		CircuitBreakers: &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{
			MaxRequests: wrapperspb.UInt32(5), MaxRetries: wrapperspb.UInt32(0),
		}}},
	}
	c, err := Compile(envoyResources{Clusters: []*cluster.Cluster{cl}}.wire(t))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Clusters["app"].Limits, (Limits{MaxConnections: 1024, MaxPendingRequests: 1024, MaxRequests: 5, MaxRetries: 0}); got != want {
		t.Fatalf("limits = %+v, want %+v", got, want)
	}
}

// mutateHCM changes the HTTP connection manager of l's first filter chain.
func mutateHCM(t *testing.T, l *listener.Listener, change func(*hcm.HttpConnectionManager)) {
	t.Helper()
	m := &hcm.HttpConnectionManager{}
	mustUnpack(t, l.FilterChains[0].Filters[0].GetTypedConfig(), m)
	change(m)
	l.FilterChains[0].Filters[0].ConfigType = typedConfig(m)
}

// TestHCMDefaultsAreAccepted: the connection manager's fields at their
// defaults (SANITIZE, no merging, KEEP_UNCHANGED) are not refusals.
func TestHCMDefaultsAreAccepted(t *testing.T) {
	r := meshFor(t, "default", "client")
	mutateHCM(t, findListener(&r, "outbound"), func(m *hcm.HttpConnectionManager) {
		m.HttpFilters[len(m.HttpFilters)-1].ConfigType = &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{
			DynamicStats: wrapperspb.Bool(false), SuppressEnvoyHeaders: true, SuppressGrpcRequestFailureCodeStats: true})}
	})
	findListener(&r, "inbound").BindToPort = wrapperspb.Bool(true)
	findListener(&r, "inbound").Transparent = wrapperspb.Bool(false)
	mutateHCM(t, findListener(&r, "inbound"), func(m *hcm.HttpConnectionManager) {
		m.ForwardClientCertDetails = hcm.HttpConnectionManager_SANITIZE
		m.MergeSlashes = false
		m.PathWithEscapedSlashesAction = hcm.HttpConnectionManager_KEEP_UNCHANGED
		m.NormalizePath = wrapperspb.Bool(true) // dot segments are refused by the proxy instead
		m.UseRemoteAddress = wrapperspb.Bool(false)
		m.AddUserAgent = wrapperspb.Bool(false)
		m.GenerateRequestId = wrapperspb.Bool(true)
		m.PreserveExternalRequestId = true // about edge requests, which need use_remote_address
	})
	if _, err := Compile(r.wire(t)); err != nil {
		t.Fatal(err)
	}
	mutateHCM(t, findListener(&r, "inbound"), func(m *hcm.HttpConnectionManager) {
		m.PathWithEscapedSlashesAction = hcm.HttpConnectionManager_UNESCAPE_AND_FORWARD
	})
	if _, err := Compile(r.wire(t)); err == nil || !strings.Contains(err.Error(), "path_with_escaped_slashes_action is not supported") {
		t.Errorf("escaped slashes unescaped: %v", err)
	}
}

// TestRequestIDsAsEnvoyGeneratesThem: both kinds of listener set
// x-request-id where it is missing unless generate_request_id says false.
func TestRequestIDsAsEnvoyGeneratesThem(t *testing.T) {
	r := meshFor(t, "default", "client")
	c, err := Compile(r.wire(t))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Outbound.RequestID || !c.Inbound.RequestID || !c.InboundQUIC.RequestID {
		t.Fatalf("by default: outbound %v, inbound %v, QUIC inbound %v; want request IDs on all", c.Outbound.RequestID, c.Inbound.RequestID, c.InboundQUIC.RequestID)
	}
	for _, name := range []string{"outbound", "inbound", "inbound-quic"} {
		mutateHCM(t, findListener(&r, name), func(m *hcm.HttpConnectionManager) { m.GenerateRequestId = wrapperspb.Bool(false) })
	}
	if c, err = Compile(r.wire(t)); err != nil {
		t.Fatal(err)
	}
	if c.Outbound.RequestID || c.Inbound.RequestID || c.InboundQUIC.RequestID {
		t.Fatalf("generate_request_id false: outbound %v, inbound %v, QUIC inbound %v", c.Outbound.RequestID, c.Inbound.RequestID, c.InboundQUIC.RequestID)
	}
}

// TestRoutesMatchThePathInOrder: a host's routes are tried in order, the
// first whose path match takes the request wins, as in Envoy.
func TestRoutesMatchThePathInOrder(t *testing.T) {
	r := meshFor(t, "default", "client")
	var vh *route.VirtualHost
	for _, v := range r.Routes[0].VirtualHosts {
		if v.Name == "world.default" {
			vh = v
		}
	}
	to := func(cluster string) *route.Route_Route {
		return &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: cluster}, Timeout: durationpb.New(time.Second)}}
	}
	vh.Routes = append([]*route.Route{
		{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Path{Path: "/pkg.Greeter/Slow"}}, Action: to("exact")},
		{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/Admin/"}, CaseSensitive: wrapperspb.Bool(false)}, Action: to("admin")},
		{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/pkg.Greeter/"}}, Action: to("greeter")},
	}, vh.Routes...)
	c, err := Compile(r.wire(t))
	if err != nil {
		t.Fatal(err)
	}
	rt := c.Routes["outbound"]
	for path, want := range map[string]string{
		"/pkg.Greeter/Slow": "exact", "/pkg.Greeter/SlowToo": "greeter", "/pkg.greeter/slow": "world.default",
		"/admin/users": "admin", "/ADMIN/": "admin", "/admin": "world.default", "/": "world.default", "*": "",
	} {
		got, known := rt.Lookup("world", path)
		if !known || (got == nil) != (want == "") || got != nil && got.Cluster != want {
			t.Errorf("Lookup(world, %q) = %+v, %v; want cluster %q", path, got, known, want)
		}
	}
	if got, _ := rt.Lookup("world", "/pkg.Greeter/Slow"); got.Timeout != time.Second {
		t.Errorf("the exact route's timeout = %v, want its own 1s", got.Timeout)
	}
	// max_stream_duration bounds a request as the timeout does: the sooner.
	vh.Routes[0].GetRoute().MaxStreamDuration = &route.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(300 * time.Millisecond)}
	if c, err = Compile(r.wire(t)); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Routes["outbound"].Lookup("world", "/pkg.Greeter/Slow"); got.Timeout != 300*time.Millisecond {
		t.Errorf("timeout 1s, max_stream_duration 300ms: %v, want 300ms", got.Timeout)
	}
	if _, known := rt.Lookup("billing", "/"); known {
		t.Error("an unknown host is known")
	}
}

// TestPanicThresholdDefaultsAsEnvoys: 50 % unless the cluster says.
func TestPanicThresholdDefaultsAsEnvoys(t *testing.T) {
	r := meshFor(t, "default", "client")
	name := r.Clusters[0].Name
	c, err := Compile(r.wire(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Clusters[name].PanicThreshold; got != 50 {
		t.Errorf("panic threshold unset: %v, want Envoy's 50", got)
	}
	r.Clusters[0].CommonLbConfig = &cluster.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}}
	if c, err = Compile(r.wire(t)); err != nil || c.Clusters[name].PanicThreshold != 0 {
		t.Errorf("panic threshold 0: %v, %v", c.Clusters[name].PanicThreshold, err)
	}
}

// TestOutlierDetectionAsEnvoys: enforcement off turns a detector off;
// local-origin failures are counted apart only when split.
func TestOutlierDetectionAsEnvoys(t *testing.T) {
	r := meshFor(t, "default", "client")
	od := r.Clusters[0].OutlierDetection
	c, err := Compile(r.wire(t))
	if err != nil {
		t.Fatal(err)
	}
	if o := c.Clusters[r.Clusters[0].Name].Outlier; !o.Split || o.Consecutive5xx == 0 || o.ConsecutiveLocalFailure == 0 {
		t.Fatalf("what the control plane sends: %+v", o)
	}
	od.EnforcingConsecutive_5Xx = wrapperspb.UInt32(0)
	od.SplitExternalLocalOriginErrors = false
	od.EnforcingSuccessRate = nil // Envoy's default: on; not run here (documented)
	c, err = Compile(r.wire(t))
	if err != nil {
		t.Fatal(err)
	}
	if o := c.Clusters[r.Clusters[0].Name].Outlier; o.Split || o.Consecutive5xx != 0 || o.ConsecutiveLocalFailure != 0 {
		t.Errorf("5xx enforcement off, not split: %+v; want no detector on", o)
	}
}

// lookup is the route of host for the path "/".
func lookup(t *RouteTable, host string) *Route {
	r, _ := t.Lookup(host, "/")
	return r
}

// TestRetryConditionsAsEnvoys: the retry conditions mean what they mean to
// Envoy's router; names Envoy does not know (it ignores them) are refused.
func TestRetryConditionsAsEnvoys(t *testing.T) {
	// decode reads a retry policy off the wire, inside the route
	// configuration that carries it.
	decode := func(rp *route.RetryPolicy) *xdswire.RetryPolicy {
		rc := &route.RouteConfiguration{Name: "r", VirtualHosts: []*route.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*route.Route{{
			Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
			Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "c"}, RetryPolicy: rp}},
		}}}}}
		return xdswiretest.Decode[*xdswire.RouteConfiguration](t, rc).VirtualHosts[0].Routes[0].Route.RetryPolicy
	}
	compile := func(on string, codes ...uint32) (*RetryPolicy, error) {
		return compileRetry(decode(&route.RetryPolicy{RetryOn: on, RetriableStatusCodes: codes}))
	}
	for _, tc := range []struct {
		on      string
		codes   []uint32
		retried []int // of 500, 502, 503, 504, 429
		reset   bool
	}{
		{"5xx", nil, []int{500, 502, 503, 504}, true},
		{"gateway-error", nil, []int{502, 503, 504}, true},
		{"retriable-status-codes", []uint32{503, 429}, []int{503, 429}, false},
		{"connect-failure,reset,retriable-status-codes,unavailable", []uint32{503}, []int{503}, true},
		{"connect-failure", nil, nil, false},
		{"unavailable", []uint32{503}, nil, false},                                 // codes without the condition are not retried
		{"retriable-4xx,retriable-status-codes", []uint32{429}, []int{429}, false}, // 409 too, below
	} {
		rp, err := compile(tc.on, tc.codes...)
		if err != nil {
			t.Fatalf("%s: %v", tc.on, err)
		}
		var got []int
		for _, code := range []int{500, 502, 503, 504, 429} {
			if rp.On.Status(code) {
				got = append(got, code)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.retried) || rp.On.Reset != tc.reset {
			t.Errorf("%s %v: retries statuses %v and resets %v; want %v and %v", tc.on, tc.codes, got, rp.On.Reset, tc.retried, tc.reset)
		}
	}
	if rp, err := compile("retriable-4xx"); err != nil || !rp.On.Status(409) || rp.On.Status(400) {
		t.Errorf("retriable-4xx: %+v, %v; want 409 alone retried", rp, err)
	}
	// gRPC statuses, by Envoy's names.
	rp, err := compile("cancelled,deadline-exceeded,internal,resource-exhausted,unavailable")
	if err != nil {
		t.Fatal(err)
	}
	var grpc []int
	for code := range 17 {
		if rp.On.GRPC(code) {
			grpc = append(grpc, code)
		}
	}
	if fmt.Sprint(grpc) != "[1 4 8 13 14]" {
		t.Errorf("gRPC statuses retried: %v, want [1 4 8 13 14]", grpc)
	}
	for on, mention := range map[string]string{
		"503":             `retry condition "503" is not supported`,
		"refused-stream":  `"refused-stream" is not supported`,
		"5xx,unavailabel": `"unavailabel" is not supported`,
	} {
		if _, err := compile(on); err == nil || !strings.Contains(err.Error(), mention) {
			t.Errorf("%s: %v, want an error mentioning %q", on, err, mention)
		}
	}
	wire := decode(&route.RetryPolicy{RetryOn: "5xx", RetriableHeaders: []*route.HeaderMatcher{{Name: "x"}}})
	if _, err := compileRetry(wire); err == nil || !strings.Contains(err.Error(), "retriable_headers is not supported") {
		t.Errorf("retriable headers: %v", err)
	}
}

// TLS settings that would make Envoy accept other peers than the proxy
// does (pinned hashes, CRLs, SAN matchers on clients, expired or
// untrusted certificates), or handshake otherwise (TLS 1.2, chosen curves,
// SNI required, custom handshakers, key logs), are refused by name.
func TestRefusesTLSSettingsItCannotHonour(t *testing.T) {
	inbound := func(r *envoyResources, change func(*tlsv3.DownstreamTlsContext)) {
		mutateDownstreamTLS(t, findListener(r, "inbound"), change)
	}
	toHello := func(r *envoyResources, change func(*tlsv3.UpstreamTlsContext)) {
		mutateUpstreamTLS(t, findCluster(t, r, "hello.default"), change)
	}
	toWorld := func(r *envoyResources, change func(*tlsv3.UpstreamTlsContext)) { // HTTP/2 over TLS
		mutateUpstreamTLS(t, findCluster(t, r, "world.default"), change)
	}
	combined := func(c *tlsv3.CommonTlsContext) *tlsv3.CertificateValidationContext {
		return c.GetCombinedValidationContext().GetDefaultValidationContext()
	}
	refusals(t, []refusal{
		{"client SAN matchers at the handshake", func(r *envoyResources) {
			inbound(r, func(c *tlsv3.DownstreamTlsContext) {
				c.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_URI}}},
					ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA"},
				}}
			})
		}, "client SAN matchers"},
		{"clients checked against inline roots", func(r *envoyResources) {
			inbound(r, func(c *tlsv3.DownstreamTlsContext) {
				c.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{}}
			})
		}, "validation_context is not supported"},
		{"clients checked against another secret", func(r *envoyResources) {
			inbound(r, func(c *tlsv3.DownstreamTlsContext) {
				c.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "OTHER"}}
			})
		}, "verify clients against the trust bundle"},
		{"SNI required", func(r *envoyResources) {
			inbound(r, func(c *tlsv3.DownstreamTlsContext) { c.RequireSni = wrapperspb.Bool(true) })
		}, "require_sni is not supported"},
		{"TLS 1.2 clients allowed", func(r *envoyResources) {
			inbound(r, func(c *tlsv3.DownstreamTlsContext) {
				c.CommonTlsContext.TlsParams.TlsMinimumProtocolVersion = tlsv3.TlsParameters_TLSv1_2
			})
		}, "the proxy speaks TLS 1.3 only"},
		{"no TLS parameters over TCP (Envoy's defaults: TLS 1.2)", func(r *envoyResources) {
			toWorld(r, func(c *tlsv3.UpstreamTlsContext) { c.CommonTlsContext.TlsParams = nil })
		}, "the proxy speaks TLS 1.3 only"},
		{"QUIC capped below TLS 1.3", func(r *envoyResources) {
			toHello(r, func(c *tlsv3.UpstreamTlsContext) {
				c.CommonTlsContext.TlsParams = &tlsv3.TlsParameters{TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_2}
			})
		}, "the proxy speaks TLS 1.3 only"},
		{"chosen curves", func(r *envoyResources) {
			toHello(r, func(c *tlsv3.UpstreamTlsContext) { c.CommonTlsContext.TlsParams.EcdhCurves = []string{"P-256"} })
		}, "ecdh_curves is not supported"},
		{"chosen signature algorithms", func(r *envoyResources) {
			inbound(r, func(c *tlsv3.DownstreamTlsContext) {
				c.CommonTlsContext.TlsParams.SignatureAlgorithms = []string{"ecdsa_secp256r1_sha256"}
			})
		}, "signature_algorithms is not supported"},
		{"TLS keys logged", func(r *envoyResources) {
			toHello(r, func(c *tlsv3.UpstreamTlsContext) { c.CommonTlsContext.KeyLog = &tlsv3.TlsKeyLog{Path: "/tmp/keys"} })
		}, "key_log is not supported"},
		{"a custom handshaker", func(r *envoyResources) {
			inbound(r, func(c *tlsv3.DownstreamTlsContext) {
				c.CommonTlsContext.CustomHandshaker = &core.TypedExtensionConfig{Name: "x"}
			})
		}, "custom_handshaker is not supported"},
		{"a pinned upstream certificate hash", func(r *envoyResources) {
			toHello(r, func(c *tlsv3.UpstreamTlsContext) { combined(c.CommonTlsContext).VerifyCertificateHash = []string{"ab"} })
		}, "verify_certificate_hash is not supported"},
		{"expired upstream certificates allowed", func(r *envoyResources) {
			toWorld(r, func(c *tlsv3.UpstreamTlsContext) { combined(c.CommonTlsContext).AllowExpiredCertificate = true })
		}, "allow_expired_certificate is not supported"},
		{"untrusted upstream certificates accepted", func(r *envoyResources) {
			toHello(r, func(c *tlsv3.UpstreamTlsContext) {
				combined(c.CommonTlsContext).TrustChainVerification = tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED
			})
		}, "trust_chain_verification is not supported"},
		{"the deprecated SAN matchers", func(r *envoyResources) {
			toHello(r, func(c *tlsv3.UpstreamTlsContext) {
				//lint:ignore SA1019 the deprecated field is what is refused
				combined(c.CommonTlsContext).MatchSubjectAltNames = []*matcher.StringMatcher{{MatchPattern: &matcher.StringMatcher_Exact{Exact: "x"}}}
			})
		}, "match_subject_alt_names is not supported"},
		{"a chain depth limit", func(r *envoyResources) {
			toHello(r, func(c *tlsv3.UpstreamTlsContext) { combined(c.CommonTlsContext).MaxVerifyDepth = wrapperspb.UInt32(1) })
		}, "max_verify_depth is not supported"},
		{"a CRL on the trust bundle checking the whole chain", func(r *envoyResources) {
			findSecret(t, r, "ROOTCA").GetValidationContext().Crl = &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: testCRL(t)}}
		}, "needs only_verify_leaf_cert_crl"},
		{"a CRL in a file", func(r *envoyResources) {
			vc := findSecret(t, r, "ROOTCA").GetValidationContext()
			vc.Crl, vc.OnlyVerifyLeafCertCrl = &core.DataSource{Specifier: &core.DataSource_Filename{Filename: "/etc/crl.pem"}}, true
		}, "revocation list must be inline bytes"},
		{"a CRL that does not parse", func(r *envoyResources) {
			vc := findSecret(t, r, "ROOTCA").GetValidationContext()
			vc.Crl, vc.OnlyVerifyLeafCertCrl = &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n")}}, true
		}, "revocation list does not parse"},
		{"a CRL of one upstream", func(r *envoyResources) {
			toHello(r, func(c *tlsv3.UpstreamTlsContext) {
				combined(c.CommonTlsContext).Crl = &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: testCRL(t)}}
			})
		}, "upstream certificate check crl (outside the trust bundle's secret ROOTCA) is not supported"},
		{"a private key provider", func(r *envoyResources) {
			findSecret(t, r, "default").GetTlsCertificate().PrivateKeyProvider = &tlsv3.PrivateKeyProvider{ProviderName: "hsm"}
		}, "certificate private_key_provider is not supported"},
	})
}

// What Envoy would do as the proxy does is accepted: cipher suites (TLS
// 1.2's; Envoy ignores them for TLS 1.3), a server's maximum left to its
// default (TLS 1.3), QUIC without parameters (TLS 1.3 is QUIC's), the
// client bundle combined with an empty default context, SNI not required.
func TestAcceptsTLSSettingsThatChangeNothing(t *testing.T) {
	r := meshFor(t, "default", "client")
	mutateDownstreamTLS(t, findListener(&r, "inbound"), func(c *tlsv3.DownstreamTlsContext) {
		c.CommonTlsContext.TlsParams.CipherSuites = []string{"ECDHE-ECDSA-AES128-GCM-SHA256"}
		c.CommonTlsContext.TlsParams.TlsMaximumProtocolVersion = tlsv3.TlsParameters_TLS_AUTO
		c.RequireSni = wrapperspb.Bool(false)
		c.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         &tlsv3.CertificateValidationContext{},
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA"},
		}}
	})
	mutateUpstreamTLS(t, findCluster(t, &r, "hello.default"), func(c *tlsv3.UpstreamTlsContext) { c.CommonTlsContext.TlsParams = nil })
	mutateDownstreamTLS(t, findListener(&r, "inbound-quic"), func(c *tlsv3.DownstreamTlsContext) { c.CommonTlsContext.TlsParams = nil })
	if _, err := Compile(r.wire(t)); err != nil {
		t.Fatal(err)
	}
}

// Cluster settings that would change where or how Envoy sends requests
// (active health checks, subsets, typed or per-endpoint policies, limits
// on streams and connections, retry budgets) are refused by name.
func TestRefusesClusterSettingsItCannotHonour(t *testing.T) {
	protocolOptions := func(r *envoyResources, change func(*httpv3.HttpProtocolOptions)) {
		c := findCluster(t, r, "hello.default")
		key := "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
		po := &httpv3.HttpProtocolOptions{}
		mustUnpack(t, c.TypedExtensionProtocolOptions[key], po)
		change(po)
		c.TypedExtensionProtocolOptions[key] = mustAny(t, po)
	}
	refusals(t, []refusal{
		{"active health checks", func(r *envoyResources) {
			findCluster(t, r, "hello.default").HealthChecks = []*core.HealthCheck{{Timeout: durationpb.New(time.Second)}}
		}, "health_checks is not supported"},
		{"subsets", func(r *envoyResources) {
			findCluster(t, r, "hello.default").LbSubsetConfig = &cluster.Cluster_LbSubsetConfig{FallbackPolicy: cluster.Cluster_LbSubsetConfig_ANY_ENDPOINT}
		}, "lb_subset_config is not supported"},
		{"a typed load-balancing policy", func(r *envoyResources) {
			findCluster(t, r, "hello.default").LoadBalancingPolicy = &cluster.LoadBalancingPolicy{Policies: []*cluster.LoadBalancingPolicy_Policy{{}}}
		}, "load_balancing_policy is not supported"},
		{"the downstream's protocol", func(r *envoyResources) {
			//lint:ignore SA1019 the deprecated field is what is refused
			findCluster(t, r, "world.default").ProtocolSelection = cluster.Cluster_USE_DOWNSTREAM_PROTOCOL
		}, "protocol_selection is not supported"},
		{"per-endpoint transport sockets", func(r *envoyResources) {
			findCluster(t, r, "hello.default").TransportSocketMatches = []*cluster.Cluster_TransportSocketMatch{{Name: "x"}}
		}, "transport_socket_matches is not supported"},
		{"HTTP/2 the deprecated way, even empty", func(r *envoyResources) {
			//lint:ignore SA1019 the deprecated field is what is refused
			findCluster(t, r, "world.default").Http2ProtocolOptions = &core.Http2ProtocolOptions{}
		}, "http2_protocol_options is not supported"},
		{"a retry budget", func(r *envoyResources) {
			findCluster(t, r, "hello.default").CircuitBreakers = &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{
				RetryBudget: &cluster.CircuitBreakers_Thresholds_RetryBudget{BudgetPercent: &typev3.Percent{Value: 20}},
			}}}
		}, "retry_budget is not supported"},
		{"failover priorities", func(r *envoyResources) {
			r.Endpoints[0].Endpoints[0].Priority = 1
		}, "endpoints: priority is not supported"},
		{"requests dropped on purpose", func(r *envoyResources) {
			r.Endpoints[0].Policy = &endpoint.ClusterLoadAssignment_Policy{DropOverloads: []*endpoint.ClusterLoadAssignment_Policy_DropOverload{{Category: "x", DropPercentage: &typev3.FractionalPercent{Numerator: 10}}}}
		}, "endpoints: drop_overloads is not supported"},
		{"endpoints that go stale", func(r *envoyResources) {
			r.Endpoints[0].Policy = &endpoint.ClusterLoadAssignment_Policy{EndpointStaleAfter: durationpb.New(time.Minute)}
		}, "endpoints: endpoint_stale_after is not supported"},
		{"a limit on connection pools", func(r *envoyResources) {
			findCluster(t, r, "hello.default").CircuitBreakers = &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{
				MaxConnectionPools: wrapperspb.UInt32(1),
			}}}
		}, "max_connection_pools is not supported"},
		{"a cluster-wide retry policy", func(r *envoyResources) {
			protocolOptions(r, func(po *httpv3.HttpProtocolOptions) { po.RetryPolicy = &route.RetryPolicy{RetryOn: "5xx"} })
		}, "retry_policy is not supported"},
		{"a stream duration limit", func(r *envoyResources) {
			protocolOptions(r, func(po *httpv3.HttpProtocolOptions) {
				po.CommonHttpProtocolOptions = &core.HttpProtocolOptions{MaxStreamDuration: durationpb.New(time.Second)}
			})
		}, "max_stream_duration is not supported"},
		{"requests per connection", func(r *envoyResources) {
			protocolOptions(r, func(po *httpv3.HttpProtocolOptions) {
				po.CommonHttpProtocolOptions = &core.HttpProtocolOptions{MaxRequestsPerConnection: wrapperspb.UInt32(100)}
			})
		}, "max_requests_per_connection is not supported"},
		{"the protocol chosen by ALPN", func(r *envoyResources) {
			protocolOptions(r, func(po *httpv3.HttpProtocolOptions) {
				po.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_AutoConfig{AutoConfig: &httpv3.HttpProtocolOptions_AutoHttpConfig{}}
			})
		}, "auto_config is not supported"},
	})
	// An idle timeout is the pool's business; counting what remains in a
	// breaker is a statistic: both accepted.
	r := meshFor(t, "default", "client")
	protocolOptions(&r, func(po *httpv3.HttpProtocolOptions) {
		po.CommonHttpProtocolOptions = &core.HttpProtocolOptions{IdleTimeout: durationpb.New(time.Minute)}
	})
	findCluster(t, &r, "hello.default").CircuitBreakers = &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{TrackRemaining: true}}}
	if _, err := Compile(r.wire(t)); err != nil {
		t.Fatal(err)
	}
}

// refusal is a change to the control plane's resources the compiler must
// refuse, with what its error must mention.
type refusal struct {
	name    string
	mutate  func(*envoyResources)
	mention string
}

// refusals compiles meshFor's resources with each change: each must be
// refused, naming what.
func refusals(t *testing.T, tests []refusal) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := meshFor(t, "default", "client")
			tc.mutate(&r)
			_, err := Compile(r.wire(t))
			if err == nil || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("Compile = %v; want an error mentioning %q", err, tc.mention)
			}
		})
	}
}

// withRateLimit puts a local rate limit filter on listener name, before
// the router (after RBAC when the listener has it).
func withRateLimit(t *testing.T, r *envoyResources, name string, l *ratelimitv3.LocalRateLimit) {
	t.Helper()
	mutateHCM(t, findListener(r, name), func(m *hcm.HttpConnectionManager) {
		f := &hcm.HttpFilter{Name: "envoy.filters.http.local_ratelimit", ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(t, l)}}
		m.HttpFilters = append(m.HttpFilters[:len(m.HttpFilters)-1], f, m.HttpFilters[len(m.HttpFilters)-1])
	})
}

func percent(n uint32) *core.RuntimeFractionalPercent {
	return &core.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: n}}
}

// Envoy's local rate limit filter, read as Envoy runs it: off unless
// enabled at 100 %, refusing only when enforced at 100 %, 429 unless told
// otherwise; what the proxy cannot do is refused.
func TestLocalRateLimitAsEnvoys(t *testing.T) {
	bucket := &typev3.TokenBucket{MaxTokens: 20, TokensPerFill: wrapperspb.UInt32(10), FillInterval: durationpb.New(time.Second)}
	r := meshFor(t, "default", "client")
	withRateLimit(t, &r, "inbound", &ratelimitv3.LocalRateLimit{StatPrefix: "inbound_limit", TokenBucket: bucket,
		FilterEnabled: percent(100), FilterEnforced: percent(100), RateLimitedAsResourceExhausted: true,
		Status: &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable}})
	withRateLimit(t, &r, "outbound", &ratelimitv3.LocalRateLimit{StatPrefix: "shadow", TokenBucket: bucket, FilterEnabled: percent(100)})
	withRateLimit(t, &r, "inbound-quic", &ratelimitv3.LocalRateLimit{StatPrefix: "off", TokenBucket: bucket})
	c, err := Compile(r.wire(t))
	if err != nil {
		t.Fatal(err)
	}
	want := RateLimit{Name: "inbound_limit", MaxTokens: 20, TokensPerFill: 10, FillInterval: time.Second, Status: 503, Enforced: true, ResourceExhausted: true}
	if c.Inbound.RateLimit == nil || *c.Inbound.RateLimit != want {
		t.Errorf("inbound limit = %+v, want %+v", c.Inbound.RateLimit, want)
	}
	if l := c.Outbound.RateLimit; l == nil || l.Enforced || l.Status != 429 {
		t.Errorf("outbound limit enabled, not enforced = %+v", l)
	}
	if c.InboundQUIC.RateLimit != nil {
		t.Errorf("a filter not enabled compiled to %+v", c.InboundQUIC.RateLimit)
	}

	for _, tc := range []struct {
		name    string
		limit   *ratelimitv3.LocalRateLimit
		mention string
	}{
		{"half enforced", &ratelimitv3.LocalRateLimit{StatPrefix: "x", TokenBucket: bucket, FilterEnabled: percent(100), FilterEnforced: percent(50)}, "filter_enforced of 50% is not supported"},
		{"descriptors", &ratelimitv3.LocalRateLimit{StatPrefix: "x", TokenBucket: bucket, Descriptors: []*commonratelimit.LocalRateLimitDescriptor{{Entries: []*commonratelimit.RateLimitDescriptor_Entry{{Key: "k"}}}}}, "descriptors is not supported"},
		{"per connection", &ratelimitv3.LocalRateLimit{StatPrefix: "x", TokenBucket: bucket, LocalRateLimitPerDownstreamConnection: true}, "local_rate_limit_per_downstream_connection is not supported"},
		{"fills too often", &ratelimitv3.LocalRateLimit{StatPrefix: "x", FilterEnabled: percent(100),
			TokenBucket: &typev3.TokenBucket{MaxTokens: 1, FillInterval: durationpb.New(10 * time.Millisecond)}}, "under Envoy's minimum of 50ms"},
		{"a status that is no error", &ratelimitv3.LocalRateLimit{StatPrefix: "x", TokenBucket: bucket, FilterEnabled: percent(100),
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_OK}}, "status 200 is not an error status"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := meshFor(t, "default", "client")
			withRateLimit(t, &r, "inbound", tc.limit)
			if _, err := Compile(r.wire(t)); err == nil || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("Compile = %v; want an error mentioning %q", err, tc.mention)
			}
		})
	}
}

// A route's own local rate limit settings (typed_per_filter_config under
// the filter's name) replace the listener's for its requests, as in
// Envoy: with a bucket of their own, or none when not enabled; the
// listener's filter may then come without a bucket.
func TestRoutesOwnRateLimit(t *testing.T) {
	bucket := &typev3.TokenBucket{MaxTokens: 2, FillInterval: durationpb.New(time.Second)}
	r := meshFor(t, "default", "client")
	withRateLimit(t, &r, "outbound", &ratelimitv3.LocalRateLimit{StatPrefix: "no_bucket"})
	routes := r.Routes[0].VirtualHosts[0].Routes
	routes[0].TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.local_ratelimit": mustAny(t, &ratelimitv3.LocalRateLimit{
		StatPrefix: "route", TokenBucket: bucket, FilterEnabled: percent(100), FilterEnforced: percent(100)})}
	c, err := Compile(r.wire(t))
	if err != nil {
		t.Fatal(err)
	}
	if c.Outbound.RateLimit != nil || c.Outbound.RateLimitFilter != "envoy.filters.http.local_ratelimit" {
		t.Errorf("outbound: limit %+v, filter %q; want no listener bucket, the filter named", c.Outbound.RateLimit, c.Outbound.RateLimitFilter)
	}
	var limited *Route
	for _, rt := range c.Routes[r.Routes[0].Name].Routes() {
		if rt.RateLimit != nil {
			limited = rt
		}
	}
	want := RateLimit{Name: "route", MaxTokens: 2, TokensPerFill: 1, FillInterval: time.Second, Status: 429, Enforced: true}
	if limited == nil || *limited.RateLimit != want || limited.RateLimitFilter != "envoy.filters.http.local_ratelimit" {
		t.Errorf("the route's limit: %+v", limited)
	}
}

// The control plane's rate limit for a service (xds.Policy.RateLimit)
// compiles into one limit on both inbound listeners of its built-in
// sidecars, after RBAC.
func TestTheServicesRateLimitCompiles(t *testing.T) {
	policy := xds.DefaultPolicy
	policy.RateLimit, policy.RateLimitBurst = 100, 10
	m := &xds.Mesh{TrustDomain: "micromesh.local", Roots: []byte("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"), Services: []xds.Service{
		{Name: "client", Namespace: "default", Protocol: xds.ProtocolHTTP, Policy: policy, Routes: []xds.RoutePolicy{
			{Path: "/export/", Prefix: true, RateLimit: 1},
		}, Endpoints: []xds.Endpoint{
			{ID: "c1", Address: "10.0.0.1", Port: 18443, QUICPort: 18443, Kind: xds.KindBuiltin, Health: xds.HealthPassing},
		}},
	}}
	r, err := xds.Build(m, xds.Proxy{NodeID: "n", Namespace: "default", Service: "client", Kind: xds.KindBuiltin,
		InboundPort: 18443, OutboundPort: 15001, AppPort: 8080, AppProtocol: xds.ProtocolHTTP, CertDir: "/certs"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Compile(envoyResources{Listeners: r.Listeners, Routes: r.Routes, Clusters: r.Clusters, Endpoints: r.Endpoints, Secrets: r.Secrets}.wire(t))
	if err != nil {
		t.Fatal(err)
	}
	want := RateLimit{Name: xds.RateLimitStatPrefix, MaxTokens: 10, TokensPerFill: 10, FillInterval: 100 * time.Millisecond, Status: 429, Enforced: true, ResourceExhausted: true}
	for _, in := range []*Inbound{c.Inbound, c.InboundQUIC} {
		if in.RateLimit == nil || *in.RateLimit != want {
			t.Errorf("%s: rate limit %+v, want %+v", in.Name, in.RateLimit, want)
		}
	}
	if c.Outbound.RateLimit != nil {
		t.Errorf("the outbound listener got a rate limit: %+v", c.Outbound.RateLimit)
	}
	// The path's own limit replaces the service's for its requests.
	for _, in := range []*Inbound{c.Inbound, c.InboundQUIC} {
		r, _ := in.Route.Lookup("b", "/export/x")
		if r == nil || r.RateLimitFilter != in.RateLimitFilter || r.RateLimit == nil || r.RateLimit.MaxTokens != 1 || r.RateLimit.FillInterval != time.Second {
			t.Errorf("%s: /export/ route %+v, want its own limit of 1/s under the listener's filter %q", in.Name, r, in.RateLimitFilter)
		}
	}
}

// TestWeightedClustersAsEnvoys: a route's requests spread over clusters in
// proportion to their weights, whose sum is the total; a cluster of weight
// 0 gets none; what decides the pick other than a random value is refused.
func TestWeightedClustersAsEnvoys(t *testing.T) {
	split := func(r *envoyResources) *route.WeightedCluster {
		wc := &route.WeightedCluster{Clusters: []*route.WeightedCluster_ClusterWeight{
			{Name: "world.default~v1", Weight: wrapperspb.UInt32(90)},
			{Name: "world.default~v2", Weight: wrapperspb.UInt32(10)},
			{Name: "world.default~v3", Weight: wrapperspb.UInt32(0)},
		}}
		r.Routes[0].VirtualHosts[0].Routes[0].GetRoute().ClusterSpecifier = &route.RouteAction_WeightedClusters{WeightedClusters: wc}
		return wc
	}
	r := meshFor(t, "default", "client")
	split(&r)
	c, err := Compile(r.wire(t))
	if err != nil {
		t.Fatal(err)
	}
	vh := r.Routes[0].VirtualHosts[0]
	rt, _ := c.Routes[r.Routes[0].Name].Lookup(vh.Domains[0], "/")
	if rt == nil {
		t.Fatalf("no route of %s for /", vh.Domains[0])
	}
	if rt.Cluster != "" || rt.Split == nil || rt.Split.Total != 100 || len(rt.Split.Clusters) != 3 {
		t.Fatalf("compiled %+v (split %+v), want a split of 100 over 3 clusters", rt, rt.Split)
	}
	got := map[string]int{}
	for n := uint32(0); n < rt.Split.Total; n++ {
		got[rt.Split.Pick(n)]++
	}
	if got["world.default~v1"] != 90 || got["world.default~v2"] != 10 || got["world.default~v3"] != 0 {
		t.Errorf("picks over [0, 100): %v, want 90 / 10 / 0", got)
	}
	// The deprecated total_weight, equal to the sum, changes nothing.
	r = meshFor(t, "default", "client")
	//lint:ignore SA1019 the deprecated field is what is checked
	split(&r).TotalWeight = wrapperspb.UInt32(100)
	if _, err := Compile(r.wire(t)); err != nil {
		t.Errorf("total_weight equal to the sum: %v", err)
	}

	withSplit := func(change func(*route.WeightedCluster)) func(*envoyResources) {
		return func(r *envoyResources) { change(split(r)) }
	}
	refusals(t, []refusal{
		{"no clusters", withSplit(func(wc *route.WeightedCluster) { wc.Clusters = nil }), "has no clusters"},
		{"weights add up to 0", withSplit(func(wc *route.WeightedCluster) {
			for _, c := range wc.Clusters {
				c.Weight = nil
			}
		}), "add up to 0"},
		{"weights past 2^32", withSplit(func(wc *route.WeightedCluster) {
			wc.Clusters[0].Weight = wrapperspb.UInt32(math.MaxUint32)
		}), "above 4294967295"},
		{"total_weight not the sum", withSplit(func(wc *route.WeightedCluster) {
			//lint:ignore SA1019 the deprecated field is what is refused
			wc.TotalWeight = wrapperspb.UInt32(1000)
		}), "total_weight 1000 is not the sum"},
		{"a cluster without a name", withSplit(func(wc *route.WeightedCluster) { wc.Clusters[1].Name = "" }), "has no name"},
		{"runtime key prefix", withSplit(func(wc *route.WeightedCluster) { wc.RuntimeKeyPrefix = "routing.traffic_split" }), "runtime_key_prefix is not supported"},
		{"random value from a header", withSplit(func(wc *route.WeightedCluster) {
			wc.RandomValueSpecifier = &route.WeightedCluster_HeaderName{HeaderName: "x-random"}
		}), "header_name is not supported"},
		{"random value from the hash policy", withSplit(func(wc *route.WeightedCluster) {
			wc.RandomValueSpecifier = &route.WeightedCluster_UseHashPolicy{UseHashPolicy: wrapperspb.Bool(true)}
		}), "use_hash_policy is not supported"},
		{"cluster from a header", withSplit(func(wc *route.WeightedCluster) { wc.Clusters[0].ClusterHeader = "x-cluster" }), "cluster_header is not supported"},
		{"a cluster's subset", withSplit(func(wc *route.WeightedCluster) {
			wc.Clusters[0].MetadataMatch = &core.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.lb": {}}}
		}), "metadata_match is not supported"},
		{"a cluster's request headers", withSplit(func(wc *route.WeightedCluster) {
			wc.Clusters[0].RequestHeadersToAdd = []*core.HeaderValueOption{{Header: &core.HeaderValue{Key: "x-v", Value: "1"}}}
		}), "request_headers_to_add is not supported"},
		{"a cluster's response headers", withSplit(func(wc *route.WeightedCluster) { wc.Clusters[0].ResponseHeadersToRemove = []string{"x-v"} }),
			"response_headers_to_remove is not supported"},
		{"a cluster's filter settings", withSplit(func(wc *route.WeightedCluster) {
			wc.Clusters[0].TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.local_ratelimit": {}}
		}), "typed_per_filter_config is not supported"},
		{"a cluster's host rewrite", withSplit(func(wc *route.WeightedCluster) {
			wc.Clusters[0].HostRewriteSpecifier = &route.WeightedCluster_ClusterWeight_HostRewriteLiteral{HostRewriteLiteral: "v2"}
		}), "host_rewrite_literal is not supported"},
	})
}

// TestCompilesTheControlPlanesSplit: a service split between versions
// compiles into a route over one cluster per version, each holding that
// version's instances alone.
func TestCompilesTheControlPlanesSplit(t *testing.T) {
	m := &xds.Mesh{TrustDomain: "micromesh.local", Roots: []byte("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"), Services: []xds.Service{
		{Name: "hello", Namespace: "default", Protocol: xds.ProtocolGRPC, Split: []xds.VersionWeight{{Version: "v1", Weight: 80}, {Version: "v2", Weight: 20}},
			SplitHeader: "x-version",
			Endpoints: []xds.Endpoint{
				{ID: "h1", Address: "10.0.0.1", Port: 8443, QUICPort: 8443, Kind: xds.KindBuiltin, Version: "v1", Health: xds.HealthPassing},
				{ID: "h2", Address: "10.0.0.2", Port: 8443, QUICPort: 8443, Kind: xds.KindBuiltin, Version: "v2", Health: xds.HealthPassing},
				{ID: "h3", Address: "10.0.0.3", Port: 15006, Kind: xds.KindEnvoy, Version: "v2", Health: xds.HealthPassing},
			}},
	}}
	r, err := xds.Build(m, xds.Proxy{NodeID: "n", Namespace: "default", Service: "client", Kind: xds.KindBuiltin, OutboundPort: 15001, CertDir: "/certs"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Compile(envoyResources{Listeners: r.Listeners, Routes: r.Routes, Clusters: r.Clusters, Endpoints: r.Endpoints, Secrets: r.Secrets}.wire(t))
	if err != nil {
		t.Fatal(err)
	}
	rt, _ := c.Routes["outbound"].Lookup("hello", "/pkg.Hello/Hi")
	if rt == nil || rt.Split == nil || fmt.Sprint(rt.Split.Clusters) != "[{hello.default|v1 80} {hello.default|v2 20}]" || rt.Split.Total != 100 {
		t.Fatalf("hello's route: %+v", rt)
	}
	// The version header picks a version whatever the shares.
	for v, want := range map[string]string{"v1": "hello.default|v1", "v2": "hello.default|v2", "v9": ""} {
		q := Request{Method: "POST", Path: "/pkg.Hello/Hi", Header: HeaderOf(http.Header{"X-Version": {v}})}
		if got, _ := c.Routes["outbound"].LookupRequest("hello", q); got == nil || got.Cluster != want {
			t.Errorf("x-version: %s → %+v, want cluster %q", v, got, want)
		}
	}
	for name, want := range map[string]string{
		"hello.default|v1": "quic [10.0.0.1:8443]", // built-in sidecars alone: QUIC
		"hello.default|v2": "tls [10.0.0.2:8443 10.0.0.3:15006]",
	} {
		cl := c.Clusters[name]
		if cl == nil {
			t.Errorf("no cluster %s", name)
			continue
		}
		var addrs []string
		for _, e := range cl.Endpoints {
			addrs = append(addrs, e.Address)
		}
		if got := cl.Transport + " " + fmt.Sprint(addrs); got != want {
			t.Errorf("cluster %s: %s, want %s", name, got, want)
		}
	}
}

// TestRBACHeaderRulesAsEnvoys: a header given several times is matched as
// its values joined by ","; a missing header matches only presence rules
// (inverted string rules too do not match it) unless
// treat_missing_header_as_empty.
func TestRBACHeaderRulesAsEnvoys(t *testing.T) {
	exact := func(v string) *route.HeaderMatcher_StringMatch {
		return &route.HeaderMatcher_StringMatch{StringMatch: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: v}}}
	}
	rule := func(h *route.HeaderMatcher) *RBAC {
		r := meshFor(t, "default", "client")
		mutateRBAC(t, findListener(&r, "inbound"), func(f *rbacfilter.RBAC) {
			f.Rules = &rbac.RBAC{Action: rbac.RBAC_ALLOW, Policies: map[string]*rbac.Policy{"p": {
				Permissions: []*rbac.Permission{{Rule: &rbac.Permission_Header{Header: h}}},
				Principals:  []*rbac.Principal{{Identifier: &rbac.Principal_Any{Any: true}}},
			}}}
		})
		c, err := Compile(r.wire(t))
		if err != nil {
			t.Fatal(err)
		}
		return c.Inbound.RBAC
	}
	withHeaders := func(h http.Header) Request {
		return Request{Principal: "spiffe://micromesh.local/ns/default/svc/a", Method: "GET", Path: "/", Header: HeaderOf(h)}
	}
	none, one, two, empty := http.Header{}, http.Header{"X-Team": {"a"}}, http.Header{"X-Team": {"a", "b"}}, http.Header{"X-Team": {""}}
	cases := []struct {
		name string
		rule *route.HeaderMatcher
		want [4]bool // none, one, two, empty
	}{
		{"exact", &route.HeaderMatcher{Name: "x-team", HeaderMatchSpecifier: exact("a")}, [4]bool{false, true, false, false}},
		{"exact, both values", &route.HeaderMatcher{Name: "x-team", HeaderMatchSpecifier: exact("a,b")}, [4]bool{false, false, true, false}},
		{"inverted", &route.HeaderMatcher{Name: "x-team", HeaderMatchSpecifier: exact("a"), InvertMatch: true}, [4]bool{false, false, true, true}},
		{"inverted, missing as empty", &route.HeaderMatcher{Name: "x-team", HeaderMatchSpecifier: exact("a"), InvertMatch: true, TreatMissingHeaderAsEmpty: true}, [4]bool{true, false, true, true}},
		{"empty, missing as empty", &route.HeaderMatcher{Name: "x-team", HeaderMatchSpecifier: exact(""), TreatMissingHeaderAsEmpty: true}, [4]bool{true, false, false, true}},
		{"present", &route.HeaderMatcher{Name: "x-team", HeaderMatchSpecifier: &route.HeaderMatcher_PresentMatch{PresentMatch: true}}, [4]bool{false, true, true, true}},
		{"absent", &route.HeaderMatcher{Name: "x-team", HeaderMatchSpecifier: &route.HeaderMatcher_PresentMatch{PresentMatch: false}}, [4]bool{true, false, false, false}},
		{"present, inverted", &route.HeaderMatcher{Name: "x-team", HeaderMatchSpecifier: &route.HeaderMatcher_PresentMatch{PresentMatch: true}, InvertMatch: true}, [4]bool{true, false, false, false}},
	}
	for _, c := range cases {
		r := rule(c.rule)
		for i, h := range []http.Header{none, one, two, empty} {
			if got, _ := r.Allowed(withHeaders(h)); got != c.want[i] {
				t.Errorf("%s, headers %v: allowed %v, want %v", c.name, h, got, c.want[i])
			}
		}
	}
}

// TestEndpointsOfAnotherTransportAreNotArrived: when a cluster's instances
// move between QUIC and TCP (its last built-in instance gone, an Envoy
// instance added), CDS and EDS arrive apart; a QUIC cluster with the old
// assignment's TCP addresses (or the reverse) waits for its new one
// instead of being refused.
func TestEndpointsOfAnotherTransportAreNotArrived(t *testing.T) {
	r := meshFor(t, "default", "client")
	for _, cla := range r.Endpoints {
		if cla.ClusterName != "hello.default" {
			continue
		}
		for _, loc := range cla.Endpoints {
			for _, lb := range loc.LbEndpoints {
				lb.GetEndpoint().GetAddress().GetSocketAddress().Protocol = core.SocketAddress_TCP // the old assignment
			}
		}
	}
	c, err := Compile(r.wire(t))
	if err != nil {
		t.Fatalf("a QUIC cluster with a TCP assignment: %v", err)
	}
	if cl := c.Clusters["hello.default"]; cl.Transport != TransportQUIC || !cl.Waiting || len(cl.Endpoints) != 0 {
		t.Errorf("hello.default: %s, waiting %v, %d endpoints", cl.Transport, cl.Waiting, len(cl.Endpoints))
	}
	if m := strings.Join(c.Missing(), "; "); m != "endpoints of hello.default" {
		t.Errorf("Missing() = %q", m)
	}
}

// TestRoutesMatchHeaders: a route's header conditions must all hold for it
// to take a request (a canary's testers sent to v2 by a header), else the
// next route does; :method counts as a header.
func TestRoutesMatchHeaders(t *testing.T) {
	r := meshFor(t, "default", "client")
	vh := r.Routes[0].VirtualHosts[0]
	exact := func(name, v string) *route.HeaderMatcher {
		return &route.HeaderMatcher{Name: name, HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{
			StringMatch: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: v}}}}
	}
	to := func(cluster string, headers ...*route.HeaderMatcher) *route.Route {
		return &route.Route{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}, Headers: headers},
			Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: cluster}}}}
	}
	vh.Routes = append([]*route.Route{
		to("v2-posts", exact("x-version", "v2"), exact(":method", "POST")),
		to("v2", exact("x-version", "v2")),
	}, vh.Routes...)
	c, err := Compile(r.wire(t))
	if err != nil {
		t.Fatal(err)
	}
	rt := c.Routes[r.Routes[0].Name]
	if !rt.HeaderConditions {
		t.Error("the table does not say it matches on headers")
	}
	host := vh.Domains[0]
	plain, _ := rt.Lookup(host, "/")
	for _, tc := range []struct {
		method string
		header http.Header
		want   string
	}{
		{"POST", http.Header{"X-Version": {"v2"}}, "v2-posts"},
		{"GET", http.Header{"X-Version": {"v2"}}, "v2"},
		{"GET", http.Header{"X-Version": {"v3"}}, plain.Cluster},
		{"GET", http.Header{}, plain.Cluster},
		{"GET", http.Header{"X-Version": {"v2", "v1"}}, plain.Cluster}, // "v2,v1"
	} {
		got, _ := rt.LookupRequest(host, Request{Method: tc.method, Path: "/x", Header: HeaderOf(tc.header)})
		if got == nil || got.Cluster != tc.want {
			t.Errorf("%s %v: route %+v, want cluster %s", tc.method, tc.header, got, tc.want)
		}
	}
}

// TestMirrorsAsEnvoys: a route's mirror policies copy every request
// unless a share is given; the copies carry -shadow after the host (before
// a port) unless told to keep it or given one; what the proxy cannot do is
// refused. A mirror's cluster the proxy lacks leaves nothing waiting.
func TestMirrorsAsEnvoys(t *testing.T) {
	mirror := func(r *envoyResources, mp ...*route.RouteAction_RequestMirrorPolicy) {
		r.Routes[0].VirtualHosts[0].Routes[0].GetRoute().RequestMirrorPolicies = mp
	}
	r := meshFor(t, "default", "client")
	mirror(&r, &route.RouteAction_RequestMirrorPolicy{Cluster: "world.default"},
		&route.RouteAction_RequestMirrorPolicy{Cluster: "nowhere.default", RuntimeFraction: percent(25), DisableShadowHostSuffixAppend: true},
		&route.RouteAction_RequestMirrorPolicy{Cluster: "world.default", RuntimeFraction: &core.RuntimeFractionalPercent{RuntimeKey: "k"}, HostRewriteLiteral: "audit"})
	c, err := Compile(r.wire(t))
	if err != nil {
		t.Fatal(err)
	}
	if missing := c.Missing(); len(missing) != 0 {
		t.Errorf("Missing() = %v; a mirror's cluster is not waited for", missing)
	}
	vh := r.Routes[0].VirtualHosts[0]
	rt, _ := c.Routes[r.Routes[0].Name].Lookup(vh.Domains[0], "/")
	want := []Mirror{
		{Cluster: "world.default", Share: Share{1, 1}},
		{Cluster: "nowhere.default", Share: Share{25, 100}, KeepHost: true},
		{Cluster: "world.default", Share: Share{}, Host: "audit"}, // no default value: 0 %, as a fraction with nothing set
	}
	if rt == nil || !reflect.DeepEqual(rt.Mirrors, want) {
		t.Fatalf("compiled mirrors %+v, want %+v", rt, want)
	}
	for host, shadow := range map[string]string{"world": "world-shadow", "world.default:8080": "world.default-shadow:8080", "[::1]:80": "[::1]-shadow:80", "[::1]": "[::1]-shadow"} {
		if got := want[0].ShadowHost(host); got != shadow {
			t.Errorf("ShadowHost(%q) = %q, want %q", host, got, shadow)
		}
	}
	if got := want[1].ShadowHost("world"); got != "world" {
		t.Errorf("kept host: %q", got)
	}
	if got := want[2].ShadowHost("world"); got != "audit" {
		t.Errorf("rewritten host: %q", got)
	}
	refusals(t, []refusal{
		{"mirror without a cluster", func(r *envoyResources) { mirror(r, &route.RouteAction_RequestMirrorPolicy{}) }, "has no cluster"},
		{"mirror cluster from a header", func(r *envoyResources) {
			mirror(r, &route.RouteAction_RequestMirrorPolicy{ClusterHeader: "x-mirror"})
		}, "request_mirror_policies cluster_header is not supported"},
		{"mirror header mutations", func(r *envoyResources) {
			mirror(r, &route.RouteAction_RequestMirrorPolicy{Cluster: "world.default", RequestHeadersMutations: []*mutationv3.HeaderMutation{{
				Action: &mutationv3.HeaderMutation_Remove{Remove: "x-a"}}}})
		}, "request_headers_mutations is not supported"},
	})

	// Host-wide and configuration-wide mirrors: the most specific
	// non-empty set wins, not merged (Envoy's rule).
	r = meshFor(t, "default", "client")
	r.Routes[0].RequestMirrorPolicies = []*route.RouteAction_RequestMirrorPolicy{{Cluster: "from-config"}}
	c = compiled(t, r)
	vh = r.Routes[0].VirtualHosts[0]
	if rt, _ := c.Routes[r.Routes[0].Name].Lookup(vh.Domains[0], "/"); rt == nil || len(rt.Mirrors) != 1 || rt.Mirrors[0].Cluster != "from-config" {
		t.Errorf("the configuration's mirror: %+v", rt)
	}
	vh.RequestMirrorPolicies = []*route.RouteAction_RequestMirrorPolicy{{Cluster: "from-host"}, {Cluster: "from-host-2"}}
	c = compiled(t, r)
	if rt, _ := c.Routes[r.Routes[0].Name].Lookup(vh.Domains[0], "/"); rt == nil || len(rt.Mirrors) != 2 || rt.Mirrors[0].Cluster != "from-host" {
		t.Errorf("the host's mirrors over the configuration's: %+v", rt)
	}
	mirror(&r, &route.RouteAction_RequestMirrorPolicy{Cluster: "from-route"})
	c = compiled(t, r)
	if rt, _ := c.Routes[r.Routes[0].Name].Lookup(vh.Domains[0], "/"); rt == nil || len(rt.Mirrors) != 1 || rt.Mirrors[0].Cluster != "from-route" {
		t.Errorf("the route's mirror over the host's: %+v", rt)
	}
	refusals(t, []refusal{{"a host-wide mirror from a header", func(r *envoyResources) {
		r.Routes[0].VirtualHosts[0].RequestMirrorPolicies = []*route.RouteAction_RequestMirrorPolicy{{ClusterHeader: "x-m"}}
	}, "request_mirror_policies cluster_header is not supported"}})
}

// A service's allow_from admits callers of other namespaces, each named
// service or whole namespace, and makes it reachable from there; its
// deny_from refuses callers whatever else admits them — as the compiled
// RBAC of its inbound listener decides, and as other namespaces' routes
// show.
func TestAllowAndDenyFrom(t *testing.T) {
	pol := xds.DefaultPolicy
	pol.AllowFrom, pol.DenyFrom = "*.reports,orders.shop", "legacy.default"
	m := &xds.Mesh{TrustDomain: "micromesh.local", Roots: []byte("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"), Services: []xds.Service{
		{Name: "billing", Namespace: "default", Protocol: xds.ProtocolGRPC, Policy: pol, Routes: []xds.RoutePolicy{
			{Path: "/pkg.Billing/Report", AllowFrom: "reports.ops", DenyFrom: "web.default"}, // one method: one more caller, one fewer
			{Path: "/pkg.Billing/Audit/", Prefix: true, AllowFrom: "*.audit"},                // a prefix, a namespace
		}, Endpoints: []xds.Endpoint{
			{ID: "b1", Address: "10.0.0.1", Port: 8443, QUICPort: 8443, Kind: xds.KindBuiltin, Health: xds.HealthPassing},
		}},
		{Name: "orders", Namespace: "shop", Protocol: xds.ProtocolGRPC, Policy: xds.DefaultPolicy, Endpoints: []xds.Endpoint{
			{ID: "o1", Address: "10.0.0.2", Port: 8443, QUICPort: 8443, Kind: xds.KindBuiltin, Health: xds.HealthPassing},
		}},
	}}
	build := func(ns, svc string) *Config { return compiled(t, sidecarOf(t, m, ns, svc)) }
	billing := build("default", "billing")
	for principal, want := range map[string]bool{
		"spiffe://micromesh.local/ns/default/svc/web":       true,
		"spiffe://micromesh.local/ns/default/svc/legacy":    false, // denied, though of its namespace
		"spiffe://micromesh.local/ns/shop/svc/orders":       true,
		"spiffe://micromesh.local/ns/shop/svc/cart":         false,
		"spiffe://micromesh.local/ns/shop/svc/ordersx":      false,
		"spiffe://micromesh.local/ns/reports/svc/any":       true,
		"spiffe://micromesh.local/ns/reportsx/svc/any":      false,
		"spiffe://micromesh.local/ns/micromesh/svc/meshctl": true,
		"spiffe://other.example/ns/shop/svc/orders":         false,
	} {
		if got, _ := billing.Inbound.RBAC.Allowed(Request{Principal: principal, Method: "POST", Path: "/x"}); got != want {
			t.Errorf("billing admits %q: %v, want %v", principal, got, want)
		}
	}
	// A path's allow_from: its callers there and nowhere else; deny_from
	// still wins.
	for _, tc := range []struct {
		principal, path string
		want            bool
	}{
		{"spiffe://micromesh.local/ns/ops/svc/reports", "/pkg.Billing/Report", true},
		{"spiffe://micromesh.local/ns/ops/svc/reports", "/pkg.Billing/Report2", false},
		{"spiffe://micromesh.local/ns/ops/svc/reports", "/pkg.Billing/Charge", false},
		{"spiffe://micromesh.local/ns/audit/svc/any", "/pkg.Billing/Audit/Log", true},
		{"spiffe://micromesh.local/ns/audit/svc/any", "/pkg.Billing/Charge", false},
		{"spiffe://micromesh.local/ns/default/svc/legacy", "/pkg.Billing/Report", false},
		{"spiffe://micromesh.local/ns/default/svc/web", "/pkg.Billing/Report", false}, // the path's deny_from
		{"spiffe://micromesh.local/ns/default/svc/web", "/pkg.Billing/Charge", true},
	} {
		if got, _ := billing.Inbound.RBAC.Allowed(Request{Principal: tc.principal, Method: "POST", Path: tc.path}); got != tc.want {
			t.Errorf("billing admits %s on %s: %v, want %v", tc.principal, tc.path, got, tc.want)
		}
	}
	hosts := func(c *Config) string { return strings.Join(c.Routes[xds.OutboundRoute].Hosts, ",") }
	if h := hosts(build("shop", "orders")); !strings.Contains(h, "billing.default") {
		t.Errorf("shop's proxies reach %s; want billing.default, which admits orders.shop", h)
	}
	if h := hosts(build("reports", "any")); !strings.Contains(h, "billing.default") {
		t.Errorf("reports' proxies reach %s; want billing.default, which admits *.reports", h)
	}
	if h := hosts(build("audit", "any")); !strings.Contains(h, "billing.default") {
		t.Errorf("audit's proxies reach %s; want billing.default, a path of which admits *.audit", h)
	}
	if h := hosts(build("other", "x")); strings.Contains(h, "billing") {
		t.Errorf("other's proxies reach %s; billing admits none of them", h)
	}
}

// A listener's RBAC filters all decide, in order, as Envoy's do: a DENY
// filter ahead of the ALLOW one refuses its callers though the ALLOW one
// admits them (a second filter once replaced the first, silently dropping
// its rules). A rate limit between two RBAC filters is refused.
func TestRBACFiltersChain(t *testing.T) {
	denyLegacy := &rbacfilter.RBAC{Rules: &rbac.RBAC{Action: rbac.RBAC_DENY, Policies: map[string]*rbac.Policy{"legacy": {
		Permissions: []*rbac.Permission{{Rule: &rbac.Permission_Any{Any: true}}},
		Principals: []*rbac.Principal{{Identifier: &rbac.Principal_Authenticated_{Authenticated: &rbac.Principal_Authenticated{
			PrincipalName: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: "spiffe://micromesh.local/ns/default/svc/legacy"}}}}}},
	}}}}
	withDeny := func(r *envoyResources) {
		mutateHCM(t, findListener(r, "inbound"), func(m *hcm.HttpConnectionManager) {
			f := &hcm.HttpFilter{Name: "deny", ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(t, denyLegacy)}}
			m.HttpFilters = append([]*hcm.HttpFilter{f}, m.HttpFilters...)
		})
	}
	r := meshFor(t, "default", "client")
	withDeny(&r)
	c := compiled(t, r)
	for principal, want := range map[string]bool{
		"spiffe://micromesh.local/ns/default/svc/web":    true,
		"spiffe://micromesh.local/ns/default/svc/legacy": false, // the DENY filter
		"spiffe://micromesh.local/ns/prod/svc/web":       false, // the ALLOW filter
	} {
		if got, _ := c.Inbound.RBAC.Allowed(Request{Principal: principal, Method: "GET", Path: "/"}); got != want {
			t.Errorf("admits %s: %v, want %v", principal, got, want)
		}
	}
	refusals(t, []refusal{{"a rate limit between RBAC filters", func(r *envoyResources) {
		withRateLimit(t, r, "inbound", &ratelimitv3.LocalRateLimit{StatPrefix: "rl", TokenBucket: &typev3.TokenBucket{MaxTokens: 1, FillInterval: durationpb.New(time.Second)},
			FilterEnabled: percent(100), FilterEnforced: percent(100)})
		withDeny(r)
		mutateHCM(t, findListener(r, "inbound"), func(m *hcm.HttpConnectionManager) {
			// deny, rbac (ALLOW), local rate limit, router → deny, local rate limit, rbac, router
			m.HttpFilters[1], m.HttpFilters[2] = m.HttpFilters[2], m.HttpFilters[1]
		})
	}, "between RBAC filters"}})
}

// Access loggers: Envoy's stdout and stderr turn the proxy's request log
// on, its OpenTelemetry logger to the control plane turns tap records on;
// what it would not write as asked is refused, naming it.
func TestCompileAccessLogs(t *testing.T) {
	stdout := &xdswire.Any{TypeURL: xdswire.StdoutAccessLogType, Msg: &xdswire.StreamAccessLog{}}
	if on, tap, err := compileAccessLogs(nil); on || tap != nil || err != nil {
		t.Errorf("none: %v %v %v", on, tap, err)
	}
	if on, tap, err := compileAccessLogs([]*xdswire.AccessLog{{Name: "envoy.access_loggers.stdout", TypedConfig: stdout}}); !on || tap != nil || err != nil {
		t.Errorf("stdout: %v %v %v", on, tap, err)
	}
	otel := func(cluster string, attrs ...xdswire.KeyFormat) *xdswire.Any {
		return &xdswire.Any{TypeURL: xdswire.OpenTelemetryAccessLogType, Msg: &xdswire.OpenTelemetryAccessLog{
			GRPCService: &xdswire.GRPCService{EnvoyGRPC: &xdswire.EnvoyGRPC{ClusterName: cluster}}, LogName: "micromesh.tap", Attributes: attrs}}
	}
	on, tap, err := compileAccessLogs([]*xdswire.AccessLog{{Name: "envoy.access_loggers.stdout", TypedConfig: stdout},
		{Name: "tap", TypedConfig: otel("xds_cluster", xdswire.KeyFormat{Key: "url.path", Format: "%REQ(:PATH)%"}, xdswire.KeyFormat{Key: "code", Format: "%RESPONSE_CODE%"})}})
	if !on || err != nil || tap == nil || tap.LogName != "micromesh.tap" || tap.FlushInterval != time.Second ||
		!slices.Equal(tap.Attributes, []TapAttribute{{"url.path", TapPath}, {"code", TapCode}}) {
		t.Errorf("stdout and OpenTelemetry: %v %+v %v", on, tap, err)
	}
	for _, c := range []struct {
		log  *xdswire.AccessLog
		want string
	}{
		{&xdswire.AccessLog{Name: "f", TypedConfig: stdout, Refused: "filter"}, `access log "f": filter is not supported`},
		{&xdswire.AccessLog{Name: "fmt", TypedConfig: &xdswire.Any{TypeURL: xdswire.StdoutAccessLogType, Msg: &xdswire.StreamAccessLog{Refused: "log_format"}}}, "log_format is not supported"},
		{&xdswire.AccessLog{Name: "file", TypedConfig: &xdswire.Any{TypeURL: "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"}}, "type type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog is not supported"},
		{&xdswire.AccessLog{Name: "bare"}, "type none is not supported"},
		{&xdswire.AccessLog{Name: "elsewhere", TypedConfig: otel("collector")}, `cluster "collector": the built-in proxy sends access logs to the control plane only`},
		{&xdswire.AccessLog{Name: "op", TypedConfig: otel("xds_cluster", xdswire.KeyFormat{Key: "ua", Format: "%REQ(USER-AGENT)%"})}, `attribute "ua": format "%REQ(USER-AGENT)%" is not supported`},
		{&xdswire.AccessLog{Name: "mixed", TypedConfig: otel("xds_cluster", xdswire.KeyFormat{Key: "p", Format: "path=%REQ(:PATH)%"})}, `format "path=%REQ(:PATH)%" is not supported`},
		{&xdswire.AccessLog{Name: "body", TypedConfig: &xdswire.Any{TypeURL: xdswire.OpenTelemetryAccessLogType, Msg: &xdswire.OpenTelemetryAccessLog{Refused: "body"}}}, `access log "body": body is not supported`},
	} {
		if _, _, err := compileAccessLogs([]*xdswire.AccessLog{c.log}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.log.Name, err, c.want)
		}
	}
}

// testCRL is a revocation list of one serial (7), signed by a throwaway CA.
func testCRL(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, ca, ca, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	if ca, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: big.NewInt(7), RevocationTime: time.Now()}}}, ca, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl})
}

// The trust bundle's secret carries the CA's revocation list once a
// certificate is revoked; the proxy checks peers against it.
func TestCompileTakesTheRevocationList(t *testing.T) {
	c, err := Compile(meshFor(t, "default", "client").wire(t))
	if err != nil || c.Revocations != nil {
		t.Fatalf("without revocations: %v, list %v", err, c.Revocations)
	}
	r := meshFor(t, "default", "client")
	vc := findSecret(t, &r, "ROOTCA").GetValidationContext()
	vc.Crl, vc.OnlyVerifyLeafCertCrl = &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: testCRL(t)}}, true
	c, err = Compile(r.wire(t))
	if err != nil {
		t.Fatal(err)
	}
	if c.Revocations.Len() != 1 {
		t.Errorf("revocation list of %d, want 1", c.Revocations.Len())
	}
}

// tunnelMesh: db, a TCP service, and the sidecar of its caller web, which
// reaches it at 127.0.0.1:15432 — and db's own sidecar.
func tunnelMesh(t *testing.T) (web, db envoyResources) {
	t.Helper()
	m := &xds.Mesh{TrustDomain: "micromesh.local", Roots: []byte("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"), Services: []xds.Service{
		{Name: "db", Namespace: "default", Protocol: xds.ProtocolTCP, Endpoints: []xds.Endpoint{
			{ID: "d1", Address: "10.0.0.8", Port: 8443, QUICPort: 8443, Kind: xds.KindBuiltin, Health: xds.HealthPassing},
		}},
	}}
	build := func(p xds.Proxy) envoyResources {
		r, err := xds.Build(m, p)
		if err != nil {
			t.Fatal(err)
		}
		return envoyResources{Listeners: r.Listeners, Routes: r.Routes, Clusters: r.Clusters, Endpoints: r.Endpoints, Secrets: r.Secrets}
	}
	web = build(xds.Proxy{NodeID: "w", Namespace: "default", Service: "web", Kind: xds.KindBuiltin, OutboundPort: 15001, CertDir: "/certs",
		Upstreams: []xds.Upstream{{Service: "db", Port: 15432}}})
	db = build(xds.Proxy{NodeID: "d", Namespace: "default", Service: "db", Kind: xds.KindBuiltin, InboundPort: 18443, AppPort: 5432,
		AppProtocol: xds.ProtocolTCP, CertDir: "/certs"})
	return web, db
}

// The caller's tcp_proxy becomes a tunnel listener; the TCP service's
// inbound listeners take CONNECT and end it at the app, whose cluster is
// plain TCP; only CONNECT requests find that route.
func TestCompilesTunnels(t *testing.T) {
	webR, dbR := tunnelMesh(t)
	web := compiled(t, webR)
	if len(web.Tunnels) != 1 {
		t.Fatalf("tunnels = %+v", web.Tunnels)
	}
	if tu := web.Tunnels[0]; *tu != (Tunnel{Name: "upstream|db.default", Address: "127.0.0.1:15432", Cluster: "db.default", Authority: "db.default", IdleTimeout: time.Hour, ConnectAttempts: 3}) {
		t.Errorf("tunnel = %+v", tu)
	}
	if cl := web.Clusters["db.default"]; cl == nil || cl.Transport != TransportQUIC || cl.SAN != "spiffe://micromesh.local/ns/default/svc/db" {
		t.Errorf("db's cluster = %+v", cl)
	}
	// The listener may come before the clusters: the tunnels wait for
	// them, not for a cluster still missing once they came.
	if got := strings.Join(web.Missing(), ","); !strings.Contains(got, "clusters (the tunnels')") {
		t.Errorf("before the clusters came, missing = %q", got)
	}
	res := webR.wire(t)
	res.ClustersReceived = true
	if c, err := Compile(res); err != nil || len(c.Missing()) != 0 {
		t.Errorf("once the clusters came: missing %v, %v", c.Missing(), err)
	}
	db := compiled(t, dbR)
	for _, in := range []*Inbound{db.Inbound, db.InboundQUIC} {
		if !in.Connect {
			t.Errorf("%s takes no CONNECT", in.Name)
		}
		r, _ := in.Route.LookupRequest("db.default", Request{Method: "CONNECT"})
		if r == nil || !r.Tunnel || r.Cluster != "inbound|app" || r.IdleTimeout != time.Hour || r.Timeout != 0 {
			t.Errorf("%s: CONNECT routes to %+v", in.Name, r)
		}
		if r, known := in.Route.LookupRequest("db.default", Request{Method: "GET", Path: "/"}); r != nil || !known {
			t.Errorf("%s: GET / routes to %+v (known %v), want no route", in.Name, r, known)
		}
	}
	if app := db.Clusters["inbound|app"]; app.Transport != TransportPlain || app.HTTP2 || app.Endpoints[0].Address != "127.0.0.1:5432" {
		t.Errorf("db's app cluster = %+v", app)
	}
	// An HTTP service's routes never take CONNECT.
	c := compiled(t, meshFor(t, "default", "client"))
	if c.Inbound.Connect {
		t.Error("an HTTP service's inbound listener takes CONNECT")
	}
	if r, _ := c.Inbound.Route.LookupRequest("x", Request{Method: "CONNECT"}); r != nil {
		t.Errorf("CONNECT matched an HTTP route: %+v", r)
	}
}

func TestCompileRefusesTunnelsItCannotHonour(t *testing.T) {
	tcpProxy := func(r *envoyResources) *listener.Listener { return findListener(r, "upstream|db.default") }
	mutateTCP := func(t *testing.T, l *listener.Listener, f func(*tcpproxyv3.TcpProxy)) {
		var tp tcpproxyv3.TcpProxy
		if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&tp); err != nil {
			t.Fatal(err)
		}
		f(&tp)
		a, err := anypb.New(&tp)
		if err != nil {
			t.Fatal(err)
		}
		l.FilterChains[0].Filters[0].ConfigType = &listener.Filter_TypedConfig{TypedConfig: a}
	}
	for _, tc := range []struct {
		name   string
		caller bool // a change to web's resources, else db's
		mutate func(*envoyResources)
		want   string
	}{
		{"raw TCP to the cluster", true, func(r *envoyResources) {
			mutateTCP(t, tcpProxy(r), func(tp *tcpproxyv3.TcpProxy) { tp.TunnelingConfig = nil })
		}, "without tunneling_config.hostname is not supported"},
		{"weighted clusters of none", true, func(r *envoyResources) {
			mutateTCP(t, tcpProxy(r), func(tp *tcpproxyv3.TcpProxy) {
				tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{}}
			})
		}, "weighted_clusters has no clusters"},
		{"a weighted cluster of weight 0", true, func(r *envoyResources) {
			mutateTCP(t, tcpProxy(r), func(tp *tcpproxyv3.TcpProxy) {
				tp.ClusterSpecifier = &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{
					Clusters: []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{{Name: "db.default", Weight: 0}}}}
			})
		}, "has weight 0"},
		{"no connect attempt", true, func(r *envoyResources) {
			mutateTCP(t, tcpProxy(r), func(tp *tcpproxyv3.TcpProxy) { tp.MaxConnectAttempts = wrapperspb.UInt32(0) })
		}, "max_connect_attempts 0"},
		{"a tunnel listener off loopback", true, func(r *envoyResources) {
			tcpProxy(r).Address.GetSocketAddress().Address = "0.0.0.0"
		}, "must be on loopback"},
		{"CONNECT forwarded, not ended", false, func(r *envoyResources) {
			mutateHCM(t, findListener(r, "inbound"), func(m *hcm.HttpConnectionManager) {
				m.GetRouteConfig().VirtualHosts[0].Routes[0].GetRoute().UpgradeConfigs[0].ConnectConfig = nil
			})
		}, "CONNECT without connect_config"},
		{"connect_config on a path route", false, func(r *envoyResources) {
			mutateHCM(t, findListener(r, "inbound"), func(m *hcm.HttpConnectionManager) {
				m.GetRouteConfig().VirtualHosts[0].Routes[0].Match = &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}}
			})
		}, "connect_config on a route without connect_matcher"},
		{"a CONNECT route with retries", false, func(r *envoyResources) {
			mutateHCM(t, findListener(r, "inbound"), func(m *hcm.HttpConnectionManager) {
				m.GetRouteConfig().VirtualHosts[0].Routes[0].GetRoute().RetryPolicy = &route.RetryPolicy{RetryOn: "5xx"}
			})
		}, "with retries is not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			web, db := tunnelMesh(t)
			r := &db
			if tc.caller {
				r = &web
			}
			tc.mutate(r)
			if _, err := Compile(r.wire(t)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Compile = %v; want an error mentioning %q", err, tc.want)
			}
		})
	}
}
