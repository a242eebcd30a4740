package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/xds"
)

// ads serves the mesh to proxies over the Aggregated Discovery Service:
// state-of-the-world streams from go-control-plane's snapshot cache, delta
// streams from our own delta server (delta.go).
//
// A proxy authenticates with its workload certificate; its node ID must
// name the same SPIFFE ID. Each change of the mesh is a generation: the
// resources shared by a namespace and proxy kind are built once per
// generation and handed to every such proxy by reference; only listeners,
// secrets and the app cluster are built per proxy. Every resource type has
// its own version, a hash of its content, so a change re-sends only the
// types it touched.
type ads struct {
	log    *slog.Logger
	bundle *identity.Bundle
	// Proxyless gRPC clients subscribe to single listeners by name, which a
	// cache in ADS mode never answers (it wants the snapshot to hold exactly
	// the names asked for); Envoy's state-of-the-world streams keep ADS mode
	// for its ordering (clusters before endpoints, listeners before routes).
	sidecars  cache.SnapshotCache
	proxyless cache.SnapshotCache
	mux       *cache.MuxCache
	delta     *deltaServer // delta streams: every node's snapshot is set here too
	m         *xdsMetrics

	mu      sync.Mutex
	gen     *generation
	streams map[int64]*adsStream
	nodes   map[string]*nodeState
	// pushed is the last generation set on every node's snapshot; pushedCh
	// is closed when a newer one is (waitMesh).
	pushed   *generation
	pushedCh chan struct{}
}

var _ server.Callbacks = (*ads)(nil)

// generation is the mesh after one change.
type generation struct {
	version uint64
	mesh    *xds.Mesh
	event   time.Time // when the registry change that made it arrived

	mu     sync.Mutex
	shared map[[2]string]*sharedView
}

// sharedView is a Shared with its resources indexed and hashed, once.
type sharedView struct {
	once      sync.Once
	sh        *xds.Shared
	listeners typeView // proxyless API listeners
	routes    typeView
	clusters  typeView
	endpoints typeView
	err       error // from ValidateShared: nothing invalid is served
}

type adsStream struct {
	id     identity.ID // verified from the certificate
	nodeID string
	delta  bool
	sent   map[string]sentPush // by nonce
}

type sentPush struct {
	typeURL string
	version string
}

// nodeState is what the control plane knows of a connected proxy.
type nodeState struct {
	proxy     xds.Proxy
	streams   int
	connected time.Time
	delta     bool
	versions  map[string]string // type → version in the current snapshot
	// subscribed are the types the proxy asked for: only those are awaited.
	subscribed map[string]bool
	pending    map[string]time.Time
	acked      map[string]typeStatus
	nacked     map[string]typeStatus
}

// typeStatus is a proxy's last answer for one resource type.
type typeStatus struct {
	Version string
	At      time.Time
	Error   string
}

var allTypes = []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType, resource.SecretType}

func newADS(log *slog.Logger, bundle *identity.Bundle, m *xdsMetrics) *ads {
	a := &ads{
		log:       log,
		bundle:    bundle,
		sidecars:  cache.NewSnapshotCache(true, cache.IDHash{}, cpLogger{log}),
		proxyless: cache.NewSnapshotCache(false, cache.IDHash{}, cpLogger{log}),
		m:         m,
		// Generation 0 stands until the registry's first snapshot: no
		// proxy is given it (an empty mesh is a complete config that
		// routes nowhere: an app calling out at once would be told its
		// peers are not in the mesh); it has the trust bundle, so the
		// snapshots built from it to check a connecting proxy are valid.
		gen:      &generation{mesh: &xds.Mesh{TrustDomain: bundle.TrustDomain(), Roots: identity.EncodeCertificates(bundle.Roots())}, shared: map[[2]string]*sharedView{}},
		streams:  map[int64]*adsStream{},
		nodes:    map[string]*nodeState{},
		pushedCh: make(chan struct{}),
	}
	a.delta = newDeltaServer(a)
	a.mux = &cache.MuxCache{
		Classify:      func(r *cache.Request) string { return cacheClass(r.GetNode()) },
		ClassifyDelta: func(r *cache.DeltaRequest) string { return cacheClass(r.GetNode()) },
		Caches:        map[string]cache.Cache{xds.KindProxyless: a.proxyless, "sidecar": a.sidecars},
	}
	return a
}

// cacheClass picks the cache of a node by its kind.
func cacheClass(n *core.Node) string {
	if kind, err := nodeKind(n); err == nil && kind == xds.KindProxyless {
		return xds.KindProxyless
	}
	return "sidecar"
}

// setSnapshot makes snap the node's configuration, for its streams of
// either kind and the admin API.
func (a *ads) setSnapshot(nodeID, kind string, snap *snapshot) error {
	a.delta.set(nodeID, snap)
	return a.cacheFor(kind).SetSnapshot(context.Background(), nodeID, snap)
}

func (a *ads) cacheFor(kind string) cache.SnapshotCache {
	if kind == xds.KindProxyless {
		return a.proxyless
	}
	return a.sidecars
}

// update installs a new mesh and pushes it to every connected proxy.
func (a *ads) update(mesh *xds.Mesh, event time.Time) {
	start := time.Now()
	mesh = xds.WithDefaults(mesh)
	a.mu.Lock()
	gen := &generation{version: a.gen.version + 1, mesh: mesh, event: event, shared: map[[2]string]*sharedView{}}
	a.gen = gen
	nodes := make([]string, 0, len(a.nodes))
	for id := range a.nodes {
		nodes = append(nodes, id)
	}
	a.mu.Unlock()

	// Build and set the nodes' snapshots on all cores.
	work := make(chan string)
	var wg sync.WaitGroup
	for range max(runtime.GOMAXPROCS(0), 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				a.push(gen, id)
			}
		}()
	}
	for _, id := range nodes {
		work <- id
	}
	close(work)
	wg.Wait()
	a.mu.Lock()
	if a.pushed == nil || a.pushed.version < gen.version {
		a.pushed = gen
		close(a.pushedCh)
		a.pushedCh = make(chan struct{})
	}
	a.mu.Unlock()
	a.m.builds.Observe(time.Since(start).Seconds())
	a.log.Debug("pushed mesh", "generation", gen.version, "services", len(mesh.Services), "proxies", len(nodes), "took", time.Since(start))
}

// waitMesh waits until a generation whose mesh satisfies ok has been set
// for every node — and is what a node connecting from then on gets —, or
// ctx ends; it reports whether one was.
func (a *ads) waitMesh(ctx context.Context, ok func(*xds.Mesh) bool) bool {
	for {
		a.mu.Lock()
		gen, changed := a.pushed, a.pushedCh
		a.mu.Unlock()
		if gen != nil && ok(gen.mesh) {
			return true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}

// push builds and sets the snapshot of one node for gen.
func (a *ads) push(gen *generation, nodeID string) {
	a.mu.Lock()
	n, ok := a.nodes[nodeID]
	if !ok || a.gen != gen {
		a.mu.Unlock()
		return // gone, or a newer generation will push
	}
	proxy := n.proxy
	a.mu.Unlock()

	snap, versions, err := a.snapshot(gen, proxy)
	if err != nil {
		a.log.Error("build proxy config", "node", nodeID, "err", err)
		return
	}
	a.mu.Lock()
	if n2, ok := a.nodes[nodeID]; ok && n2 == n && a.gen == gen {
		for typ, v := range versions {
			if n.subscribed[typ] && n.versions[typ] != v {
				if _, waiting := n.pending[typ]; !waiting {
					n.pending[typ] = gen.event
				}
			}
		}
		n.versions = versions
	}
	a.mu.Unlock()
	if err := a.setSnapshot(nodeID, proxy.Kind, snap); err != nil {
		a.log.Error("set snapshot", "node", nodeID, "err", err)
	}
}

// view returns the shared resources of a namespace and kind, building them
// the first time.
func (g *generation) view(ns, kind string) *sharedView {
	g.mu.Lock()
	v, ok := g.shared[[2]string{ns, kind}]
	if !ok {
		v = &sharedView{}
		g.shared[[2]string{ns, kind}] = v
	}
	g.mu.Unlock()
	v.once.Do(func() {
		v.sh = xds.BuildShared(g.mesh, ns, kind)
		v.err = v.sh.ValidateShared()
		v.listeners = newTypeView(v.sh.APIListeners, true)
		v.routes = newTypeView([]*route.RouteConfiguration{v.sh.Route}, true)
		v.clusters = newTypeView(v.sh.Clusters, true)
		v.endpoints = newTypeView(v.sh.Endpoints, true)
	})
	return v
}

// snapshot assembles a proxy's snapshot from the shared view and its own
// resources, with a content version per type.
func (a *ads) snapshot(gen *generation, p xds.Proxy) (*snapshot, map[string]string, error) {
	v := gen.view(p.Namespace, p.Kind)
	if v.err != nil {
		return nil, nil, v.err
	}
	own, err := xds.BuildOwn(gen.mesh, p)
	if err != nil {
		return nil, nil, err
	}
	if err := own.Validate(v.sh); err != nil {
		return nil, nil, err
	}
	snap := &snapshot{}
	set := func(typ string, tv typeView) { snap[cache.GetResponseType(typ)] = tv }
	switch {
	case !own.UsesShared:
		set(resource.RouteType, emptyView)
		set(resource.EndpointType, emptyView)
		set(resource.ClusterType, newTypeView(own.Clusters, false))
	case len(own.Clusters) == 0:
		set(resource.RouteType, v.routes)
		set(resource.EndpointType, v.endpoints)
		set(resource.ClusterType, v.clusters)
	default:
		set(resource.RouteType, v.routes)
		set(resource.EndpointType, v.endpoints)
		set(resource.ClusterType, v.clusters.plus(newResources(own.Clusters, false)))
	}
	if p.Kind == xds.KindProxyless {
		set(resource.ListenerType, v.listeners)
		set(resource.SecretType, emptyView)
	} else {
		set(resource.ListenerType, newTypeView(own.Listeners, false))
		set(resource.SecretType, newTypeView(own.Secrets, false))
	}
	versions := make(map[string]string, len(allTypes))
	for _, typ := range allTypes {
		versions[typ] = snap.GetVersion(typ)
	}
	return snap, versions, nil
}

// --- callbacks ---

// OnStreamOpen authenticates the proxy by its certificate.
func (a *ads) OnStreamOpen(ctx context.Context, id int64, _ string) error {
	return a.open(ctx, id, false)
}

// OnDeltaStreamOpen is OnStreamOpen for delta streams.
func (a *ads) OnDeltaStreamOpen(ctx context.Context, id int64, _ string) error {
	return a.open(ctx, id, true)
}

func (a *ads) open(ctx context.Context, streamID int64, delta bool) error {
	peerID, err := verifiedPeer(ctx, a.bundle)
	if err != nil {
		a.log.Warn("refused xDS stream", "err", err)
		return status.Error(codes.Unauthenticated, err.Error())
	}
	a.mu.Lock()
	a.streams[streamID] = &adsStream{id: peerID, delta: delta, sent: map[string]sentPush{}}
	a.mu.Unlock()
	return nil
}

// OnStreamClosed forgets the stream and, with its last stream, the node.
func (a *ads) OnStreamClosed(id int64, _ *core.Node) { a.closed(id) }

// OnDeltaStreamClosed is OnStreamClosed for delta streams.
func (a *ads) OnDeltaStreamClosed(id int64, _ *core.Node) { a.closed(id) }

func (a *ads) closed(streamID int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.streams[streamID]
	if !ok {
		return
	}
	delete(a.streams, streamID)
	if s.nodeID == "" {
		return
	}
	n := a.nodes[s.nodeID]
	if n == nil {
		return
	}
	if n.streams--; n.streams == 0 {
		delete(a.nodes, s.nodeID)
		a.cacheFor(n.proxy.Kind).ClearSnapshot(s.nodeID)
		a.delta.clear(s.nodeID)
		a.m.connected.WithLabelValues(n.proxy.Kind).Dec()
		a.log.Info("proxy disconnected", "node", s.nodeID)
	}
}

// OnStreamRequest checks the node against the certificate on the first
// request, and records ACKs and NACKs.
//
// A NACK carries the last version the proxy accepted, which differs from
// what the cache holds, so the cache would send the rejected version again
// at once, and again after each NACK. The request is rewritten to claim the
// rejected version: nothing more is sent until the config changes, and the
// proxy keeps running its last good one.
func (a *ads) OnStreamRequest(id int64, req *discovery.DiscoveryRequest) error {
	if err := a.request(id, req.GetNode()); err != nil {
		return err
	}
	a.subscribe(id, req.GetTypeUrl())
	if req.GetResponseNonce() != "" {
		if rejected := a.answer(id, req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail()); rejected != "" {
			req.VersionInfo = rejected
		}
	}
	return nil
}

// OnStreamDeltaRequest is OnStreamRequest for delta streams.
func (a *ads) OnStreamDeltaRequest(id int64, req *discovery.DeltaDiscoveryRequest) error {
	if err := a.request(id, req.GetNode()); err != nil {
		return err
	}
	a.subscribe(id, req.GetTypeUrl())
	if req.GetResponseNonce() != "" {
		a.answer(id, req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail())
	}
	return nil
}

// request binds a stream to its node on the first request.
func (a *ads) request(streamID int64, node *core.Node) error {
	a.mu.Lock()
	s, ok := a.streams[streamID]
	if !ok {
		a.mu.Unlock()
		return status.Error(codes.Internal, "unknown stream")
	}
	if s.nodeID != "" {
		a.mu.Unlock()
		return nil
	}
	a.mu.Unlock()

	if node.GetId() == "" {
		return status.Error(codes.InvalidArgument, "the first request must carry the node and its id")
	}
	claimed, err := identity.ParseNodeID(node.GetId())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if claimed != s.id {
		a.log.Warn("refused xDS stream: node ID and certificate disagree", "node", node.GetId(), "certificate", s.id.String())
		return status.Errorf(codes.PermissionDenied, "node ID %q claims %s, but the proxy's certificate is %s", node.GetId(), claimed, s.id)
	}
	proxy, err := proxyFromNode(node, claimed)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "node %s: %v", node.GetId(), err)
	}
	a.mu.Lock()
	gen := a.gen
	a.mu.Unlock()
	snap, versions, err := a.snapshot(gen, proxy)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "node %s: %v", node.GetId(), err)
	}

	a.mu.Lock()
	s.nodeID = node.GetId()
	n, existing := a.nodes[s.nodeID]
	if !existing {
		n = &nodeState{connected: time.Now(), subscribed: map[string]bool{}, pending: map[string]time.Time{}, acked: map[string]typeStatus{}, nacked: map[string]typeStatus{}}
		a.nodes[s.nodeID] = n
		a.m.connected.WithLabelValues(proxy.Kind).Inc()
	}
	n.streams++
	n.proxy, n.delta, n.versions = proxy, s.delta, versions
	a.mu.Unlock()
	if !existing {
		a.log.Info("proxy connected", "node", s.nodeID, "kind", proxy.Kind, "delta", s.delta)
	}
	if gen.version > 0 { // else the registry's first generation pushes to it
		if err := a.setSnapshot(s.nodeID, proxy.Kind, snap); err != nil {
			return status.Errorf(codes.Internal, "set snapshot: %v", err)
		}
	}
	if cur := a.currentGen(); cur != gen { // a newer generation arrived meanwhile
		a.push(cur, s.nodeID)
	}
	return nil
}

// subscribe records that the stream's node asked for typeURL.
func (a *ads) subscribe(streamID int64, typeURL string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s := a.streams[streamID]; s != nil {
		if n := a.nodes[s.nodeID]; n != nil {
			n.subscribed[typeURL] = true
		}
	}
}

func (a *ads) currentGen() *generation {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.gen
}

// answer records the proxy's ACK or NACK of a response; for a NACK it
// returns the rejected version.
func (a *ads) answer(streamID int64, typeURL, nonce string, nack *rpcstatus.Status) (rejected string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.streams[streamID]
	if s == nil {
		return ""
	}
	push, ok := s.sent[nonce]
	if !ok {
		return ""
	}
	delete(s.sent, nonce)
	n := a.nodes[s.nodeID]
	if n == nil {
		return ""
	}
	now := time.Now()
	if nack != nil {
		msg := nack.GetMessage()
		n.nacked[typeURL] = typeStatus{Version: push.version, At: now, Error: msg}
		a.m.nacks.WithLabelValues(shortType(typeURL)).Inc()
		a.log.Warn("proxy rejected config (NACK); it keeps its previous config", "node", s.nodeID, "type", shortType(typeURL), "version", push.version, "error", msg)
		return push.version
	}
	n.acked[typeURL] = typeStatus{Version: push.version, At: now}
	if since, ok := n.pending[typeURL]; ok && push.version == n.versions[typeURL] {
		delete(n.pending, typeURL)
		if len(n.pending) == 0 && !since.IsZero() {
			a.m.convergence.Observe(now.Sub(since).Seconds())
		}
	}
	return ""
}

// OnStreamResponse remembers what was sent under which nonce.
func (a *ads) OnStreamResponse(_ context.Context, id int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	a.sent(id, resp.GetTypeUrl(), resp.GetNonce(), resp.GetVersionInfo())
}

// OnStreamDeltaResponse is OnStreamResponse for delta streams.
func (a *ads) OnStreamDeltaResponse(id int64, _ *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
	a.sent(id, resp.GetTypeUrl(), resp.GetNonce(), resp.GetSystemVersionInfo())
}

func (a *ads) sent(streamID int64, typeURL, nonce, version string) {
	a.m.pushes.WithLabelValues(shortType(typeURL)).Inc()
	a.mu.Lock()
	defer a.mu.Unlock()
	if s := a.streams[streamID]; s != nil {
		s.sent[nonce] = sentPush{typeURL: typeURL, version: version}
	}
}

// OnFetchRequest: REST fetches are not served (they carry no certificate binding).
func (a *ads) OnFetchRequest(context.Context, *discovery.DiscoveryRequest) error {
	return status.Error(codes.Unimplemented, "use ADS (StreamAggregatedResources or DeltaAggregatedResources)")
}

// OnFetchResponse is unused.
func (a *ads) OnFetchResponse(*discovery.DiscoveryRequest, *discovery.DiscoveryResponse) {}

func shortType(typeURL string) string {
	switch typeURL {
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
	return typeURL
}

// cpLogger adapts slog to go-control-plane's logger: its chatter is debug.
type cpLogger struct{ l *slog.Logger }

// Messages are formatted only when their level is on: go-control-plane
// logs whole subscription maps at debug level on every watch.
func (c cpLogger) logf(level slog.Level, format string, args []any) {
	if c.l.Enabled(context.Background(), level) {
		c.l.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
}

func (c cpLogger) Debugf(format string, args ...any) { c.logf(slog.LevelDebug, format, args) }
func (c cpLogger) Infof(format string, args ...any)  { c.logf(slog.LevelDebug, format, args) }
func (c cpLogger) Warnf(format string, args ...any)  { c.logf(slog.LevelWarn, format, args) }
func (c cpLogger) Errorf(format string, args ...any) { c.logf(slog.LevelError, format, args) }
