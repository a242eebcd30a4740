package xdswire

import (
	"slices"
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/micromesh/micromesh/xds"
)

// FuzzDecode feeds arbitrary bytes to the resource decoders: an error is
// fine, a panic is not, and whatever both this package and
// go-control-plane's types read must agree field by field (duplicated
// fields, oneof alternatives set twice, unknown fields). The seeds are the
// resources the control plane builds, so mutations start from real ones.
func FuzzDecode(f *testing.F) {
	limited := xds.DefaultPolicy // the proxy's own service: its listeners carry a rate limit
	limited.RateLimit, limited.RateLimitBurst = 10, 3
	faulty := xds.DefaultPolicy // callers' routes to a carry fault settings, opt-in by header
	faulty.Fault = xds.Fault{Delay: 5e6, DelayShare: 125_000, AbortGRPC: 14, AbortShare: 33, Header: "x-chaos"}
	faulty.Mirror = xds.Mirror{Service: "c", Share: 250_000} // and a mirror policy
	m := &xds.Mesh{TrustDomain: "td", Roots: []byte("roots"), Services: []xds.Service{
		{Name: "a", Namespace: "default", Protocol: xds.ProtocolGRPC, Policy: faulty, // split, with a version header: weighted clusters and header matchers
			Split: []xds.VersionWeight{{Version: "v1", Weight: 70}, {Version: "v2", Weight: 30}}, SplitHeader: "x-version", Endpoints: []xds.Endpoint{
				{ID: "a1", Address: "10.0.0.1", Port: 1, QUICPort: 1, Kind: xds.KindBuiltin, Version: "v1", Health: xds.HealthPassing}}},
		{Name: "c", Namespace: "default", Protocol: xds.ProtocolHTTP, Policy: limited, Endpoints: []xds.Endpoint{
			{ID: "c1", Address: "10.0.0.2", Port: 2, QUICPort: 2, Kind: xds.KindBuiltin, Health: xds.HealthPassing}}},
	}}
	r, err := xds.Build(m, xds.Proxy{NodeID: "n", Namespace: "default", Service: "c", Kind: xds.KindBuiltin,
		InboundPort: 2, OutboundPort: 3, AppPort: 4, AppProtocol: xds.ProtocolHTTP, CertDir: "/c"})
	if err != nil {
		f.Fatal(err)
	}
	seeds := messages(r.Listeners)
	seeds = append(seeds, routeMatches()) // what the control plane does not build but the proxy reads
	seeds = append(seeds, messages(r.Routes)...)
	seeds = append(seeds, messages(r.Clusters)...)
	seeds = append(seeds, messages(r.Endpoints)...)
	seeds = append(seeds, messages(r.Secrets)...)
	types := []proto.Message{&listener.Listener{}, &route.RouteConfiguration{}, &cluster.Cluster{}, &endpoint.ClusterLoadAssignment{}, &tlsv3.Secret{}}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		kind := slices.IndexFunc(types, func(t proto.Message) bool {
			return t.ProtoReflect().Descriptor().FullName() == s.ProtoReflect().Descriptor().FullName()
		})
		f.Add(uint8(kind), b) // decoded as its own type first
	}
	f.Fuzz(func(t *testing.T, kind uint8, b []byte) {
		theirs := types[int(kind)%len(types)].ProtoReflect().New().Interface()
		url := "type.googleapis.com/" + string(theirs.ProtoReflect().Descriptor().FullName())
		ours, err := Decode(&Any{TypeURL: url, Value: b})
		if err == nil && proto.Unmarshal(b, theirs) == nil {
			if _, err := protojson.Marshal(theirs); err == nil { // an Any of an unknown type cannot be shown
				checkAgrees(t, ours, theirs)
			}
		}
		var resp DeltaDiscoveryResponse
		_ = resp.Unmarshal(b)
		var sotw DiscoveryResponse
		_ = sotw.Unmarshal(b)
	})
}

// routeMatches is a route configuration with every kind of route match
// and header matcher the proxy reads.
func routeMatches() *route.RouteConfiguration {
	to := &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "c"}}}
	return &route.RouteConfiguration{Name: "m", VirtualHosts: []*route.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*route.Route{
		{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: "/v[0-9]+"}}}, Action: to},
		{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api"},
			QueryParameters: []*route.QueryParameterMatcher{{Name: "q", QueryParameterMatchSpecifier: &route.QueryParameterMatcher_PresentMatch{PresentMatch: true}}},
			Grpc:            &route.RouteMatch_GrpcRouteMatchOptions{},
			RuntimeFraction: &core.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 5}},
			Headers:         []*route.HeaderMatcher{{Name: "n", HeaderMatchSpecifier: &route.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: -1, End: 9}}}},
		}, Action: to},
	}}}}
}
