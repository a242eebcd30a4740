package xdsclient

import (
	"context"
	"slices"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// entry is a resource received over delta xDS.
type entry struct {
	version string
	msg     proto.Message
}

// streamDelta runs one delta ADS stream. Only changed resources travel;
// the client keeps the rest, and offers its versions on reconnection.
func (c *Client) streamDelta(ctx context.Context) (got bool, err error) {
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(credentials.NewTLS(c.tls())))
	if err != nil {
		return false, err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return false, err
	}
	c.mu.Lock()
	if c.known == nil {
		c.known = map[string]map[string]entry{}
	}
	known := c.known
	c.mu.Unlock()
	first := true
	send := func(req *discovery.DeltaDiscoveryRequest) error {
		if first {
			req.Node, first = c.node, false
		}
		return s.Send(req)
	}
	versions := func(typ string) map[string]string {
		c.mu.Lock()
		defer c.mu.Unlock()
		out := map[string]string{}
		for n, e := range known[typ] {
			out[n] = e.version
		}
		return out
	}
	subscribed := map[string][]string{}
	for _, typ := range []string{resource.ListenerType, resource.ClusterType} {
		if err := send(&discovery.DeltaDiscoveryRequest{TypeUrl: typ, ResourceNamesSubscribe: []string{"*"}, InitialResourceVersions: versions(typ)}); err != nil {
			return false, err
		}
	}
	subscribe := func() error {
		for dep, names := range c.dependencies() {
			cur, ok := subscribed[dep]
			if slices.Equal(cur, names) || (!ok && len(names) == 0) {
				continue
			}
			req := &discovery.DeltaDiscoveryRequest{TypeUrl: dep}
			for _, n := range names {
				if !slices.Contains(cur, n) {
					req.ResourceNamesSubscribe = append(req.ResourceNamesSubscribe, n)
				}
			}
			for _, n := range cur {
				if !slices.Contains(names, n) {
					req.ResourceNamesUnsubscribe = append(req.ResourceNamesUnsubscribe, n)
				}
			}
			if !ok {
				req.InitialResourceVersions = versions(dep)
			}
			subscribed[dep] = names
			if err := send(req); err != nil {
				return err
			}
		}
		return nil
	}
	if err := subscribe(); err != nil {
		return false, err
	}
	for {
		resp, err := s.Recv()
		if err != nil {
			return got, err
		}
		if !got {
			got = true
			c.setConnected(true)
			c.log.Info("connected to the control plane (delta xDS)", "addr", c.addr)
		}
		typ := resp.GetTypeUrl()
		if err := c.acceptDelta(typ, resp); err != nil {
			c.refused(typ, resp.GetSystemVersionInfo(), err)
			if err := send(&discovery.DeltaDiscoveryRequest{TypeUrl: typ, ResponseNonce: resp.GetNonce(),
				ErrorDetail: &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}}); err != nil {
				return got, err
			}
			continue
		}
		if err := send(&discovery.DeltaDiscoveryRequest{TypeUrl: typ, ResponseNonce: resp.GetNonce()}); err != nil {
			return got, err
		}
		if typ == resource.ListenerType || typ == resource.ClusterType {
			if err := subscribe(); err != nil {
				return got, err
			}
		}
	}
}

// acceptDelta applies a delta response on top of the known resources.
func (c *Client) acceptDelta(typ string, resp *discovery.DeltaDiscoveryResponse) error {
	c.mu.Lock()
	next := make(map[string]entry, len(c.known[typ])+len(resp.GetResources()))
	for n, e := range c.known[typ] {
		next[n] = e
	}
	base := c.res
	c.mu.Unlock()
	for _, r := range resp.GetResources() {
		m, err := r.GetResource().UnmarshalNew()
		if err != nil {
			return err
		}
		next[r.GetName()] = entry{version: r.GetVersion(), msg: m}
	}
	for _, n := range resp.GetRemovedResources() {
		delete(next, n)
	}
	names := make([]string, 0, len(next))
	for n := range next {
		names = append(names, n)
	}
	slices.Sort(names)
	sotw := &discovery.DiscoveryResponse{TypeUrl: typ}
	for _, n := range names {
		a, err := anyOf(next[n].msg)
		if err != nil {
			return err
		}
		sotw.Resources = append(sotw.Resources, a)
	}
	candidate := base
	if err := replace(&candidate, typ, sotw); err != nil {
		return err
	}
	if err := c.apply(candidate); err != nil {
		return err
	}
	c.mu.Lock()
	c.known[typ] = next
	c.res = candidate
	c.status.Versions[typ] = resp.GetSystemVersionInfo()
	c.status.Updates++
	c.mu.Unlock()
	return nil
}

func anyOf(m proto.Message) (*anypb.Any, error) { return anypb.New(m) }
