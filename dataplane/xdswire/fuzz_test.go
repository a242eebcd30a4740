package xdswire

import (
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
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
	m := &xds.Mesh{TrustDomain: "td", Roots: []byte("roots"), Services: []xds.Service{
		{Name: "a", Namespace: "default", Protocol: xds.ProtocolGRPC, // split, with a version header: weighted clusters and header matchers
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
	seeds = append(seeds, messages(r.Routes)...)
	seeds = append(seeds, messages(r.Clusters)...)
	seeds = append(seeds, messages(r.Endpoints)...)
	seeds = append(seeds, messages(r.Secrets)...)
	for i, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), b)
	}
	types := []proto.Message{&listener.Listener{}, &route.RouteConfiguration{}, &cluster.Cluster{}, &endpoint.ClusterLoadAssignment{}, &tlsv3.Secret{}}
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
