package xdswire

import (
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

var node = &Node{ID: "spiffe://td/ns/default/svc/a/i1", Cluster: "a", UserAgentName: "micromesh-sidecar",
	Metadata: map[string]any{"app_port": float64(8080), "kind": "builtin", "on": true, "none": nil,
		"nested": map[string]any{"l": []any{"x", 1}}}}

func wantNode(t *testing.T) *core.Node {
	md, err := structpb.NewStruct(map[string]any{"app_port": 8080, "kind": "builtin", "on": true, "none": nil,
		"nested": map[string]any{"l": []any{"x", 1}}})
	if err != nil {
		t.Fatal(err)
	}
	return &core.Node{Id: node.ID, Cluster: "a", UserAgentName: "micromesh-sidecar", Metadata: md}
}

// roundTrip encodes ours with the codec and decodes it with
// go-control-plane's type.
func roundTrip(t *testing.T, ours any, theirs proto.Message) {
	t.Helper()
	bs, err := Codec{}.Marshal(ours)
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(bs.Materialize(), theirs); err != nil {
		t.Fatal(err)
	}
}

func TestRequestsReadAsGoControlPlaneReadsThem(t *testing.T) {
	var sotw discovery.DiscoveryRequest
	roundTrip(t, &DiscoveryRequest{VersionInfo: "v1", Node: node, ResourceNames: []string{"a", ""}, TypeURL: RouteType,
		ResponseNonce: "n", ErrorDetail: &Status{Code: 3, Message: "no"}}, &sotw)
	want := &discovery.DiscoveryRequest{VersionInfo: "v1", Node: wantNode(t), ResourceNames: []string{"a", ""}, TypeUrl: RouteType,
		ResponseNonce: "n", ErrorDetail: &rpcstatus.Status{Code: 3, Message: "no"}}
	if !proto.Equal(want, &sotw) {
		t.Errorf("DiscoveryRequest read as %v, want %v", &sotw, want)
	}
	var delta discovery.DeltaDiscoveryRequest
	roundTrip(t, &DeltaDiscoveryRequest{Node: node, TypeURL: ClusterType, ResourceNamesSubscribe: []string{"*"}, ResourceNamesUnsubscribe: []string{"b"},
		InitialResourceVersions: map[string]string{"x": "1", "y": ""}, ResponseNonce: "n2", ErrorDetail: &Status{Message: "bad"}}, &delta)
	wantDelta := &discovery.DeltaDiscoveryRequest{Node: wantNode(t), TypeUrl: ClusterType, ResourceNamesSubscribe: []string{"*"}, ResourceNamesUnsubscribe: []string{"b"},
		InitialResourceVersions: map[string]string{"x": "1", "y": ""}, ResponseNonce: "n2", ErrorDetail: &rpcstatus.Status{Message: "bad"}}
	if !proto.Equal(wantDelta, &delta) {
		t.Errorf("DeltaDiscoveryRequest read as %v, want %v", &delta, wantDelta)
	}
	// A value a Struct cannot hold is an error, not a dropped field.
	if _, err := (&DiscoveryRequest{Node: &Node{Metadata: map[string]any{"c": make(chan int)}}}).Marshal(); err == nil {
		t.Error("a channel in the node metadata was encoded")
	}
}

func TestResponsesReadAsGoControlPlaneWritesThem(t *testing.T) {
	l, err := anypb.New(&listener.Listener{Name: "l"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.Marshal(&discovery.DiscoveryResponse{VersionInfo: "3", Resources: []*anypb.Any{l, l}, TypeUrl: ListenerType, Nonce: "7", Canary: true})
	if err != nil {
		t.Fatal(err)
	}
	var sotw DiscoveryResponse
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &sotw); err != nil {
		t.Fatal(err)
	}
	if sotw.VersionInfo != "3" || sotw.TypeURL != ListenerType || sotw.Nonce != "7" || len(sotw.Resources) != 2 {
		t.Fatalf("decoded %+v", sotw)
	}
	if m, err := Decode(sotw.Resources[1]); err != nil || m.(*Listener).Name != "l" {
		t.Fatalf("resource: %v, %+v", err, m)
	}
	b, err = proto.Marshal(&discovery.DeltaDiscoveryResponse{SystemVersionInfo: "s", TypeUrl: ListenerType, Nonce: "8",
		Resources: []*discovery.Resource{{Name: "l", Version: "v", Resource: l}}, RemovedResources: []string{"old", "older"}})
	if err != nil {
		t.Fatal(err)
	}
	var delta DeltaDiscoveryResponse
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &delta); err != nil {
		t.Fatal(err)
	}
	if delta.SystemVersionInfo != "s" || delta.Nonce != "8" || len(delta.Resources) != 1 || delta.Resources[0].Name != "l" ||
		delta.Resources[0].Version != "v" || delta.Resources[0].Resource.TypeURL != ListenerType || len(delta.RemovedResources) != 2 {
		t.Fatalf("decoded %+v", delta)
	}
	if err := (Codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0x0a, 0x05})}, &delta); err == nil {
		t.Error("a truncated response decoded")
	}
}
