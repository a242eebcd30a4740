package xdswire

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbac "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	otelalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/open_telemetry/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	faultcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	rbacfilter "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	tracingv3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	otlpcommon "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/micromesh/micromesh/xds"
)

// TestDecodesWhatTheControlPlaneServes decodes every resource the control
// plane builds for built-in sidecars (an app namespace and the platform's,
// every kind of endpoint, a policy with every knob) and checks each
// against go-control-plane's reading of the same bytes.
func TestDecodesWhatTheControlPlaneServes(t *testing.T) {
	policy := xds.DefaultPolicy
	policy.LoadBalancer = "round_robin"
	m := &xds.Mesh{TrustDomain: "micromesh.local", Roots: []byte("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"), Tracing: &xds.Tracing{SamplingPercent: 2.5}, Services: []xds.Service{
		{Name: "hello", Namespace: "default", Protocol: xds.ProtocolGRPC, Endpoints: []xds.Endpoint{
			{ID: "h1", Address: "10.0.0.1", Port: 8443, QUICPort: 8443, Kind: xds.KindBuiltin, Health: xds.HealthPassing, Region: "r", Zone: "a", Weight: 3},
			{ID: "h2", Address: "10.0.0.2", Port: 8443, QUICPort: 8443, Kind: xds.KindBuiltin, Health: xds.HealthCritical, Zone: "b"},
		}},
		{Name: "world", Namespace: "default", Protocol: xds.ProtocolHTTP, Policy: policy, Endpoints: []xds.Endpoint{
			{ID: "w1", Address: "10.0.0.3", Port: 15006, Kind: xds.KindEnvoy, Health: xds.HealthWarning},
		}},
		{Name: "store", Namespace: xds.SystemNamespace, Protocol: xds.ProtocolGRPC, Endpoints: []xds.Endpoint{
			{ID: "s1", Address: "10.0.0.9", Port: 9443, QUICPort: 9443, Kind: xds.KindBuiltin, Health: xds.HealthPassing},
		}},
		{Name: "db", Namespace: "default", Protocol: xds.ProtocolTCP, Endpoints: []xds.Endpoint{
			{ID: "d1", Address: "10.0.0.8", Port: 8443, QUICPort: 8443, Kind: xds.KindBuiltin, Health: xds.HealthPassing},
		}},
	}, Externals: []xds.External{ // one with its own roots, one with the system's
		{Name: "maps", Namespace: "default", Host: "maps.example", Port: 8443, CA: []byte("-----BEGIN CERTIFICATE-----\nY\n-----END CERTIFICATE-----\n")},
		{Name: "payments", Namespace: "default", Host: "api.payments.example", Port: 443},
		{Name: "rates", Namespace: "default", Host: "rates.example", Port: 443, Protocol: xds.ProtocolGRPC},
	}}
	seen := map[string]int{}
	proxies := []xds.Proxy{{NodeID: "n", Service: "client", Kind: xds.KindBuiltin,
		InboundPort: 18443, OutboundPort: 15001, AppPort: 8080, AppProtocol: xds.ProtocolGRPC, CertDir: "/certs"}}
	// A TCP service's sidecar, which reaches a TCP service itself.
	proxies = append(proxies, xds.Proxy{NodeID: "d", Service: "db", Kind: xds.KindBuiltin, InboundPort: 18443, AppPort: 5432,
		AppProtocol: xds.ProtocolTCP, CertDir: "/certs", Upstreams: []xds.Upstream{{Service: "db", Namespace: "default", Port: 15432}}})
	for i, ns := range []string{"default", xds.SystemNamespace, "default"} {
		p := proxies[i/2]
		p.Namespace = ns
		r, err := xds.Build(m, p)
		if err != nil {
			t.Fatal(err)
		}
		for kind, ms := range map[string][]proto.Message{
			"listener": messages(r.Listeners), "route": messages(r.Routes), "cluster": messages(r.Clusters),
			"endpoints": messages(r.Endpoints), "secret": messages(r.Secrets),
		} {
			for _, m := range ms {
				decodeLike(t, m)
				seen[kind]++
			}
		}
	}
	for _, k := range []string{"listener", "route", "cluster", "endpoints", "secret"} {
		if seen[k] == 0 {
			t.Errorf("the control plane built no %s", k)
		}
	}
}

func messages[M proto.Message](in []M) []proto.Message {
	out := make([]proto.Message, len(in))
	for i, m := range in {
		out[i] = m
	}
	return out
}

func prefix(p string) *matcher.StringMatcher {
	return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: p}}
}

// TestDecodesEveryRBACRule covers the RBAC rules, string and header
// matchers the proxy compiles, beyond what the control plane builds today.
func TestDecodesEveryRBACRule(t *testing.T) {
	str := []*matcher.StringMatcher{
		{MatchPattern: &matcher.StringMatcher_Exact{Exact: "/a"}},
		{MatchPattern: &matcher.StringMatcher_Exact{Exact: ""}},
		{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: "/b"}, IgnoreCase: true},
		{MatchPattern: &matcher.StringMatcher_Suffix{Suffix: "c"}},
		{MatchPattern: &matcher.StringMatcher_Contains{Contains: "d"}},
		{MatchPattern: &matcher.StringMatcher_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: "e.*"}}},
	}
	var perms []*rbac.Permission
	for _, s := range str {
		perms = append(perms, &rbac.Permission{Rule: &rbac.Permission_UrlPath{UrlPath: &matcher.PathMatcher{Rule: &matcher.PathMatcher_Path{Path: s}}}})
	}
	perms = append(perms,
		&rbac.Permission{Rule: &rbac.Permission_Any{Any: false}},
		&rbac.Permission{Rule: &rbac.Permission_Header{Header: &route.HeaderMatcher{Name: ":method", InvertMatch: true,
			HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: str[0]}}}},
		&rbac.Permission{Rule: &rbac.Permission_Header{Header: &route.HeaderMatcher{Name: "x-a",
			HeaderMatchSpecifier: &route.HeaderMatcher_PresentMatch{PresentMatch: false}}}},
		&rbac.Permission{Rule: &rbac.Permission_Header{Header: &route.HeaderMatcher{Name: "x-b", TreatMissingHeaderAsEmpty: true,
			HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: str[0]}}}},
		&rbac.Permission{Rule: &rbac.Permission_NotRule{NotRule: &rbac.Permission{Rule: &rbac.Permission_Any{Any: true}}}},
		&rbac.Permission{Rule: &rbac.Permission_AndRules{AndRules: &rbac.Permission_Set{Rules: perms[:2]}}},
		&rbac.Permission{Rule: &rbac.Permission_OrRules{OrRules: &rbac.Permission_Set{Rules: perms[2:4]}}},
	)
	prins := []*rbac.Principal{
		{Identifier: &rbac.Principal_Any{Any: true}},
		{Identifier: &rbac.Principal_Authenticated_{Authenticated: &rbac.Principal_Authenticated{}}},
		{Identifier: &rbac.Principal_Authenticated_{Authenticated: &rbac.Principal_Authenticated{PrincipalName: prefix("spiffe://td/")}}},
	}
	prins = append(prins,
		&rbac.Principal{Identifier: &rbac.Principal_NotId{NotId: prins[2]}},
		&rbac.Principal{Identifier: &rbac.Principal_AndIds{AndIds: &rbac.Principal_Set{Ids: prins[:2]}}},
		&rbac.Principal{Identifier: &rbac.Principal_OrIds{OrIds: &rbac.Principal_Set{Ids: prins[1:3]}}},
	)
	f := &rbacfilter.RBAC{Rules: &rbac.RBAC{Action: rbac.RBAC_DENY, Policies: map[string]*rbac.Policy{
		"a": {Permissions: perms, Principals: prins},
		"b": {},
	}}}
	got := decodeLike(t, f).(*RBACFilter)
	if got.Rules.Action != RBACDeny || len(got.Rules.Policies["a"].Permissions) != len(perms) || got.Rules.Policies["b"] == nil {
		t.Fatalf("decoded %+v", got.Rules)
	}
}

// TestDecodesEveryRouteField covers a route's retry policy, timeouts and
// header changes.
func TestDecodesEveryRouteField(t *testing.T) {
	rc := &route.RouteConfiguration{Name: "r", RequestMirrorPolicies: []*route.RouteAction_RequestMirrorPolicy{{Cluster: "rc-m"}}, VirtualHosts: []*route.VirtualHost{{
		Name: "v", Domains: []string{"a", "*"},
		RequestMirrorPolicies:  []*route.RouteAction_RequestMirrorPolicy{{Cluster: "vh-m"}},
		RequestHeadersToAdd:    []*core.HeaderValueOption{{Header: &core.HeaderValue{Key: "x-a", Value: "1"}}},
		RequestHeadersToRemove: []string{"x-b"},
		Routes: []*route.Route{{
			Name:   "exact",
			Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Path{Path: "/a.B/C"}, CaseSensitive: wrapperspb.Bool(false)},
			Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "c"}}},
		}, {
			Name:  "rest",
			Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: ""}},
			Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "c"},
				Timeout: durationpb.New(1500 * time.Millisecond),
				RetryPolicy: &route.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(0), PerTryTimeout: durationpb.New(time.Microsecond), RetriableStatusCodes: []uint32{503, 429},
					RetryBackOff: &route.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Nanosecond), MaxInterval: durationpb.New(0)}},
				RequestMirrorPolicies: []*route.RouteAction_RequestMirrorPolicy{
					{Cluster: "m", RuntimeFraction: &core.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 5, Denominator: typev3.FractionalPercent_TEN_THOUSAND}},
						DisableShadowHostSuffixAppend: true, HostRewriteLiteral: "h", TraceSampled: wrapperspb.Bool(true)},
					{Cluster: "n", ClusterHeader: "x-m"},
				},
			}},
			RequestHeadersToAdd:    []*core.HeaderValueOption{{Header: &core.HeaderValue{Key: "x-c", Value: "%DOWNSTREAM_PEER_URI_SAN%"}}},
			RequestHeadersToRemove: []string{"x-d"},
		}, {
			Name:  "split",
			Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/s"}},
			Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_WeightedClusters{WeightedClusters: &route.WeightedCluster{
				Clusters: []*route.WeightedCluster_ClusterWeight{
					{Name: "c~v1", Weight: wrapperspb.UInt32(90)}, {Name: "c~v2", Weight: wrapperspb.UInt32(0)}, {Name: "c~v3"},
				},
				//lint:ignore SA1019 decoded, as Envoy still reads it
				TotalWeight: wrapperspb.UInt32(90),
			}}}},
		}},
	}}}
	got := decodeLike(t, rc).(*RouteConfiguration)
	if got.Refused != "" || got.VirtualHosts[0].Refused != "" || got.RequestMirrorPolicies[0].Cluster != "rc-m" || got.VirtualHosts[0].RequestMirrorPolicies[0].Cluster != "vh-m" {
		t.Fatalf("decoded the configuration's and host's mirrors as %+v, %+v", got.RequestMirrorPolicies, got.VirtualHosts[0].RequestMirrorPolicies)
	}
	if m := got.VirtualHosts[0].Routes[0].Match; m.Path == nil || *m.Path != "/a.B/C" || m.Prefix != nil || m.CaseSensitive == nil || *m.CaseSensitive {
		t.Fatalf("decoded the exact match as %+v", m)
	}
	r := got.VirtualHosts[0].Routes[1]
	if r.Match.Prefix == nil || *r.Match.Prefix != "" || r.Route.RetryPolicy.NumRetries == nil || *r.Route.RetryPolicy.NumRetries != 0 ||
		r.Route.Timeout.D() != 1500*time.Millisecond || r.Route.RetryPolicy.RetryBackOff.MaxInterval == nil || fmt.Sprint(r.Route.RetryPolicy.RetriableStatusCodes) != "[503 429]" {
		t.Fatalf("decoded %+v", r)
	}
	if mp := r.Route.RequestMirrorPolicies; len(mp) != 2 || mp[0].Cluster != "m" || mp[0].RuntimeFraction.DefaultValue.Numerator != 5 ||
		!mp[0].DisableShadowHostSuffixAppend || mp[0].HostRewriteLiteral != "h" || mp[0].Refused != "" || mp[1].Refused != "cluster_header" {
		t.Fatalf("decoded the mirror policies as %+v", mp)
	}
	wc := got.VirtualHosts[0].Routes[2].Route.WeightedClusters
	if wc == nil || len(wc.Clusters) != 3 || *wc.Clusters[0].Weight != 90 || wc.Clusters[1].Weight == nil || *wc.Clusters[1].Weight != 0 ||
		wc.Clusters[2].Weight != nil || *wc.TotalWeight != 90 || wc.Clusters[2].Name != "c~v3" {
		t.Fatalf("decoded the weighted clusters as %+v", wc)
	}
}

// TestRecordsWhatItDoesNotDecode: oneof alternatives the proxy cannot honour
// are named, so the compiler refuses them instead of reading them as unset.
func TestRecordsWhatItDoesNotDecode(t *testing.T) {
	cases := []struct {
		m    proto.Message
		get  func(any) string
		want string
	}{
		{&rbac.Permission{Rule: &rbac.Permission_DestinationPort{DestinationPort: 80}}, func(m any) string { return m.(*Permission).Unsupported }, "destination_port"},
		{&rbac.Principal{Identifier: &rbac.Principal_RemoteIp{RemoteIp: &core.CidrRange{AddressPrefix: "10.0.0.0"}}}, func(m any) string { return m.(*Principal).Unsupported }, "remote_ip"},
		{&route.RouteMatch{PathSpecifier: &route.RouteMatch_PathMatchPolicy{PathMatchPolicy: &core.TypedExtensionConfig{Name: "x"}}}, func(m any) string { return m.(*RouteMatch).Unsupported }, "path_match_policy"},
		{&route.RouteMatch{PathSpecifier: &route.RouteMatch_Path{Path: "/x"}, DynamicMetadata: []*matcher.MetadataMatcher{{Filter: "f"}}}, func(m any) string { return m.(*RouteMatch).Conditions }, "dynamic_metadata"},
		{&route.Route{Action: &route.Route_Redirect{Redirect: &route.RedirectAction{}}}, func(m any) string { return m.(*Route).Unsupported }, "redirect"},
		{&route.RouteAction{ClusterSpecifier: &route.RouteAction_ClusterHeader{ClusterHeader: "x"}}, func(m any) string { return m.(*RouteAction).Unsupported }, "cluster_header"},
		{&tlsv3.Secret{Type: &tlsv3.Secret_GenericSecret{GenericSecret: &tlsv3.GenericSecret{}}}, func(m any) string { return m.(*Secret).Unsupported }, "generic_secret"},
		//lint:ignore SA1019 a deprecated field is still one a control plane may send.
		{&tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextCertificateProviderInstance{ValidationContextCertificateProviderInstance: &tlsv3.CommonTlsContext_CertificateProviderInstance{InstanceName: "x"}}}, func(m any) string { return m.(*CommonTLSContext).Unsupported }, "validation_context_certificate_provider_instance"},
		{&core.Address{Address: &core.Address_Pipe{Pipe: &core.Pipe{Path: "/p"}}}, func(m any) string { return m.(*Address).Unsupported }, "pipe"},
	}
	targets := map[string]func() unmarshaler{
		"Permission": func() unmarshaler { return &Permission{} }, "Principal": func() unmarshaler { return &Principal{} },
		"HeaderMatcher": func() unmarshaler { return &HeaderMatcher{} },
		"RouteMatch":    func() unmarshaler { return &RouteMatch{} }, "Route": func() unmarshaler { return &Route{} },
		"RouteAction": func() unmarshaler { return &RouteAction{} }, "Secret": func() unmarshaler { return &Secret{} },
		"CommonTlsContext": func() unmarshaler { return &CommonTLSContext{} },
		"Address":          func() unmarshaler { return &Address{} },
	}
	for _, c := range cases {
		name := string(c.m.ProtoReflect().Descriptor().Name())
		b, err := proto.Marshal(c.m)
		if err != nil {
			t.Fatal(err)
		}
		got := targets[name]()
		if err := got.unmarshal(b); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if u := c.get(got); u != c.want {
			t.Errorf("%s: Unsupported = %q, want %q", name, u, c.want)
		}
	}
	// A CEL condition on a policy and a matcher-based filter: raw fields,
	// as the types are large to build.
	p := &Policy{}
	if err := p.unmarshal(protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), nil)); err != nil || p.Unsupported != "condition" {
		t.Errorf("policy with a condition: %v, Unsupported %q", err, p.Unsupported)
	}
	fl := &RBACFilter{}
	if err := fl.unmarshal(protowire.AppendBytes(protowire.AppendTag(nil, 4, protowire.BytesType), nil)); err != nil || fl.Unsupported != "matcher" {
		t.Errorf("filter with a matcher: %v, Unsupported %q", err, fl.Unsupported)
	}
}

// TestRefusesMalformedInput: truncated messages, wrong wire types, strings
// that are not UTF-8, durations out of range and unknown resource types
// are errors, not half-read resources.
func TestRefusesMalformedInput(t *testing.T) {
	l, err := proto.Marshal(&listener.Listener{Name: "in", Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{Address: "0.0.0.0"}}}})
	if err != nil {
		t.Fatal(err)
	}
	tag := func(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }
	cases := map[string]struct {
		url  string
		b    []byte
		want string
	}{
		"truncated":         {ListenerType, l[:len(l)-2], "field 2"},
		"wrong wire type":   {ListenerType, protowire.AppendVarint(tag(1, protowire.VarintType), 7), "wire type"},
		"not UTF-8":         {ListenerType, protowire.AppendBytes(tag(1, protowire.BytesType), []byte{0xff, 0xfe}), "UTF-8"},
		"bad tag":           {ListenerType, []byte{0x00}, "invalid field number"},
		"end group alone":   {ListenerType, tag(5, protowire.EndGroupType), "wire type"},
		"unknown type":      {typePrefix + "google.protobuf.Struct", nil, "not one the built-in proxy reads"},
		"duration too long": {RouteType, routeWithTimeout(1 << 62), "out of range"},
	}
	for name, c := range cases {
		_, err := Decode(&Any{TypeURL: c.url, Value: c.b})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one containing %q", name, err, c.want)
		}
	}
	// A field this package does not read is skipped whatever it holds,
	// groups included.
	skip := protowire.AppendVarint(tag(100, protowire.VarintType), 1)
	skip = append(append(skip, tag(101, protowire.StartGroupType)...), tag(101, protowire.EndGroupType)...)
	skip = protowire.AppendFixed32(append(skip, tag(102, protowire.Fixed32Type)...), 1)
	skip = protowire.AppendFixed64(append(skip, tag(103, protowire.Fixed64Type)...), 1)
	got, err := Decode(&Any{TypeURL: ListenerType, Value: append(skip, l...)})
	if err != nil || got.(*Listener).Name != "in" {
		t.Errorf("unknown fields: %v, %+v", err, got)
	}
}

func routeWithTimeout(secs int64) []byte {
	b, err := proto.Marshal(&route.RouteConfiguration{VirtualHosts: []*route.VirtualHost{{Routes: []*route.Route{{
		Action: &route.Route_Route{Route: &route.RouteAction{Timeout: &durationpb.Duration{Seconds: secs}}}}}}}})
	if err != nil {
		panic(err)
	}
	return b
}

func TestDurationJSON(t *testing.T) {
	for d, want := range map[time.Duration]string{0: `"0s"`, time.Second: `"1s"`, 1500 * time.Millisecond: `"1.500s"`,
		time.Microsecond: `"0.000001s"`, time.Nanosecond: `"0.000000001s"`, -250 * time.Millisecond: `"-0.250s"`} {
		b, _ := Duration(d).MarshalJSON()
		if string(b) != want {
			t.Errorf("%v: %s, want %s", d, b, want)
		}
	}
}

// TestOneofKeepsTheLastAlternative: two messages on the wire merge, and a
// oneof keeps the alternative set last, as go-control-plane reads it.
func TestOneofKeepsTheLastAlternative(t *testing.T) {
	cat := func(ms ...proto.Message) []byte {
		var b []byte
		for _, m := range ms {
			mb, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			b = append(b, mb...)
		}
		return b
	}
	header := &rbac.Permission{Rule: &rbac.Permission_Header{Header: &route.HeaderMatcher{Name: "x",
		HeaderMatchSpecifier: &route.HeaderMatcher_PresentMatch{PresentMatch: true}}}}
	b := cat(&rbac.Permission{Rule: &rbac.Permission_Any{Any: true}}, header)
	var theirs rbac.Permission
	if err := proto.Unmarshal(b, &theirs); err != nil {
		t.Fatal(err)
	}
	ours := &Permission{}
	if err := ours.unmarshal(b); err != nil {
		t.Fatal(err)
	}
	if ours.Any != nil || ours.Header == nil {
		t.Errorf("any then header decoded as %+v, want the header rule alone", ours)
	}
	checkAgrees(t, ours, &theirs)
	// An unsupported alternative after a supported one wins too.
	b = cat(header, &rbac.Permission{Rule: &rbac.Permission_DestinationPort{DestinationPort: 1}})
	ours = &Permission{}
	if err := ours.unmarshal(b); err != nil || ours.Header != nil || ours.Unsupported != "destination_port" {
		t.Errorf("header then destination_port decoded as %+v (%v)", ours, err)
	}
}

// TestDecodesEveryOutlierField: the enforcement percentages and the split
// of local-origin errors, which change what Envoy ejects; the panic
// threshold and the least-request choices.
func TestDecodesEveryOutlierField(t *testing.T) {
	u := wrapperspb.UInt32
	cl := &cluster.Cluster{Name: "c", ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC}, OutlierDetection: &cluster.OutlierDetection{
		Consecutive_5Xx: u(3), Interval: durationpb.New(time.Second), BaseEjectionTime: durationpb.New(time.Second), MaxEjectionPercent: u(50),
		EnforcingConsecutive_5Xx: u(0), EnforcingSuccessRate: u(0), EnforcingConsecutiveGatewayFailure: u(1), SplitExternalLocalOriginErrors: true,
		ConsecutiveLocalOriginFailure: u(2), EnforcingConsecutiveLocalOriginFailure: u(100), EnforcingLocalOriginSuccessRate: u(0),
		EnforcingFailurePercentage: u(4), EnforcingFailurePercentageLocalOrigin: u(5), MaxEjectionTime: durationpb.New(time.Minute),
	},
		CommonLbConfig: &cluster.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 12.5}},
		LbConfig:       &cluster.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &cluster.Cluster_LeastRequestLbConfig{ChoiceCount: u(3)}},
	}
	got := decodeLike(t, cl).(*Cluster)
	if got.CommonLBConfig.HealthyPanicThreshold.Value != 12.5 || *got.LeastRequestLBConfig.ChoiceCount != 3 {
		t.Fatalf("decoded %+v, %+v", got.CommonLBConfig, got.LeastRequestLBConfig)
	}
	od := got.OutlierDetection
	if !od.SplitExternalLocalOriginErrors || *od.EnforcingConsecutive5xx != 0 || *od.EnforcingFailurePercentageLocalOrigin != 5 {
		t.Fatalf("decoded %+v", od)
	}
}

// TestDecodesTheRequestIDSetting: generate_request_id, unset (Envoy's
// default: on) and set either way, agrees with go-control-plane's reading.
func TestDecodesTheRequestIDSetting(t *testing.T) {
	for _, v := range []*wrapperspb.BoolValue{nil, wrapperspb.Bool(false), wrapperspb.Bool(true)} {
		got := decodeLike(t, &hcm.HttpConnectionManager{StatPrefix: "x", GenerateRequestId: v}).(*HTTPConnectionManager)
		if (v == nil) != (got.GenerateRequestID == nil) || v != nil && *got.GenerateRequestID != v.Value {
			t.Errorf("generate_request_id %v decoded as %v", v, got.GenerateRequestID)
		}
	}
}

// TestDecodesTheLocalRateLimit: the filter's fields the proxy reads agree
// with go-control-plane's reading, the status by its enum name in JSON.
func TestDecodesTheLocalRateLimit(t *testing.T) {
	got := decodeLike(t, &ratelimitv3.LocalRateLimit{
		StatPrefix:                     "inbound",
		Status:                         &typev3.HttpStatus{Code: typev3.StatusCode_TooManyRequests},
		TokenBucket:                    &typev3.TokenBucket{MaxTokens: 20, TokensPerFill: wrapperspb.UInt32(10), FillInterval: durationpb.New(time.Second)},
		FilterEnabled:                  &core.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100}, RuntimeKey: "k"},
		FilterEnforced:                 &core.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 5000, Denominator: typev3.FractionalPercent_TEN_THOUSAND}},
		RateLimitedAsResourceExhausted: true,
	}).(*LocalRateLimit)
	if got.Status.Code != 429 || got.TokenBucket.MaxTokens != 20 || *got.TokenBucket.TokensPerFill != 10 || got.FilterEnforced.DefaultValue.Of() != 0.5 || got.Refused != "" {
		t.Errorf("decoded %+v", got)
	}
	if l := decodeLike(t, &ratelimitv3.LocalRateLimit{StatPrefix: "x", AlwaysConsumeDefaultTokenBucket: wrapperspb.Bool(true)}).(*LocalRateLimit); l.Refused != "always_consume_default_token_bucket" {
		t.Errorf("always_consume_default_token_bucket true: Refused %q", l.Refused)
	}
}

// TestDecodesTheFault: the fault filter's fields the proxy reads agree
// with go-control-plane's reading; the oneofs keep the last member; the
// header-driven kinds and what the proxy does not do are named.
func TestDecodesTheFault(t *testing.T) {
	got := decodeLike(t, &faultv3.HTTPFault{
		Delay: &faultcommon.FaultDelay{FaultDelaySecifier: &faultcommon.FaultDelay_FixedDelay{FixedDelay: durationpb.New(250 * time.Millisecond)},
			Percentage: &typev3.FractionalPercent{Numerator: 10}},
		Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 0}, Percentage: &typev3.FractionalPercent{Numerator: 5, Denominator: typev3.FractionalPercent_MILLION},
			ResponseBody: "chaos"},
		UpstreamCluster: "b.default",
		Headers:         []*route.HeaderMatcher{{Name: "x-chaos", HeaderMatchSpecifier: &route.HeaderMatcher_PresentMatch{PresentMatch: true}}},
		MaxActiveFaults: wrapperspb.UInt32(0),
	}).(*HTTPFault)
	if got.Abort.GRPCStatus == nil || *got.Abort.GRPCStatus != 0 || got.Abort.HTTPStatus != nil || got.MaxActiveFaults == nil || *got.MaxActiveFaults != 0 || got.Refused != "" {
		t.Errorf("decoded %+v, abort %+v", got, got.Abort)
	}
	for _, tc := range []struct {
		m    *faultv3.HTTPFault
		read func(*HTTPFault) string
		want string
	}{
		{&faultv3.HTTPFault{DownstreamNodes: []string{"n"}}, func(f *HTTPFault) string { return f.Refused }, "downstream_nodes"},
		{&faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HeaderAbort_{HeaderAbort: &faultv3.FaultAbort_HeaderAbort{}}}},
			func(f *HTTPFault) string { return f.Abort.Unsupported }, "header_abort"},
		{&faultv3.HTTPFault{Delay: &faultcommon.FaultDelay{FaultDelaySecifier: &faultcommon.FaultDelay_HeaderDelay_{HeaderDelay: &faultcommon.FaultDelay_HeaderDelay{}}}},
			func(f *HTTPFault) string { return f.Delay.Unsupported }, "header_delay"},
	} {
		if got := tc.read(decodeLike(t, tc.m).(*HTTPFault)); got != tc.want {
			t.Errorf("%v: named %q, want %q", tc.m, got, tc.want)
		}
	}
	// A later member of a oneof replaces an earlier one.
	a, _ := proto.Marshal(&faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HeaderAbort_{HeaderAbort: &faultv3.FaultAbort_HeaderAbort{}}})
	b, _ := proto.Marshal(&faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 503}})
	var abort FaultAbort
	if err := abort.unmarshal(append(a, b...)); err != nil || abort.Unsupported != "" || abort.HTTPStatus == nil || *abort.HTTPStatus != 503 {
		t.Errorf("header_abort then http_status: %+v, %v", abort, err)
	}
}

// TestDecodesProtocolOptions: the protocol options agree with
// go-control-plane's reading, and a refusal deep inside is named with its
// path; an accepted setting is not.
func TestDecodesProtocolOptions(t *testing.T) {
	l := decodeLike(t, &listener.Listener{Name: "q", UdpListenerConfig: &listener.UdpListenerConfig{QuicOptions: &listener.QuicProtocolOptions{
		QuicProtocolOptions: &core.QuicProtocolOptions{InitialStreamWindowSize: wrapperspb.UInt32(1 << 20), ConnectionKeepalive: &core.QuicKeepAliveSettings{MaxInterval: durationpb.New(time.Second)}},
	}}}).(*Listener)
	if l.UDPListenerConfig == nil || l.UDPListenerConfig.QUICOptions == nil || l.Refused != "udp_listener_config.quic_options.quic_protocol_options.connection_keepalive" {
		t.Errorf("listener: %+v, refused %q", l.UDPListenerConfig, l.Refused)
	}
	m := decodeLike(t, &hcm.HttpConnectionManager{StatPrefix: "x",
		Http2ProtocolOptions:      &core.Http2ProtocolOptions{HpackTableSize: wrapperspb.UInt32(1)},
		Http3ProtocolOptions:      &core.Http3ProtocolOptions{DisableQpack: true},
		CommonHttpProtocolOptions: &core.HttpProtocolOptions{IdleTimeout: durationpb.New(time.Minute)},
	}).(*HTTPConnectionManager)
	if m.Refused != "" || m.HTTP2Options == nil || m.HTTP3Options == nil || m.CommonOptions.IdleTimeout.D() != time.Minute {
		t.Errorf("accepted options: refused %q, %+v", m.Refused, m)
	}
	if m := decodeLike(t, &hcm.HttpConnectionManager{StatPrefix: "x", Http2ProtocolOptions: &core.Http2ProtocolOptions{AllowConnect: true}}).(*HTTPConnectionManager); m.Refused != "" || !m.HTTP2Options.AllowConnect {
		t.Errorf("allow_connect (a TCP service's inbound, as Envoy's CONNECT example sets it): refused %q", m.Refused)
	}
	for v, want := range map[bool]string{false: "", true: "enable_scone"} {
		b, _ := proto.Marshal(&core.QuicProtocolOptions{EnableScone: wrapperspb.Bool(v)})
		var q QUICOptions
		if err := q.unmarshal(b); err != nil || q.Refused != want {
			t.Errorf("enable_scone %v: refused %q, %v; want %q", v, q.Refused, err, want)
		}
	}
}

// TestDecodesRouteMatches: regex and segment-prefix paths, query
// parameter matchers, gRPC and runtime-fraction conditions agree with
// go-control-plane's reading.
func TestDecodesRouteMatches(t *testing.T) {
	action := &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "c"}}}
	rc := decodeLike(t, &route.RouteConfiguration{Name: "r", VirtualHosts: []*route.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*route.Route{
		{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: "/v[0-9]+"}}}, Action: action},
		{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api"},
			QueryParameters: []*route.QueryParameterMatcher{
				{Name: "a", QueryParameterMatchSpecifier: &route.QueryParameterMatcher_StringMatch{StringMatch: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: "x"}}}},
				{Name: "b", QueryParameterMatchSpecifier: &route.QueryParameterMatcher_PresentMatch{PresentMatch: true}},
			},
			Grpc:            &route.RouteMatch_GrpcRouteMatchOptions{},
			RuntimeFraction: &core.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 5, Denominator: typev3.FractionalPercent_TEN_THOUSAND}},
		}, Action: action},
	}}}}).(*RouteConfiguration)
	m0, m1 := rc.VirtualHosts[0].Routes[0].Match, rc.VirtualHosts[0].Routes[1].Match
	if m0.SafeRegex == nil || m0.SafeRegex.Regex != "/v[0-9]+" || m1.PathSeparatedPrefix == nil || len(m1.QueryParameters) != 2 || m1.GRPC == nil ||
		m1.RuntimeFraction.DefaultValue.Of() != 0.0005 || m0.Unsupported != "" || m1.Conditions != "" {
		t.Errorf("decoded %+v / %+v", m0, m1)
	}
}

// TestDecodesHeaderMatcherKinds: range and the deprecated string
// specifiers agree with go-control-plane's reading (int64s are JSON
// strings in both).
func TestDecodesHeaderMatcherKinds(t *testing.T) {
	hm := func(h *route.HeaderMatcher) *route.Route {
		return &route.Route{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}, Headers: []*route.HeaderMatcher{h}},
			Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "c"}}}}
	}
	rc := decodeLike(t, &route.RouteConfiguration{Name: "r", VirtualHosts: []*route.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*route.Route{
		hm(&route.HeaderMatcher{Name: "n", HeaderMatchSpecifier: &route.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: -5, End: 1 << 40}}}),
		//lint:ignore SA1019 the deprecated specifiers are what this reads
		hm(&route.HeaderMatcher{Name: "e", HeaderMatchSpecifier: &route.HeaderMatcher_ExactMatch{ExactMatch: "x"}}),
		//lint:ignore SA1019 the deprecated specifiers are what this reads
		hm(&route.HeaderMatcher{Name: "r", HeaderMatchSpecifier: &route.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: &matcher.RegexMatcher{Regex: "a+"}}}),
	}}}}).(*RouteConfiguration)
	routes := rc.VirtualHosts[0].Routes
	if r := routes[0].Match.Headers[0].RangeMatch; r == nil || r.Start != -5 || r.End != 1<<40 {
		t.Errorf("range: %+v", r)
	}
	if e := routes[1].Match.Headers[0].ExactMatch; e == nil || *e != "x" {
		t.Errorf("exact_match: %v", e)
	}
}

// TestDecodesAccessLogs: a connection manager's stdout/stderr access
// loggers agree with go-control-plane's reading; a filter or a format of
// one's own is named.
func TestDecodesAccessLogs(t *testing.T) {
	stdout, _ := anypb.New(&streamv3.StdoutAccessLog{})
	got := decodeLike(t, &hcm.HttpConnectionManager{StatPrefix: "inbound", AccessLog: []*accesslogv3.AccessLog{
		{Name: "envoy.access_loggers.stdout", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: stdout}},
	}}).(*HTTPConnectionManager)
	if len(got.AccessLogs) != 1 || got.AccessLogs[0].Refused != "" {
		t.Fatalf("access logs %+v", got.AccessLogs)
	}
	if l, ok := got.AccessLogs[0].TypedConfig.Msg.(*StreamAccessLog); !ok || l.Stderr || l.Refused != "" {
		t.Errorf("stdout logger decoded as %#v", got.AccessLogs[0].TypedConfig.Msg)
	}
	if l := decodeLike(t, &streamv3.StderrAccessLog{}).(*StreamAccessLog); !l.Stderr {
		t.Error("stderr logger not told apart")
	}
	formatted := decodeLike(t, &streamv3.StdoutAccessLog{AccessLogFormat: &streamv3.StdoutAccessLog_LogFormat{LogFormat: &core.SubstitutionFormatString{
		Format: &core.SubstitutionFormatString_TextFormatSource{TextFormatSource: &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: "%RESPONSE_CODE%"}}}}}}).(*StreamAccessLog)
	if formatted.Refused != "log_format" {
		t.Errorf("a format of one's own: Refused %q", formatted.Refused)
	}
	filtered := decodeLike(t, &hcm.HttpConnectionManager{StatPrefix: "x", AccessLog: []*accesslogv3.AccessLog{{Name: "l",
		Filter:     &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_NotHealthCheckFilter{NotHealthCheckFilter: &accesslogv3.NotHealthCheckFilter{}}},
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: stdout}}}}).(*HTTPConnectionManager)
	if filtered.AccessLogs[0].Refused != "filter" {
		t.Errorf("a filter: Refused %q", filtered.AccessLogs[0].Refused)
	}

	// The OpenTelemetry logger as the control plane writes it.
	str := func(s string) *otlpcommon.AnyValue {
		return &otlpcommon.AnyValue{Value: &otlpcommon.AnyValue_StringValue{StringValue: s}}
	}
	otel := &otelalsv3.OpenTelemetryAccessLogConfig{
		GrpcService: &core.GrpcService{TargetSpecifier: &core.GrpcService_EnvoyGrpc_{EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: "xds_cluster"}}},
		LogName:     "micromesh.tap",
		Attributes: &otlpcommon.KeyValueList{Values: []*otlpcommon.KeyValue{
			{Key: "url.path", Value: str("%REQ(:PATH)%")}, {Key: "http.response.status_code", Value: str("%RESPONSE_CODE%")},
		}},
		BufferFlushInterval: durationpb.New(500 * time.Millisecond),
	}
	ol := decodeLike(t, otel).(*OpenTelemetryAccessLog)
	if ol.Refused != "" || ol.LogName != "micromesh.tap" || ol.GRPCService.EnvoyGRPC.ClusterName != "xds_cluster" || ol.FlushInterval.D() != 500*time.Millisecond ||
		!slices.Equal(ol.Attributes, KeyFormats{{"url.path", "%REQ(:PATH)%"}, {"http.response.status_code", "%RESPONSE_CODE%"}}) {
		t.Errorf("OpenTelemetry access logger decoded as %+v", ol)
	}
	for want, cfg := range map[string]*otelalsv3.OpenTelemetryAccessLogConfig{
		"body":                {Body: str("%REQ(:PATH)%")},
		"resource_attributes": {ResourceAttributes: &otlpcommon.KeyValueList{Values: []*otlpcommon.KeyValue{{Key: "k", Value: str("v")}}}},
		"custom_tags":         {CustomTags: []*tracingv3.CustomTag{{Tag: "t", Type: &tracingv3.CustomTag_Literal_{Literal: &tracingv3.CustomTag_Literal{Value: "v"}}}}},
		"attributes: a value other than a string": {Attributes: &otlpcommon.KeyValueList{Values: []*otlpcommon.KeyValue{{Key: "n", Value: &otlpcommon.AnyValue{Value: &otlpcommon.AnyValue_IntValue{IntValue: 1}}}}}},
		"grpc_service.google_grpc":                {GrpcService: &core.GrpcService{TargetSpecifier: &core.GrpcService_GoogleGrpc_{GoogleGrpc: &core.GrpcService_GoogleGrpc{TargetUri: "x", StatPrefix: "x"}}}},
	} {
		if got := decodeLike(t, cfg).(*OpenTelemetryAccessLog).Refused; got != want {
			t.Errorf("%v: Refused %q, want %q", cfg, got, want)
		}
	}
}

// TestDecodesTunnels covers what TCP services take: the caller's tcp_proxy
// with its tunneling config, the callee's CONNECT upgrade and its
// connect_matcher route with connect_config, and what is refused of each.
func TestDecodesTunnels(t *testing.T) {
	tp := decodeLike(t, &tcpproxyv3.TcpProxy{StatPrefix: "upstream|db.default",
		ClusterSpecifier:   &tcpproxyv3.TcpProxy_Cluster{Cluster: "db.default"},
		TunnelingConfig:    &tcpproxyv3.TcpProxy_TunnelingConfig{Hostname: "db.default"},
		IdleTimeout:        durationpb.New(10 * time.Minute),
		MaxConnectAttempts: wrapperspb.UInt32(3),
	}).(*TCPProxy)
	split := decodeLike(t, &tcpproxyv3.TcpProxy{StatPrefix: "x", ClusterSpecifier: &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{
		Clusters: []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{{Name: "db.default|v1", Weight: 90}, {Name: "db.default|v2", Weight: 10}}}}}).(*TCPProxy)
	if wc := split.WeightedClusters; wc == nil || len(wc.Clusters) != 2 || wc.Clusters[1].Name != "db.default|v2" || wc.Clusters[1].Weight != 10 || split.Cluster != "" {
		t.Errorf("weighted clusters: %+v", split)
	}
	if tp.MaxConnectAttempts == nil || *tp.MaxConnectAttempts != 3 {
		t.Errorf("max_connect_attempts: %v", tp.MaxConnectAttempts)
	}
	if tp.Cluster != "db.default" || tp.TunnelingConfig == nil || tp.TunnelingConfig.Hostname != "db.default" || tp.IdleTimeout.D() != 10*time.Minute || tp.Refused != "" {
		t.Errorf("tcp_proxy: %+v", tp)
	}
	hcmCfg := decodeLike(t, &hcm.HttpConnectionManager{StatPrefix: "inbound",
		UpgradeConfigs: []*hcm.HttpConnectionManager_UpgradeConfig{{UpgradeType: "CONNECT"}}}).(*HTTPConnectionManager)
	if !hcmCfg.ConnectEnabled() || hcmCfg.Refused != "" {
		t.Errorf("connection manager with CONNECT: enabled %v, refused %q", hcmCfg.ConnectEnabled(), hcmCfg.Refused)
	}
	rc := decodeLike(t, &route.RouteConfiguration{Name: "inbound", VirtualHosts: []*route.VirtualHost{{Name: "app", Domains: []string{"*"}, Routes: []*route.Route{{
		Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_ConnectMatcher_{ConnectMatcher: &route.RouteMatch_ConnectMatcher{}}},
		Action: &route.Route_Route{Route: &route.RouteAction{
			ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "inbound|app"},
			IdleTimeout:      durationpb.New(time.Hour),
			UpgradeConfigs:   []*route.RouteAction_UpgradeConfig{{UpgradeType: "CONNECT", ConnectConfig: &route.RouteAction_UpgradeConfig_ConnectConfig{}}},
		}},
	}}}}}).(*RouteConfiguration)
	r := rc.VirtualHosts[0].Routes[0]
	if r.Match.ConnectMatcher == nil || r.Match.Unsupported != "" || r.Route.Refused != "" || len(r.Route.UpgradeConfigs) != 1 || r.Route.IdleTimeout.D() != time.Hour {
		t.Errorf("connect route: match %+v, action %+v", r.Match, r.Route)
	}

	refused := []struct {
		m    proto.Message
		get  func(any) string
		want string
	}{
		{&tcpproxyv3.TcpProxy{StatPrefix: "x", ClusterSpecifier: &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{
			Clusters: []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{{Name: "c", Weight: 1, MetadataMatch: &core.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.lb": {}}}}}}}},
			func(m any) string { return m.(*TCPProxy).Refused }, "weighted_clusters.metadata_match"},
		{&tcpproxyv3.TcpProxy{StatPrefix: "x", BackoffOptions: &core.BackoffStrategy{BaseInterval: durationpb.New(time.Second)}}, func(m any) string { return m.(*TCPProxy).Refused }, "backoff_options"},
		{&tcpproxyv3.TcpProxy{StatPrefix: "x", TunnelingConfig: &tcpproxyv3.TcpProxy_TunnelingConfig{Hostname: "h", UsePost: true}},
			func(m any) string { return m.(*TCPProxy).Refused }, "tunneling_config.use_post"},
		{&hcm.HttpConnectionManager{StatPrefix: "x", UpgradeConfigs: []*hcm.HttpConnectionManager_UpgradeConfig{{UpgradeType: "websocket"}}},
			func(m any) string { return m.(*HTTPConnectionManager).Refused }, `upgrade_configs.upgrade_type "websocket"`},
		{routeOf(&route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "c"}, UpgradeConfigs: []*route.RouteAction_UpgradeConfig{{UpgradeType: "CONNECT"}}}),
			actionRefused, "upgrade_configs.CONNECT without connect_config (forwarded as a request)"},
		{routeOf(&route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "c"}, UpgradeConfigs: []*route.RouteAction_UpgradeConfig{{UpgradeType: "CONNECT",
			ConnectConfig: &route.RouteAction_UpgradeConfig_ConnectConfig{AllowPost: true}}}}),
			actionRefused, "upgrade_configs.connect_config.allow_post"},
	}
	for _, c := range refused {
		if got := c.get(decodeLike(t, c.m)); got != c.want {
			t.Errorf("%T: refused %q, want %q", c.m, got, c.want)
		}
	}
	// A disabled upgrade is no CONNECT.
	off := decodeLike(t, &hcm.HttpConnectionManager{StatPrefix: "x",
		UpgradeConfigs: []*hcm.HttpConnectionManager_UpgradeConfig{{UpgradeType: "CONNECT", Enabled: wrapperspb.Bool(false)}}}).(*HTTPConnectionManager)
	if off.ConnectEnabled() {
		t.Error("a disabled CONNECT upgrade is enabled")
	}
}

// routeOf is a route configuration of one route with action a.
func routeOf(a *route.RouteAction) *route.RouteConfiguration {
	return &route.RouteConfiguration{Name: "r", VirtualHosts: []*route.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*route.Route{{
		Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}}, Action: &route.Route_Route{Route: a},
	}}}}}
}

// actionRefused is what the proxy refuses of routeOf's action.
func actionRefused(m any) string {
	return m.(*RouteConfiguration).VirtualHosts[0].Routes[0].Route.Refused
}
