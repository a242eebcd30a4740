// Package xdsclient is the built-in proxy's xDS client: one ADS stream
// (state of the world) to the control plane, over mTLS. It subscribes to
// listeners and clusters, then to the route configurations, endpoints and
// secrets they name; hands every candidate set of resources to an apply
// function, which compiles and swaps it in atomically or refuses it; ACKs
// or NACKs accordingly; and keeps the last good resources through
// disconnections, reconnecting with jittered backoff.
package xdsclient

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/micromesh/micromesh/dataplane/config"
)

// ApplyFunc takes a full set of resources; an error refuses it (the
// response that brought it is NACKed with the error) and the previous set
// stays in force.
type ApplyFunc func(config.Resources) error

// Client is an ADS client.
type Client struct {
	addr  string
	tls   func() *tls.Config
	node  *core.Node
	apply ApplyFunc
	log   *slog.Logger
	delta bool

	mu     sync.Mutex
	res    config.Resources
	known  map[string]map[string]entry // delta: resources by type and name
	status Status
}

// Option configures New.
type Option func(*Client)

// Delta makes the client speak delta xDS (only changes travel) instead of
// state of the world.
func Delta() Option { return func(c *Client) { c.delta = true } }

// Status is what the client knows about its connection and versions.
type Status struct {
	Connected bool
	Versions  map[string]string // accepted version per type URL
	LastNACK  string            // the last refusal, for operators
	Updates   uint64            // accepted updates
	NACKs     uint64            // refused updates
}

// New returns a client for the control plane at addr. tlsConfig is called
// at each connection (so a renewed certificate is used).
func New(addr string, tlsConfig func() *tls.Config, node *core.Node, apply ApplyFunc, log *slog.Logger, opts ...Option) *Client {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{addr: addr, tls: tlsConfig, node: node, apply: apply, log: log, status: Status{Versions: map[string]string{}}}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Status returns the client's state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.status
	s.Versions = make(map[string]string, len(c.status.Versions))
	for k, v := range c.status.Versions {
		s.Versions[k] = v
	}
	return s
}

// Resources returns the resources in force.
func (c *Client) Resources() config.Resources {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.res
}

// Run keeps a stream to the control plane until ctx ends, reconnecting with
// backoff (0.1 s doubling to 30 s, ±50 % jitter). The last good resources
// stay in force while it is away.
func (c *Client) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		stream := c.stream
		if c.delta {
			stream = c.streamDelta
		}
		got, err := stream(ctx)
		c.setConnected(false)
		if ctx.Err() != nil {
			return nil
		}
		if got {
			backoff = 100 * time.Millisecond
		}
		wait := time.Duration(float64(backoff) * (0.5 + rand.Float64()))
		c.log.Warn("control plane stream ended; keeping the last config", "err", err, "retry_in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(backoff*2, 30*time.Second)
	}
	return nil
}

func (c *Client) setConnected(v bool) {
	c.mu.Lock()
	c.status.Connected = v
	c.mu.Unlock()
}

// typeState is one resource type's subscription on a stream.
type typeState struct {
	version string   // last accepted
	nonce   string   // of the last response
	names   []string // subscribed names; nil for wildcard types
}

// stream runs one ADS stream; got reports whether any response arrived.
func (c *Client) stream(ctx context.Context) (got bool, err error) {
	conn, err := grpc.NewClient(c.addr, grpc.WithTransportCredentials(credentials.NewTLS(c.tls())))
	if err != nil {
		return false, err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return false, err
	}
	states := map[string]*typeState{}
	first := true
	send := func(typ string, nack error) error {
		st := states[typ]
		req := &discovery.DiscoveryRequest{TypeUrl: typ, VersionInfo: st.version, ResponseNonce: st.nonce, ResourceNames: st.names}
		if nack != nil {
			req.ErrorDetail = &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: nack.Error()}
		}
		if first {
			req.Node, first = c.node, false
		}
		return s.Send(req)
	}
	// Resources kept from before a reconnection are offered as known
	// versions, so an unchanged control plane need not resend them.
	c.mu.Lock()
	prev := c.status.Versions
	c.mu.Unlock()
	for _, typ := range []string{resource.ListenerType, resource.ClusterType} {
		states[typ] = &typeState{version: prev[typ]}
		if err := send(typ, nil); err != nil {
			return false, err
		}
	}
	// subscribe asks for what the accepted listeners and clusters name.
	// After a reconnection they may not be resent (unchanged), so it runs
	// at once too.
	subscribe := func() error {
		for dep, names := range c.dependencies() {
			cur := states[dep]
			if len(names) == 0 && cur == nil {
				continue // an empty list would mean "everything"
			}
			if cur == nil {
				cur = &typeState{version: prev[dep]}
				states[dep] = cur
			} else if slices.Equal(cur.names, names) {
				continue
			}
			cur.names = names
			if err := send(dep, nil); err != nil {
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
			c.log.Info("connected to the control plane", "addr", c.addr)
		}
		typ := resp.GetTypeUrl()
		st := states[typ]
		if st == nil {
			continue // not asked for
		}
		st.nonce = resp.GetNonce()
		if err := c.accept(typ, resp); err != nil {
			c.refused(typ, resp.GetVersionInfo(), err)
			if err := send(typ, err); err != nil {
				return got, err
			}
			continue
		}
		st.version = resp.GetVersionInfo()
		if err := send(typ, nil); err != nil {
			return got, err
		}
		// Listeners and clusters name the routes, endpoints and secrets to
		// subscribe to.
		if typ == resource.ListenerType || typ == resource.ClusterType {
			if err := subscribe(); err != nil {
				return got, err
			}
		}
	}
}

// refused records a NACK.
func (c *Client) refused(typ, version string, err error) {
	c.mu.Lock()
	c.status.LastNACK = fmt.Sprintf("%s %s: %v", short(typ), version, err)
	c.status.NACKs++
	c.mu.Unlock()
	c.log.Warn("refusing config (NACK); keeping the previous one", "type", short(typ), "version", version, "err", err)
}

// accept decodes a response and offers the resulting set to apply.
func (c *Client) accept(typ string, resp *discovery.DiscoveryResponse) error {
	c.mu.Lock()
	candidate := c.res
	c.mu.Unlock()
	if err := replace(&candidate, typ, resp); err != nil {
		return err
	}
	if err := c.apply(candidate); err != nil {
		return err
	}
	c.mu.Lock()
	c.res = candidate
	c.status.Versions[typ] = resp.GetVersionInfo()
	c.status.Updates++
	c.mu.Unlock()
	return nil
}

// replace puts the response's resources in place of r's resources of typ.
func replace(r *config.Resources, typ string, resp *discovery.DiscoveryResponse) error {
	var err error
	switch typ {
	case resource.ListenerType:
		r.Listeners, err = decode[*listener.Listener](resp)
	case resource.RouteType:
		r.Routes, err = decode[*route.RouteConfiguration](resp)
	case resource.ClusterType:
		r.Clusters, err = decode[*cluster.Cluster](resp)
	case resource.EndpointType:
		r.Endpoints, err = decode[*endpoint.ClusterLoadAssignment](resp)
	case resource.SecretType:
		r.Secrets, err = decode[*tlsv3.Secret](resp)
	default:
		err = fmt.Errorf("type %s is not used by this proxy", typ)
	}
	return err
}

func decode[T proto.Message](resp *discovery.DiscoveryResponse) ([]T, error) {
	out := make([]T, 0, len(resp.GetResources()))
	for _, a := range resp.GetResources() {
		m, err := a.UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", a.GetTypeUrl(), err)
		}
		t, ok := m.(T)
		if !ok {
			return nil, fmt.Errorf("a %s response holds a %s", resp.GetTypeUrl(), a.GetTypeUrl())
		}
		out = append(out, t)
	}
	return out, nil
}

// dependencies returns, per type, the sorted names the accepted listeners and
// clusters refer to: route configurations, endpoints, secrets.
func (c *Client) dependencies() map[string][]string {
	c.mu.Lock()
	r := c.res
	c.mu.Unlock()
	routes, eds, secrets := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, l := range r.Listeners {
		for _, fc := range l.GetFilterChains() {
			if fc.GetTransportSocket() != nil {
				secrets["default"], secrets["ROOTCA"] = true, true
			}
			for _, f := range fc.GetFilters() {
				m := &hcm.HttpConnectionManager{}
				if f.GetTypedConfig().UnmarshalTo(m) == nil && m.GetRds().GetRouteConfigName() != "" {
					routes[m.GetRds().GetRouteConfigName()] = true
				}
			}
		}
	}
	for _, cl := range r.Clusters {
		if cl.GetType() == cluster.Cluster_EDS {
			name := cl.GetEdsClusterConfig().GetServiceName()
			if name == "" {
				name = cl.GetName()
			}
			eds[name] = true
		}
		if cl.GetTransportSocket() != nil {
			secrets["default"], secrets["ROOTCA"] = true, true
		}
	}
	out := map[string][]string{}
	for typ, set := range map[string]map[string]bool{resource.RouteType: routes, resource.EndpointType: eds, resource.SecretType: secrets} {
		names := make([]string, 0, len(set))
		for n := range set {
			names = append(names, n)
		}
		slices.Sort(names)
		out[typ] = names
	}
	return out
}

func short(typ string) string {
	switch typ {
	case resource.ListenerType:
		return "LDS"
	case resource.RouteType:
		return "RDS"
	case resource.ClusterType:
		return "CDS"
	case resource.EndpointType:
		return "EDS"
	case resource.SecretType:
		return "SDS"
	}
	return typ
}
