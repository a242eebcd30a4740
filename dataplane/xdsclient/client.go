// Package xdsclient is the built-in proxy's xDS client: one ADS stream
// (delta, or state of the world) to the control plane, over mTLS, speaking
// the protocol with dataplane/xdswire's messages (no protobuf reflection
// in the sidecar). It subscribes to listeners and clusters, then to the
// route configurations, endpoints and secrets they name; hands every
// candidate set of resources to an apply function, which compiles and
// swaps it in atomically or refuses it; ACKs or NACKs accordingly; and
// keeps the last good resources through disconnections, reconnecting with
// jittered backoff.
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

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	"github.com/micromesh/micromesh/dataplane/config"
	"github.com/micromesh/micromesh/dataplane/xdswire"
)

// ApplyFunc takes a full set of resources; an error refuses it (the
// response that brought it is NACKed with the error) and the previous set
// stays in force.
type ApplyFunc func(config.Resources) error

// Client is an ADS client.
type Client struct {
	addr  string
	tls   func() *tls.Config
	node  *xdswire.Node
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
func New(addr string, tlsConfig func() *tls.Config, node *xdswire.Node, apply ApplyFunc, log *slog.Logger, opts ...Option) *Client {
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
	s, err := conn.NewStream(ctx, &adsStream, xdswire.StreamAggregatedResources, grpc.ForceCodecV2(xdswire.Codec{}))
	if err != nil {
		return false, err
	}
	states := map[string]*typeState{}
	first := true
	send := func(typ string, nack error) error {
		st := states[typ]
		req := &xdswire.DiscoveryRequest{TypeURL: typ, VersionInfo: st.version, ResponseNonce: st.nonce, ResourceNames: st.names}
		if nack != nil {
			req.ErrorDetail = nackDetail(nack)
		}
		if first {
			req.Node, first = c.node, false
		}
		return s.SendMsg(req)
	}
	// Resources kept from before a reconnection are offered as known
	// versions, so an unchanged control plane need not resend them.
	c.mu.Lock()
	prev := c.status.Versions
	c.mu.Unlock()
	for _, typ := range []string{xdswire.ListenerType, xdswire.ClusterType} {
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
		resp := &xdswire.DiscoveryResponse{}
		if err := s.RecvMsg(resp); err != nil {
			return got, err
		}
		if !got {
			got = true
			c.setConnected(true)
			c.log.Info("connected to the control plane", "addr", c.addr)
		}
		typ := resp.TypeURL
		st := states[typ]
		if st == nil {
			continue // not asked for
		}
		st.nonce = resp.Nonce
		if err := c.accept(typ, resp); err != nil {
			c.refused(typ, resp.VersionInfo, err)
			if err := send(typ, err); err != nil {
				return got, err
			}
			continue
		}
		st.version = resp.VersionInfo
		if err := send(typ, nil); err != nil {
			return got, err
		}
		// Listeners and clusters name the routes, endpoints and secrets to
		// subscribe to.
		if typ == xdswire.ListenerType || typ == xdswire.ClusterType {
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

// adsStream describes both ADS methods: bidirectional streams.
var adsStream = grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// nackDetail is the error detail of a NACK.
func nackDetail(err error) *xdswire.Status {
	return &xdswire.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
}

// accept decodes a response and offers the resulting set to apply.
func (c *Client) accept(typ string, resp *xdswire.DiscoveryResponse) error {
	c.mu.Lock()
	candidate := c.res
	c.mu.Unlock()
	msgs, err := decodeAll(typ, resp.Resources)
	if err != nil {
		return err
	}
	if err := replace(&candidate, typ, msgs); err != nil {
		return err
	}
	if err := c.apply(candidate); err != nil {
		return err
	}
	c.mu.Lock()
	c.res = candidate
	c.status.Versions[typ] = resp.VersionInfo
	c.status.Updates++
	c.mu.Unlock()
	return nil
}

// decodeAll decodes a response's resources, which must all be of typ.
func decodeAll(typ string, in []*xdswire.Any) ([]any, error) {
	out := make([]any, 0, len(in))
	for _, a := range in {
		if a.TypeURL != typ {
			return nil, fmt.Errorf("a %s response holds a %s", short(typ), a.TypeURL)
		}
		m, err := xdswire.Decode(a)
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", short(typ), err)
		}
		out = append(out, m)
	}
	return out, nil
}

// replace puts msgs in place of r's resources of typ.
func replace(r *config.Resources, typ string, msgs []any) error {
	switch typ {
	case xdswire.ListenerType:
		r.Listeners = as[*xdswire.Listener](msgs)
	case xdswire.RouteType:
		r.Routes = as[*xdswire.RouteConfiguration](msgs)
	case xdswire.ClusterType:
		r.Clusters = as[*xdswire.Cluster](msgs)
		r.ClustersReceived = true
	case xdswire.EndpointType:
		r.Endpoints = as[*xdswire.ClusterLoadAssignment](msgs)
	case xdswire.SecretType:
		r.Secrets = as[*xdswire.Secret](msgs)
	default:
		return fmt.Errorf("type %s is not used by this proxy", typ)
	}
	return nil
}

// as converts decoded resources, all of type T (decodeAll checked).
func as[T any](msgs []any) []T {
	out := make([]T, len(msgs))
	for i, m := range msgs {
		out[i] = m.(T)
	}
	return out
}

// dependencies returns, per type, the sorted names the accepted listeners and
// clusters refer to: route configurations, endpoints, secrets.
func (c *Client) dependencies() map[string][]string {
	c.mu.Lock()
	r := c.res
	c.mu.Unlock()
	routes, eds, secrets := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, l := range r.Listeners {
		for _, fc := range l.FilterChains {
			if fc.TransportSocket != nil {
				secrets["default"], secrets["ROOTCA"] = true, true
			}
			for _, f := range fc.Filters {
				if f.TypedConfig == nil {
					continue
				}
				if m, ok := f.TypedConfig.Msg.(*xdswire.HTTPConnectionManager); ok && m.RDS != nil && m.RDS.RouteConfigName != "" {
					routes[m.RDS.RouteConfigName] = true
				}
			}
		}
	}
	for _, cl := range r.Clusters {
		if cl.Type == xdswire.EDS {
			name := cl.Name
			if cl.EDSClusterConfig != nil && cl.EDSClusterConfig.ServiceName != "" {
				name = cl.EDSClusterConfig.ServiceName
			}
			eds[name] = true
		}
		if cl.TransportSocket != nil {
			secrets["default"], secrets["ROOTCA"] = true, true
		}
	}
	out := map[string][]string{}
	for typ, set := range map[string]map[string]bool{xdswire.RouteType: routes, xdswire.EndpointType: eds, xdswire.SecretType: secrets} {
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
	case xdswire.ListenerType:
		return "LDS"
	case xdswire.RouteType:
		return "RDS"
	case xdswire.ClusterType:
		return "CDS"
	case xdswire.EndpointType:
		return "EDS"
	case xdswire.SecretType:
		return "SDS"
	}
	return typ
}
