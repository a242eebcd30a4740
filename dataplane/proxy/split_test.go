package proxy

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/micromesh/micromesh/dataplane/config"
	"github.com/micromesh/micromesh/dataplane/xdswire"
	"github.com/micromesh/micromesh/dataplane/xdswire/xdswiretest"
)

// staticCluster is a plaintext cluster of one loopback backend.
func staticCluster(name string, b *httptest.Server) *clusterv3.Cluster {
	host, port, _ := net.SplitHostPort(b.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &core.Address{Address: &core.Address_SocketAddress{
				SocketAddress: &core.SocketAddress{Address: host, PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(p)}}}}}},
		}}}}},
	}
}

// A route with weighted clusters spreads its requests over them by weight
// (a cluster of weight 0 gets none), and a request's retries stay in the
// cluster it picked, as Envoy's do: a canary that fails is not hidden by
// retries to the stable version.
func TestWeightedClustersSplitRequests(t *testing.T) {
	var v1, v2, v3 atomic.Int32
	stable := backend(t, &v1, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "v1") })
	canary := backend(t, &v2, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "v2 is broken", http.StatusServiceUnavailable)
	})
	unused := backend(t, &v3, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "v3") })

	rc := &route.RouteConfiguration{Name: "outbound", VirtualHosts: []*route.VirtualHost{{
		Name: "b", Domains: []string{"b"},
		Routes: []*route.Route{{
			Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
			Action: &route.Route_Route{Route: &route.RouteAction{
				ClusterSpecifier: &route.RouteAction_WeightedClusters{WeightedClusters: &route.WeightedCluster{Clusters: []*route.WeightedCluster_ClusterWeight{
					{Name: "b~v1", Weight: wrapperspb.UInt32(80)},
					{Name: "b~v2", Weight: wrapperspb.UInt32(20)},
					{Name: "b~v3", Weight: wrapperspb.UInt32(0)},
				}}},
				RetryPolicy: &route.RetryPolicy{RetryOn: "retriable-status-codes", RetriableStatusCodes: []uint32{503}, NumRetries: wrapperspb.UInt32(2),
					RetryBackOff: &route.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)}},
			}},
		}},
	}}}
	var clusters []*xdswire.Cluster
	for name, b := range map[string]*httptest.Server{"b~v1": stable, "b~v2": canary, "b~v3": unused} {
		clusters = append(clusters, xdswiretest.Decode[*xdswire.Cluster](t, staticCluster(name, b)))
	}
	cfg, err := config.Compile(config.Resources{Routes: []*xdswire.RouteConfiguration{xdswiretest.Decode[*xdswire.RouteConfiguration](t, rc)}, Clusters: clusters})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := outboundProxy(t, cfg)

	const calls = 1000
	answers := map[int]int{}
	for range calls {
		answers[call(p, http.MethodGet, "").Code]++
	}
	// 20 % of 1,000: 200, with a standard deviation of 12.6; five of them
	// either way fails once in millions of runs.
	if failed := answers[http.StatusServiceUnavailable]; failed < 137 || failed > 263 {
		t.Errorf("%d of %d calls went to the canary (weight 20 of 100); answers %v", failed, calls, answers)
	}
	if int(v1.Load()) != answers[http.StatusOK] {
		t.Errorf("v1 served %d requests, %d calls succeeded: a retry left its cluster", v1.Load(), answers[http.StatusOK])
	}
	if got, want := int(v2.Load()), 3*answers[http.StatusServiceUnavailable]; got != want {
		t.Errorf("v2 served %d requests, want %d (each failed call tried 3 times there)", got, want)
	}
	if v3.Load() != 0 {
		t.Errorf("v3, of weight 0, served %d requests", v3.Load())
	}
}
