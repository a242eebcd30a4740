package controlplane

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/stream/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestDeltaAgreesWithGoControlPlane drives our delta server and
// go-control-plane's (its snapshot cache and subscription state, stepped
// as its server steps them) with the same random requests and snapshots,
// and wants the same responses: which resources, which removals, and
// whether a response is sent at all.
func TestDeltaAgreesWithGoControlPlane(t *testing.T) {
	for seed := range uint64(300) {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			node := &core.Node{Id: "spiffe://micromesh.local/ns/default/svc/a"}
			ours := newOurDelta(node)
			theirs := newTheirDelta(node)
			compare := func(step string) {
				t.Helper()
				got, want := ours.take(), theirs.take()
				if testing.Verbose() {
					t.Logf("%s: %v", step, got)
					for typ, sub := range ours.st.subs {
						t.Logf("  %s: wildcard=%v names=%v diff=%q waiting=%v held=%q", shortType(typ), sub.wildcard, sub.names, sub.diff, sub.waiting, sub.held.version)
					}
				}
				if !slices.Equal(got, want) {
					t.Fatalf("%s:\nours   %v\ntheirs %v", step, got, want)
				}
			}
			var snap *snapshot
			setSnap := func() {
				snap = randomSnapshot(rng)
				ours.set(snap)
				theirs.set(snap)
			}
			if rng.IntN(2) == 0 {
				setSnap()
			}
			// The first requests: clusters by wildcard (explicit or
			// legacy), endpoints by name; some as a reconnection offering
			// the versions held.
			for _, typ := range []string{resource.ClusterType, resource.EndpointType} {
				req := &discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: typ}
				if typ == resource.EndpointType || rng.IntN(2) == 0 {
					req.ResourceNamesSubscribe = randomNames(rng, typ)
				}
				if rng.IntN(3) == 0 {
					req.InitialResourceVersions = map[string]string{}
					for _, n := range randomNames(rng, typ) {
						req.InitialResourceVersions[n] = []string{"stale", ""}[rng.IntN(2)]
					}
					if snap != nil {
						snap.of(typ).each(func(n, v string) {
							if rng.IntN(2) == 0 {
								req.InitialResourceVersions[n] = v
							}
						})
					}
				}
				ours.request(req)
				theirs.request(req)
				compare(fmt.Sprintf("first %s request %v", typ, req))
			}
			for i := range 40 {
				typ := []string{resource.ClusterType, resource.EndpointType}[rng.IntN(2)]
				var step string
				switch rng.IntN(5) {
				case 0:
					setSnap()
					step = "new snapshot"
				case 1, 2: // an answer to the last response of the type
					nonce := ours.nonce[typ]
					if nonce == "" {
						continue
					}
					req := &discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: typ, ResponseNonce: nonce}
					ours.request(req)
					theirs.request(req)
					step = "ACK " + typ
				default: // subscriptions change
					req := &discovery.DeltaDiscoveryRequest{Node: node, TypeUrl: typ}
					if rng.IntN(2) == 0 {
						req.ResourceNamesSubscribe = randomNames(rng, typ)
					}
					if rng.IntN(2) == 0 {
						req.ResourceNamesUnsubscribe = randomNames(rng, typ)
					}
					ours.request(req)
					theirs.request(req)
					step = fmt.Sprintf("subscriptions %v", req)
				}
				compare(fmt.Sprintf("step %d, %s", i, step))
			}
		})
	}
}

var names = []string{"a", "b", "c", "d", "e", "f"}

func randomNames(rng *rand.Rand, typ string) []string {
	var out []string
	for _, n := range names {
		if rng.IntN(3) == 0 {
			out = append(out, n)
		}
	}
	if typ == resource.ClusterType && rng.IntN(4) == 0 {
		out = append(out, "*")
	}
	return out
}

// randomSnapshot has some of the names in some versions; the clusters are
// sometimes a shared view plus a proxy's own.
func randomSnapshot(rng *rand.Rand) *snapshot {
	var clusters []*cluster.Cluster
	var own []*cluster.Cluster
	var endpoints []*endpoint.ClusterLoadAssignment
	for _, n := range names {
		if rng.IntN(3) > 0 {
			c := &cluster.Cluster{Name: n, ConnectTimeout: durationpb.New(time.Duration(1+rng.IntN(2)) * time.Second)}
			if rng.IntN(4) == 0 {
				own = append(own, c)
			} else {
				clusters = append(clusters, c)
			}
		}
		if rng.IntN(3) > 0 {
			endpoints = append(endpoints, &endpoint.ClusterLoadAssignment{ClusterName: n, Policy: &endpoint.ClusterLoadAssignment_Policy{OverprovisioningFactor: wrapperspb.UInt32(uint32(rng.IntN(2)))}})
		}
	}
	s := &snapshot{}
	s[cache.GetResponseType(resource.ClusterType)] = newTypeView(clusters, true)
	if len(own) > 0 {
		s[cache.GetResponseType(resource.ClusterType)] = newTypeView(clusters, true).plus(newResources(own, false))
	}
	s[cache.GetResponseType(resource.EndpointType)] = newTypeView(endpoints, rng.IntN(2) == 0)
	return s
}

// A response as compared: type, resources, removals, sorted.
type seen string

func describeResponse(typ string, res []*discovery.Resource, removed []string) seen {
	var r []string
	for _, x := range res {
		// Names only: go-control-plane labels what it sends with a hash of
		// its own, not the versions it compares.
		r = append(r, x.GetName())
	}
	slices.Sort(r)
	removed = slices.Clone(removed)
	slices.Sort(removed)
	return seen(fmt.Sprintf("%s %v -%v", shortType(typ), r, removed))
}

// ourDelta is our delta server with one stream, stepped by hand.
type ourDelta struct {
	d     *deltaServer
	st    *deltaStream
	out   []seen
	nonce map[string]string // the last response's, by type
}

func newOurDelta(node *core.Node) *ourDelta {
	o := &ourDelta{d: newDeltaServer(nopDeltaCallbacks{}), nonce: map[string]string{}}
	o.st = &deltaStream{id: -1, subs: map[string]*deltaSub{}, woken: make(chan struct{}, 1)}
	o.st.send = func(r *discovery.DeltaDiscoveryResponse) error {
		o.out = append(o.out, describeResponse(r.GetTypeUrl(), r.GetResources(), r.GetRemovedResources()))
		o.nonce[r.GetTypeUrl()] = r.GetNonce()
		return nil
	}
	_ = node
	return o
}

func (o *ourDelta) set(snap *snapshot) {
	o.d.set("spiffe://micromesh.local/ns/default/svc/a", snap)
	if o.st.nodeID != "" {
		if err := o.d.respondAll(o.st); err != nil {
			panic(err)
		}
	}
}

func (o *ourDelta) request(req *discovery.DeltaDiscoveryRequest) {
	if err := o.d.request(o.st, req); err != nil {
		panic(err)
	}
}

func (o *ourDelta) take() []seen {
	out := o.out
	o.out = nil
	slices.Sort(out)
	return out
}

type nopDeltaCallbacks struct{}

func (nopDeltaCallbacks) OnDeltaStreamOpen(context.Context, int64, string) error { return nil }
func (nopDeltaCallbacks) OnDeltaStreamClosed(int64, *core.Node)                  {}
func (nopDeltaCallbacks) OnStreamDeltaRequest(int64, *discovery.DeltaDiscoveryRequest) error {
	return nil
}
func (nopDeltaCallbacks) OnStreamDeltaResponse(int64, *discovery.DeltaDiscoveryRequest, *discovery.DeltaDiscoveryResponse) {
}

// theirDelta is go-control-plane's snapshot cache with the subscription
// state its delta server keeps, stepped as that server steps them.
type theirDelta struct {
	c      cache.SnapshotCache
	node   *core.Node
	subs   map[string]*stream.Subscription
	cancel map[string]func()
	ch     chan cache.DeltaResponse
	out    []seen
}

func newTheirDelta(node *core.Node) *theirDelta {
	return &theirDelta{c: cache.NewSnapshotCache(true, cache.IDHash{}, nil), node: node, subs: map[string]*stream.Subscription{}, cancel: map[string]func(){}, ch: make(chan cache.DeltaResponse, 16)}
}

func (g *theirDelta) set(snap *snapshot) {
	if err := g.c.SetSnapshot(context.Background(), g.node.GetId(), snap); err != nil {
		panic(err)
	}
	g.drain()
}

func (g *theirDelta) request(req *discovery.DeltaDiscoveryRequest) {
	typ := req.GetTypeUrl()
	sub, ok := g.subs[typ]
	if !ok {
		s := stream.NewDeltaSubscription(req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe(), req.GetInitialResourceVersions(), true)
		sub = &s
		g.subs[typ] = sub
	} else {
		if c := g.cancel[typ]; c != nil {
			c()
		}
		sub.UpdateResourceSubscriptions(req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe())
	}
	cancel, err := g.c.CreateDeltaWatch(req, *sub, g.ch)
	if err != nil {
		panic(err)
	}
	g.cancel[typ] = cancel
	g.drain()
}

func (g *theirDelta) drain() {
	for {
		select {
		case r := <-g.ch:
			resp, err := r.GetDeltaDiscoveryResponse()
			if err != nil {
				panic(err)
			}
			g.subs[resp.GetTypeUrl()].SetReturnedResources(r.GetNextVersionMap())
			g.out = append(g.out, describeResponse(resp.GetTypeUrl(), resp.GetResources(), resp.GetRemovedResources()))
		default:
			return
		}
	}
}

func (g *theirDelta) take() []seen {
	out := g.out
	g.out = nil
	slices.Sort(out)
	return out
}
