package xdsclient

import (
	"context"
	"fmt"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/micromesh/micromesh/dataplane/xdswire"
)

// entry is a resource received over delta xDS, decoded.
type entry struct {
	version string
	msg     any
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
	s, err := conn.NewStream(ctx, &adsStream, xdswire.DeltaAggregatedResources, grpc.ForceCodecV2(xdswire.Codec{}))
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
	send := func(req *xdswire.DeltaDiscoveryRequest) error {
		if first {
			req.Node, first = c.node, false
		}
		return s.SendMsg(req)
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
	for _, typ := range []string{xdswire.ListenerType, xdswire.ClusterType} {
		if err := send(&xdswire.DeltaDiscoveryRequest{TypeURL: typ, ResourceNamesSubscribe: []string{"*"}, InitialResourceVersions: versions(typ)}); err != nil {
			return false, err
		}
	}
	subscribe := func() error {
		for dep, names := range c.dependencies() {
			cur, ok := subscribed[dep]
			if slices.Equal(cur, names) || (!ok && len(names) == 0) {
				continue
			}
			req := &xdswire.DeltaDiscoveryRequest{TypeURL: dep}
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
		resp := &xdswire.DeltaDiscoveryResponse{}
		if err := s.RecvMsg(resp); err != nil {
			return got, err
		}
		if !got {
			got = true
			c.setConnected(true)
			c.log.Info("connected to the control plane (delta xDS)", "addr", c.addr)
		}
		typ := resp.TypeURL
		if err := c.acceptDelta(typ, resp); err != nil {
			c.refused(typ, resp.SystemVersionInfo, err)
			if err := send(&xdswire.DeltaDiscoveryRequest{TypeURL: typ, ResponseNonce: resp.Nonce, ErrorDetail: nackDetail(err)}); err != nil {
				return got, err
			}
			continue
		}
		if err := send(&xdswire.DeltaDiscoveryRequest{TypeURL: typ, ResponseNonce: resp.Nonce}); err != nil {
			return got, err
		}
		if typ == xdswire.ListenerType || typ == xdswire.ClusterType {
			if err := subscribe(); err != nil {
				return got, err
			}
		}
	}
}

// acceptDelta applies a delta response on top of the known resources.
func (c *Client) acceptDelta(typ string, resp *xdswire.DeltaDiscoveryResponse) error {
	c.mu.Lock()
	next := make(map[string]entry, len(c.known[typ])+len(resp.Resources))
	for n, e := range c.known[typ] {
		next[n] = e
	}
	base := c.res
	c.mu.Unlock()
	for _, r := range resp.Resources {
		if r.Resource == nil {
			return fmt.Errorf("resource %q has no body", r.Name)
		}
		msgs, err := decodeAll(typ, []*xdswire.Any{r.Resource})
		if err != nil {
			return err
		}
		next[r.Name] = entry{version: r.Version, msg: msgs[0]}
	}
	for _, n := range resp.RemovedResources {
		delete(next, n)
	}
	names := make([]string, 0, len(next))
	for n := range next {
		names = append(names, n)
	}
	slices.Sort(names)
	msgs := make([]any, 0, len(names))
	for _, n := range names {
		msgs = append(msgs, next[n].msg)
	}
	candidate := base
	if err := replace(&candidate, typ, msgs); err != nil {
		return err
	}
	if err := c.apply(candidate); err != nil {
		return err
	}
	c.mu.Lock()
	c.known[typ] = next
	c.res = candidate
	c.status.Versions[typ] = resp.SystemVersionInfo
	c.status.Updates++
	c.mu.Unlock()
	return nil
}
