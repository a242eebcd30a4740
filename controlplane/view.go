package controlplane

import (
	"encoding/hex"
	"hash/fnv"
	"slices"
	"strings"
	"sync"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// resources are one type's resources in every form the servers send them,
// built once and never modified afterwards: every snapshot that holds them
// shares them.
type resources struct {
	entries []entry
	index   map[string]int32 // name → entry, for sets too large to walk
	// maps are the forms go-control-plane's cache asks for (state of the
	// world, the admin API), made when first asked: delta streams, the
	// sidecars' default, never need them.
	maps struct {
		once     sync.Once
		items    map[string]types.ResourceWithTTL
		plain    map[string]types.Resource
		versions map[string]string
	}
}

type entry struct {
	name    string
	version string // a hash of the content
	res     types.Resource
	wire    *discovery.Resource // as delta responses carry it, marshalled once (shared resources; nil for a proxy's own)
}

// indexFrom is the size from which a set is indexed rather than walked.
const indexFrom = 16

// newResources indexes and hashes resources. Shared resources keep their
// encoding, which is also what travels: one marshal per resource per
// generation, whatever the number of proxies that get it. A proxy's own
// are marshalled again when sent, once: kept, a thousand proxies' own
// listeners were 13 MB.
func newResources[T types.Resource](items []T, shared bool) *resources {
	r := &resources{entries: make([]entry, 0, len(items))}
	for _, it := range items {
		e := entry{name: cache.GetResourceName(it), version: "unmarshalable", res: it}
		if b, err := marshalDeterministic(it); err == nil {
			e.version = hashBytes(b)
			if shared {
				e.wire = wireResource(e, b)
			}
		}
		r.entries = append(r.entries, e)
	}
	r.reindex()
	return r
}

func marshalDeterministic(m proto.Message) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}

// wireResource is a resource as a delta response carries it.
func wireResource(e entry, b []byte) *discovery.Resource {
	w := &discovery.Resource{Name: e.name, Version: e.version}
	if b != nil {
		w.Resource = &anypb.Any{TypeUrl: resource.APITypePrefix + string(e.res.ProtoReflect().Descriptor().FullName()), Value: b}
	}
	return w
}

// toWire returns the entry as a delta response carries it.
func (e *entry) toWire() *discovery.Resource {
	if e.wire != nil {
		return e.wire
	}
	b, err := marshalDeterministic(e.res)
	if err != nil {
		b = nil // sent without a body: the proxy refuses it, naming it
	}
	return wireResource(*e, b)
}

func (r *resources) reindex() {
	if len(r.entries) < indexFrom {
		return
	}
	r.index = make(map[string]int32, len(r.entries))
	for i, e := range r.entries {
		r.index[e.name] = int32(i)
	}
}

// find returns the entry of a name.
func (r *resources) find(name string) (*entry, bool) {
	if r == nil {
		return nil, false
	}
	if r.index != nil {
		i, ok := r.index[name]
		if !ok {
			return nil, false
		}
		return &r.entries[i], true
	}
	for i := range r.entries {
		if r.entries[i].name == name {
			return &r.entries[i], true
		}
	}
	return nil, false
}

// cacheMaps returns the maps go-control-plane's cache reads.
func (r *resources) cacheMaps() (map[string]types.ResourceWithTTL, map[string]types.Resource, map[string]string) {
	m := &r.maps
	m.once.Do(func() {
		m.items = make(map[string]types.ResourceWithTTL, len(r.entries))
		m.plain = make(map[string]types.Resource, len(r.entries))
		m.versions = make(map[string]string, len(r.entries))
		for _, e := range r.entries {
			m.items[e.name] = types.ResourceWithTTL{Resource: e.res}
			m.plain[e.name] = e.res
			m.versions[e.name] = e.version
		}
	})
	return m.items, m.plain, m.versions
}

// typeView is what a proxy gets of one type: resources shared with the
// other proxies of its namespace and kind, and, for clusters, a few of its
// own (its app's). The two never share a name.
type typeView struct {
	version string // changes with the content
	base    *resources
	extra   *resources // nil when the proxy has none of its own
	// merged is base and extra as one set, made when go-control-plane's
	// cache first asks; the delta server reads the parts.
	merged *mergedView
}

type mergedView struct {
	once sync.Once
	r    *resources
}

var noResources = &resources{}

// emptyView is a type with no resources.
var emptyView = typeView{version: "empty", base: noResources}

// newTypeView is a view of resources, shared between proxies or a proxy's own.
func newTypeView[T types.Resource](items []T, shared bool) typeView {
	r := newResources(items, shared)
	return typeView{version: versionOf(r), base: r}
}

// plus returns the view with a proxy's own resources added; the shared
// part is not copied.
func (tv typeView) plus(extra *resources) typeView {
	// The version is made of the shared part's, not of every name again:
	// a thousand proxies would each sort a thousand names per change.
	return typeView{version: hashBytes([]byte(tv.version + "+" + versionOf(extra))), base: tv.base, extra: extra, merged: &mergedView{}}
}

// all returns the view's resources as one set.
func (tv typeView) all() *resources {
	if tv.base == nil {
		return noResources
	}
	if tv.extra == nil {
		return tv.base
	}
	tv.merged.once.Do(func() {
		m := &resources{entries: make([]entry, 0, len(tv.base.entries)+len(tv.extra.entries))}
		m.entries = append(append(m.entries, tv.base.entries...), tv.extra.entries...)
		m.reindex()
		tv.merged.r = m
	})
	return tv.merged.r
}

// lookup returns the version of a resource in the view.
func (tv typeView) lookup(name string) (string, bool) {
	if e, ok := tv.extra.find(name); ok {
		return e.version, true
	}
	if e, ok := tv.base.find(name); ok {
		return e.version, true
	}
	return "", false
}

// wire returns a resource of the view as a delta response carries it.
func (tv typeView) wire(name string) *discovery.Resource {
	if e, ok := tv.extra.find(name); ok {
		return e.toWire()
	}
	if e, ok := tv.base.find(name); ok {
		return e.toWire()
	}
	return nil
}

// each calls f with every resource's name and version.
func (tv typeView) each(f func(name, version string)) {
	for _, part := range []*resources{tv.base, tv.extra} {
		if part != nil {
			for _, e := range part.entries {
				f(e.name, e.version)
			}
		}
	}
}

// versionOf returns the version of a set of resources: a hash of every
// name and content hash, in name order.
func versionOf(r *resources) string {
	sorted := slices.Clone(r.entries)
	slices.SortFunc(sorted, func(a, b entry) int { return strings.Compare(a.name, b.name) })
	h := fnv.New64a()
	for _, e := range sorted {
		_, _ = h.Write([]byte(e.name))
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(e.version))
		_, _ = h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

func hashBytes(b []byte) string {
	h := fnv.New64a()
	_, _ = h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// snapshot is a proxy's resources per type. It implements the cache's
// ResourceSnapshot over shared typeViews: go-control-plane's own Snapshot
// rebuilds a map of every resource on each GetResources, which at 1,000
// proxies × 1,000 clusters was a fifth of the control plane's CPU.
type snapshot [types.UnknownType]typeView

var _ cache.ResourceSnapshot = (*snapshot)(nil)

func (s *snapshot) of(typeURL string) typeView {
	if i := cache.GetResponseType(typeURL); i < types.UnknownType {
		return s[i]
	}
	return typeView{}
}

// GetVersion returns the version of a type.
func (s *snapshot) GetVersion(typeURL string) string { return s.of(typeURL).version }

// GetResourcesAndTTL returns a type's resources.
func (s *snapshot) GetResourcesAndTTL(typeURL string) map[string]types.ResourceWithTTL {
	items, _, _ := s.of(typeURL).all().cacheMaps()
	return items
}

// GetResources returns a type's resources.
func (s *snapshot) GetResources(typeURL string) map[string]types.Resource {
	_, plain, _ := s.of(typeURL).all().cacheMaps()
	return plain
}

// ConstructVersionMap: the versions are computed with the views.
func (s *snapshot) ConstructVersionMap() error { return nil }

// GetVersionMap returns a type's resource versions.
func (s *snapshot) GetVersionMap(typeURL string) map[string]string {
	_, _, versions := s.of(typeURL).all().cacheMaps()
	return versions
}
