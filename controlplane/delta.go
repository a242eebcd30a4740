package controlplane

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"unique"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	deltaserver "github.com/envoyproxy/go-control-plane/pkg/server/delta/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// deltaServer serves delta ADS streams (DeltaAggregatedResources) from the
// proxies' snapshots; go-control-plane's server keeps the
// state-of-the-world streams.
//
// go-control-plane's delta server keeps, per stream and type, a map of
// every resource the proxy holds with its version, and builds it anew for
// every response: with 1,000 proxies that may each call 1,000 services,
// those maps were half the control plane's heap and most of its garbage.
// Here what a proxy holds of a type is the view it was last brought up to
// date with — shared by every proxy of its namespace and kind — plus the
// few exceptions its own requests made; a change of a type the proxy
// already has is one string comparison, and resources travel as they were
// marshalled once per generation, not once per proxy.
//
// The protocol is go-control-plane's (the ads callbacks see these streams
// as they see its own): one response per type in flight, the next sent
// once the proxy has answered (ACK or NACK) and carrying everything that
// changed meanwhile; a rejected response is not sent again; the first
// wildcard request of a type is answered even when the type is empty.
type deltaServer struct {
	cb    deltaserver.Callbacks
	count atomic.Int64

	mu       sync.Mutex
	snaps    map[string]*snapshot
	watching map[string]map[*deltaStream]struct{}
}

func newDeltaServer(cb deltaserver.Callbacks) *deltaServer {
	return &deltaServer{cb: cb, snaps: map[string]*snapshot{}, watching: map[string]map[*deltaStream]struct{}{}}
}

// set makes snap the node's configuration and wakes its streams.
func (d *deltaServer) set(nodeID string, snap *snapshot) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.snaps[nodeID] = snap
	for st := range d.watching[nodeID] {
		st.wake()
	}
}

// clear forgets a node's configuration.
func (d *deltaServer) clear(nodeID string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.snaps, nodeID)
}

func (d *deltaServer) current(nodeID string) *snapshot {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.snaps[nodeID]
}

func (d *deltaServer) watch(st *deltaStream) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.watching[st.nodeID] == nil {
		d.watching[st.nodeID] = map[*deltaStream]struct{}{}
	}
	d.watching[st.nodeID][st] = struct{}{}
}

func (d *deltaServer) unwatch(st *deltaStream) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.watching[st.nodeID], st)
	if len(d.watching[st.nodeID]) == 0 {
		delete(d.watching, st.nodeID)
	}
}

// deltaStream is one delta ADS stream.
type deltaStream struct {
	id     int64
	node   *core.Node
	nodeID string
	subs   map[string]*deltaSub // by type URL
	nonce  int64
	woken  chan struct{}
	send   func(*discovery.DeltaDiscoveryResponse) error
}

func (st *deltaStream) wake() {
	select {
	case st.woken <- struct{}{}:
	default:
	}
}

// responseOrder is the order in which a change's types are sent: what a
// resource refers to before it (secrets, then clusters and their endpoints,
// then listeners and their routes), as Envoy's docs ask of ADS.
var responseOrder = []string{resource.SecretType, resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType}

// serve runs one stream until the proxy or stop ends it.
func (d *deltaServer) serve(stop <-chan struct{}, stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	// Negative IDs: go-control-plane numbers its own streams from 1, and
	// the callbacks keep both kinds in one map.
	st := &deltaStream{id: -d.count.Add(1), subs: map[string]*deltaSub{}, woken: make(chan struct{}, 1), send: stream.Send}
	defer func() {
		if st.nodeID != "" {
			d.unwatch(st)
		}
		d.cb.OnDeltaStreamClosed(st.id, st.node)
	}()
	ctx := stream.Context()
	if err := d.cb.OnDeltaStreamOpen(ctx, st.id, resource.AnyType); err != nil {
		return err
	}
	reqs := make(chan *discovery.DeltaDiscoveryRequest)
	go func() {
		defer close(reqs)
		for {
			req, err := stream.Recv()
			if err != nil {
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case <-stop:
			return nil
		case req, more := <-reqs:
			if !more {
				return nil
			}
			if err := d.request(st, req); err != nil {
				return err
			}
		case <-st.woken:
			if err := d.respondAll(st); err != nil {
				return err
			}
		}
	}
}

// respondAll sends what changed of every type, in responseOrder.
func (d *deltaServer) respondAll(st *deltaStream) error {
	snap := d.current(st.nodeID)
	for _, typ := range responseOrder {
		if err := d.respond(st, typ, snap); err != nil {
			return err
		}
	}
	for typ := range st.subs {
		if !slices.Contains(responseOrder, typ) {
			if err := d.respond(st, typ, snap); err != nil {
				return err
			}
		}
	}
	return nil
}

// request applies a proxy's request: its subscriptions change, and an
// answer (ACK or NACK) frees its type for the next response.
func (d *deltaServer) request(st *deltaStream, req *discovery.DeltaDiscoveryRequest) error {
	if err := d.cb.OnStreamDeltaRequest(st.id, req); err != nil {
		return err
	}
	if st.node == nil {
		st.node = req.GetNode() // the callback refused a first request without one
	}
	if st.nodeID == "" {
		st.nodeID = st.node.GetId()
		d.watch(st)
	}
	typ := req.GetTypeUrl()
	if typ == "" {
		return status.Error(codes.InvalidArgument, "type URL is required for ADS")
	}
	sub := st.subs[typ]
	if sub == nil {
		sub = newDeltaSub(req)
		st.subs[typ] = sub
	} else {
		sub.update(req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe())
	}
	sub.waiting = false
	// Envoy waits for an answer to a wildcard request, even an empty one.
	sub.owed = sub.wildcard && req.GetResponseNonce() == ""
	return d.respond(st, typ, d.current(st.nodeID))
}

// respond sends the proxy what changed of one type in snap since what it
// holds, unless a response of that type is still unanswered.
func (d *deltaServer) respond(st *deltaStream, typ string, snap *snapshot) error {
	sub := st.subs[typ]
	if sub == nil || sub.waiting || snap == nil {
		return nil
	}
	tv := snap.of(typ)
	if !sub.owed && len(sub.diff) == 0 && sub.held.base != nil && sub.held.version == tv.version {
		// It holds this very content. Hold it as this generation's
		// view, so that the last one's can be collected.
		sub.held = tv
		return nil
	}
	changed, removed := sub.changes(tv)
	if len(changed) == 0 && len(removed) == 0 && !sub.owed {
		if len(sub.diff) == 0 {
			sub.held = tv // the same content: next time one comparison
		}
		return nil
	}
	st.nonce++
	resp := &discovery.DeltaDiscoveryResponse{
		SystemVersionInfo: tv.version,
		Resources:         changed,
		RemovedResources:  removed,
		TypeUrl:           typ,
		Nonce:             strconv.FormatInt(st.nonce, 10),
	}
	d.cb.OnStreamDeltaResponse(st.id, nil, resp)
	if err := st.send(resp); err != nil {
		return err
	}
	sub.held, sub.diff, sub.waiting, sub.owed = tv, nil, true, false
	return nil
}

// heldUnknown is the version of a resource a proxy may hold in some
// version we do not know: it is sent again if it exists, removed if not.
const heldUnknown = "\x00unknown"

// deltaSub is one type's subscription on a stream, and what the proxy
// holds of that type: held's resources that it is subscribed to, except
// where diff says otherwise (a version, "" for nothing).
type deltaSub struct {
	wildcard bool
	legacy   bool     // no name asked for yet: an empty request is a wildcard (the protocol's legacy rule)
	names    []string // sorted: a slice is a third of a set's memory, and names are only walked or searched
	held     typeView
	diff     map[string]string
	waiting  bool // a response is out and unanswered
	owed     bool // a response is due even if empty
}

func newDeltaSub(req *discovery.DeltaDiscoveryRequest) *deltaSub {
	s := &deltaSub{legacy: true, wildcard: len(req.GetResourceNamesSubscribe()) == 0}
	for name, v := range req.GetInitialResourceVersions() {
		if v == "" {
			v = heldUnknown // held, in no version we know
		}
		s.except(unique.Make(name).Value(), v)
	}
	s.update(req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe())
	return s
}

// update applies a request's subscriptions and unsubscriptions, as
// go-control-plane's stream.Subscription does.
func (s *deltaSub) update(subscribe, unsubscribe []string) {
	if s.legacy {
		if len(subscribe) == 0 {
			return // still a legacy wildcard
		}
		s.legacy = false
	}
	var added map[string]bool
	for _, name := range subscribe {
		if name == "*" {
			s.setWildcard(true)
			continue
		}
		if s.named(name) || added[name] {
			continue
		}
		// Names are interned: a thousand proxies subscribed to a
		// thousand clusters' endpoints share one copy of each name.
		name = unique.Make(name).Value()
		if !s.wildcard {
			if _, ok := s.diff[name]; !ok {
				s.except(name, "") // held may have it; the proxy has not
			}
		}
		if added == nil {
			added = map[string]bool{}
		}
		added[name] = true
	}
	if len(added) > 0 {
		for name := range added {
			s.names = append(s.names, name)
		}
		slices.Sort(s.names)
		s.names = slices.Clip(s.names)
	}
	if len(unsubscribe) == 0 {
		return
	}
	gone := map[string]bool{}
	for _, name := range unsubscribe {
		if name == "*" {
			s.setWildcard(false)
			continue
		}
		named := s.named(name)
		switch {
		case s.wildcard && named:
			// Still wanted through the wildcard: the proxy must be told
			// again whether it exists.
			s.except(name, heldUnknown)
		case s.wildcard:
			s.except(name, "")
		default:
			delete(s.diff, name)
		}
		gone[name] = true
	}
	s.names = slices.DeleteFunc(s.names, func(n string) bool { return gone[n] })
}

// named reports whether the proxy subscribed to name by name.
func (s *deltaSub) named(name string) bool {
	_, ok := slices.BinarySearch(s.names, name)
	return ok
}

func (s *deltaSub) except(name, version string) {
	if s.diff == nil {
		s.diff = map[string]string{}
	}
	s.diff[name] = version
}

// setWildcard changes which of held's resources the proxy is taken to
// hold, so first it writes down what it holds now.
func (s *deltaSub) setWildcard(on bool) {
	if s.wildcard == on {
		return
	}
	if s.held.base != nil {
		holds := map[string]string{}
		s.held.each(func(name, v string) {
			if s.interested(name) {
				holds[name] = v
			}
		})
		for name, v := range s.diff {
			holds[name] = v
		}
		s.held, s.diff = typeView{}, holds
	}
	s.wildcard = on
}

func (s *deltaSub) interested(name string) bool {
	return s.wildcard || s.named(name)
}

// holds returns the version of a resource the proxy holds.
func (s *deltaSub) holds(name string) (string, bool) {
	if v, ok := s.diff[name]; ok {
		return v, v != ""
	}
	if !s.interested(name) {
		return "", false
	}
	return s.held.lookup(name)
}

// changes returns what the proxy lacks of tv and what it holds that tv
// no longer has.
func (s *deltaSub) changes(tv typeView) (changed []*discovery.Resource, removed []string) {
	if !s.wildcard {
		for _, name := range s.names {
			if v, ok := tv.lookup(name); ok {
				if h, _ := s.holds(name); h != v {
					changed = append(changed, tv.wire(name))
				}
			} else if _, held := s.holds(name); held {
				removed = append(removed, name)
			}
		}
		return changed, removed
	}
	tv.each(func(name, v string) {
		if h, _ := s.holds(name); h != v {
			changed = append(changed, tv.wire(name))
		}
	})
	s.held.each(func(name, _ string) {
		if _, ok := s.diff[name]; !ok {
			if _, ok := tv.lookup(name); !ok {
				removed = append(removed, name)
			}
		}
	})
	for name, v := range s.diff {
		if v != "" {
			if _, ok := tv.lookup(name); !ok {
				removed = append(removed, name)
			}
		}
	}
	return changed, removed
}

// adsService is go-control-plane's ADS server with delta streams served by
// a deltaServer.
type adsService struct {
	server.Server
	delta *deltaServer
	stop  <-chan struct{}
}

// DeltaAggregatedResources serves a delta ADS stream.
func (s adsService) DeltaAggregatedResources(stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return s.delta.serve(s.stop, stream)
}

// service returns the ADS gRPC service, ending its streams when ctx ends.
func (a *ads) service(ctx context.Context) discovery.AggregatedDiscoveryServiceServer {
	return adsService{Server: server.NewServer(ctx, a.mux, a), delta: a.delta, stop: ctx.Done()}
}
