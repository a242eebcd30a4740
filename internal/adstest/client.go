// Package adstest is a small ADS client for tests and benchmarks: a real
// gRPC stream with mTLS, driven step by step (subscribe, receive, ACK or
// NACK), state-of-the-world or delta.
package adstest

import (
	"context"
	"crypto/tls"
	"fmt"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/micromesh/micromesh/identity"
)

// Conn is a connection to a control plane as one workload identity.
type Conn struct{ *grpc.ClientConn }

// Dial connects to the control plane at addr presenting cert (nil for none)
// and trusting bundle.
func Dial(addr string, bundle *identity.Bundle, cert *tls.Certificate) (*Conn, error) {
	var get func() *tls.Certificate
	if cert != nil {
		get = func() *tls.Certificate { return cert }
	}
	cfg := identity.ClientTLSConfig(func() *identity.Bundle { return bundle }, get, identity.AuthorizeID(identity.ControlPlaneID(bundle.TrustDomain())))
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, err
	}
	return &Conn{cc}, nil
}

// Node returns a node with the given ID and metadata.
func Node(id string, meta map[string]any) *core.Node {
	s, err := structpb.NewStruct(meta)
	if err != nil {
		panic(err)
	}
	return &core.Node{Id: id, Metadata: s, UserAgentName: "adstest"}
}

// SotW is a state-of-the-world ADS stream.
type SotW struct {
	node   *core.Node
	stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	sent   bool
}

// StreamSotW opens a state-of-the-world stream for node.
func (c *Conn) StreamSotW(ctx context.Context, node *core.Node) (*SotW, error) {
	s, err := discovery.NewAggregatedDiscoveryServiceClient(c.ClientConn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	return &SotW{node: node, stream: s}, nil
}

// Subscribe asks for resources of typeURL (no names: all).
func (s *SotW) Subscribe(typeURL string, names ...string) error {
	return s.send(&discovery.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names})
}

func (s *SotW) send(r *discovery.DiscoveryRequest) error {
	if !s.sent {
		r.Node, s.sent = s.node, true
	}
	return s.stream.Send(r)
}

// Recv returns the next response.
func (s *SotW) Recv() (*discovery.DiscoveryResponse, error) { return s.stream.Recv() }

// Ack acknowledges resp, keeping the subscription to names.
func (s *SotW) Ack(resp *discovery.DiscoveryResponse, names ...string) error {
	return s.send(&discovery.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(), ResourceNames: names})
}

// Nack rejects resp with a message, keeping the last accepted version.
func (s *SotW) Nack(resp *discovery.DiscoveryResponse, lastGood, msg string, names ...string) error {
	return s.send(&discovery.DiscoveryRequest{
		TypeUrl: resp.GetTypeUrl(), VersionInfo: lastGood, ResponseNonce: resp.GetNonce(), ResourceNames: names,
		ErrorDetail: &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: msg},
	})
}

// Delta is a delta ADS stream.
type Delta struct {
	node   *core.Node
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	sent   bool
}

// StreamDelta opens a delta stream for node.
func (c *Conn) StreamDelta(ctx context.Context, node *core.Node) (*Delta, error) {
	s, err := discovery.NewAggregatedDiscoveryServiceClient(c.ClientConn).DeltaAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	return &Delta{node: node, stream: s}, nil
}

// Subscribe adds names to the subscription of typeURL ("*" or none: wildcard).
func (d *Delta) Subscribe(typeURL string, names ...string) error {
	return d.send(&discovery.DeltaDiscoveryRequest{TypeUrl: typeURL, ResourceNamesSubscribe: names})
}

// Resume subscribes to names of typeURL as a proxy that reconnects does,
// offering the versions it holds.
func (d *Delta) Resume(typeURL string, held map[string]string, names ...string) error {
	return d.send(&discovery.DeltaDiscoveryRequest{TypeUrl: typeURL, ResourceNamesSubscribe: names, InitialResourceVersions: held})
}

func (d *Delta) send(r *discovery.DeltaDiscoveryRequest) error {
	if !d.sent {
		r.Node, d.sent = d.node, true
	}
	return d.stream.Send(r)
}

// CloseSend ends the stream from the proxy's side.
func (d *Delta) CloseSend() error { return d.stream.CloseSend() }

// Recv returns the next response.
func (d *Delta) Recv() (*discovery.DeltaDiscoveryResponse, error) { return d.stream.Recv() }

// Ack acknowledges resp.
func (d *Delta) Ack(resp *discovery.DeltaDiscoveryResponse) error {
	return d.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce()})
}

// Nack rejects resp.
func (d *Delta) Nack(resp *discovery.DeltaDiscoveryResponse, msg string) error {
	return d.send(&discovery.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce(),
		ErrorDetail: &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: msg}})
}

// Names returns the names of the resources in a SotW response.
func Names(resp *discovery.DiscoveryResponse) ([]string, error) {
	var out []string
	for _, a := range resp.GetResources() {
		m, err := a.UnmarshalNew()
		if err != nil {
			return nil, err
		}
		n, ok := m.(interface{ GetName() string })
		if !ok || n.GetName() == "" {
			if cla, ok := m.(interface{ GetClusterName() string }); ok {
				out = append(out, cla.GetClusterName())
				continue
			}
			return nil, fmt.Errorf("resource %s has no name", a.GetTypeUrl())
		}
		out = append(out, n.GetName())
	}
	return out, nil
}
