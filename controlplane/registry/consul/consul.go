// Package consul is the registry backed by a real Consul agent, through
// github.com/hashicorp/consul/api: instances are agent services with TTL
// checks; watches are blocking queries.
//
// Consul OSS has no namespaces. A mesh service <name> in namespace <ns> is
// the Consul service "<ns>_<name>" tagged "micromesh", with the parts also in
// its metadata (mesh_namespace, mesh_service). Mesh names are DNS labels,
// which never contain '_', so the mapping cannot collide.
//
// Splits, operator policies and external services live in Consul's KV
// store, one JSON value per service under micromesh/splits/<ns>/<name>,
// micromesh/policies/<ns>/<name> and micromesh/externals/<ns>/<name>,
// each prefix watched with a blocking query. (Consul's own
// service-splitter config entries split by subsets its service-resolver
// defines with filters, and need service-defaults that say the protocol;
// the mesh's versions are a label, so it keeps its splits itself rather
// than write entries other tools own.)
package consul

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/micromesh/micromesh/controlplane/registry"
)

// Tag marks Consul services that belong to the mesh.
const Tag = "micromesh"

// Metadata keys on Consul services.
const (
	metaNamespace = "mesh_namespace"
	metaService   = "mesh_service"
	metaProtocol  = "mesh_protocol"
	metaKind      = "mesh_kind"
	metaQUICPort  = "mesh_quic_port"
	metaVersion   = "mesh_version"
	metaRegion    = "mesh_region"
	metaZone      = "mesh_zone"
	metaTTL       = "mesh_ttl"
	metaUser      = "mesh_md_" // prefix of the instance's own metadata
)

// Name returns the Consul service name of mesh service name in namespace ns.
func Name(ns, name string) string { return ns + "_" + name }

// checkID is the ID of an instance's TTL check.
func checkID(id string) string { return "service:" + id }

// Registry is the Consul-backed registry.
type Registry struct {
	client          *api.Client
	addr            string
	log             *slog.Logger
	deregisterAfter time.Duration

	// state is whether Consul answered the watches' last queries.
	stateMu sync.Mutex
	state   registry.State
}

var (
	_ registry.Registry = (*Registry)(nil)
	_ registry.Stater   = (*Registry)(nil)
)

// State says where the registry is and whether Consul answered the
// watches' last queries (and since when it has not).
func (r *Registry) State() registry.State {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	s := r.state
	s.Backend, s.Address = "consul", r.addr
	return s
}

// setReachable records a watch's finding (one watch serves the control
// plane; others, if any, report the same agent).
func (r *Registry) setReachable(ok bool, err error) {
	r.stateMu.Lock()
	defer r.stateMu.Unlock()
	if ok {
		r.state.Unreachable, r.state.Since, r.state.Error = false, time.Time{}, ""
		return
	}
	if !r.state.Unreachable {
		r.state.Unreachable, r.state.Since = true, time.Now()
	}
	if err != nil {
		r.state.Error = err.Error()
	}
}

// Option configures New.
type Option func(*Registry)

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(r *Registry) { r.log = l } }

// WithDeregisterAfter sets how long Consul keeps a critical instance (at
// least a minute, Consul's floor).
func WithDeregisterAfter(d time.Duration) Option { return func(r *Registry) { r.deregisterAfter = d } }

// New connects to the Consul agent at addr (host:port or an http(s) URL)
// and checks that it answers.
func New(ctx context.Context, addr string, opts ...Option) (*Registry, error) {
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = addr
	if rest, ok := strings.CutPrefix(addr, "https://"); ok {
		cfg.Scheme, cfg.Address = "https", rest
	} else if rest, ok := strings.CutPrefix(addr, "http://"); ok {
		cfg.Scheme, cfg.Address = "http", rest
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul at %s: %w", addr, err)
	}
	r := &Registry{client: client, addr: addr, log: slog.New(slog.DiscardHandler), deregisterAfter: time.Minute}
	for _, o := range opts {
		o(r)
	}
	r.deregisterAfter = max(r.deregisterAfter, time.Minute)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := client.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("%w: the Consul agent at %s does not answer (%v): start one (`consul agent -dev`) or point --consul-addr / CONSUL_HTTP_ADDR at it",
			registry.ErrUnavailable, addr, err)
	}
	return r, nil
}

// Register adds or replaces an agent service for the instance.
func (r *Registry) Register(ctx context.Context, in registry.Instance) error {
	if err := in.Validate(); err != nil {
		return err
	}
	name := Name(in.Namespace, in.Service)
	q := (&api.QueryOptions{}).WithContext(ctx)
	if old, _, err := r.client.Agent().Service(in.ID, q); err == nil && old.Service != name {
		return fmt.Errorf("%w: %s is %s", registry.ErrConflict, in.ID, old.Service)
	} else if err != nil && !isNotFound(err) {
		return r.unavailable(err)
	}
	reg := &api.AgentServiceRegistration{
		ID:      in.ID,
		Name:    name,
		Tags:    []string{Tag},
		Address: in.Address,
		Port:    int(in.Port),
		Meta:    toMeta(in),
		Weights: &api.AgentWeights{Passing: int(in.Weight), Warning: 1},
	}
	if in.TTL > 0 {
		reg.Check = &api.AgentServiceCheck{
			CheckID:                        checkID(in.ID),
			Name:                           "micromesh heartbeat",
			TTL:                            in.TTL.String(),
			Status:                         api.HealthPassing,
			DeregisterCriticalServiceAfter: r.deregisterAfter.String(),
		}
	}
	opts := api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx)
	if err := r.client.Agent().ServiceRegisterOpts(reg, opts); err != nil {
		return r.unavailable(err)
	}
	return nil
}

// Deregister removes the instance's agent service.
func (r *Registry) Deregister(ctx context.Context, id string) error {
	q := (&api.QueryOptions{}).WithContext(ctx)
	if _, _, err := r.client.Agent().Service(id, q); isNotFound(err) {
		return fmt.Errorf("%w: no instance %q", registry.ErrNotFound, id)
	} else if err != nil {
		return r.unavailable(err)
	}
	if err := r.client.Agent().ServiceDeregisterOpts(id, q); err != nil {
		if isNotFound(err) {
			return fmt.Errorf("%w: no instance %q", registry.ErrNotFound, id)
		}
		return r.unavailable(err)
	}
	return nil
}

// Heartbeat passes the instance's TTL check.
func (r *Registry) Heartbeat(ctx context.Context, id string) error {
	err := r.client.Agent().UpdateTTLOpts(checkID(id), "", api.HealthPassing, (&api.QueryOptions{}).WithContext(ctx))
	if err == nil {
		return nil
	}
	if isNotFound(err) {
		// No check: either no such instance, or a static one.
		if _, _, serr := r.client.Agent().Service(id, (&api.QueryOptions{}).WithContext(ctx)); serr == nil {
			return nil
		}
		return fmt.Errorf("%w: no instance %q (register it again)", registry.ErrNotFound, id)
	}
	return r.unavailable(err)
}

func (r *Registry) unavailable(err error) error {
	return fmt.Errorf("%w: consul at %s: %v", registry.ErrUnavailable, r.addr, err)
}

func isNotFound(err error) bool {
	var se api.StatusError
	if errors.As(err, &se) {
		return se.Code == http.StatusNotFound
	}
	// Older agents answer unknown check IDs with a 500 whose body says so.
	return err != nil && (strings.Contains(err.Error(), "Unknown check") || strings.Contains(err.Error(), "unknown service"))
}

func toMeta(in registry.Instance) map[string]string {
	m := map[string]string{
		metaNamespace: in.Namespace,
		metaService:   in.Service,
		metaProtocol:  in.Protocol,
		metaKind:      in.Kind,
	}
	set := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	if in.QUICPort != 0 {
		m[metaQUICPort] = strconv.Itoa(int(in.QUICPort))
	}
	if in.TTL != 0 {
		m[metaTTL] = in.TTL.String()
	}
	set(metaVersion, in.Version)
	set(metaRegion, in.Region)
	set(metaZone, in.Zone)
	for k, v := range in.Metadata {
		m[metaUser+k] = v
	}
	return m
}

// fromEntry turns a health entry back into an instance; ok is false for
// entries that are not mesh instances.
func fromEntry(e *api.ServiceEntry) (registry.Instance, bool) {
	s := e.Service
	if s == nil || !slices.Contains(s.Tags, Tag) {
		return registry.Instance{}, false
	}
	meta := s.Meta
	in := registry.Instance{
		ID:        s.ID,
		Namespace: meta[metaNamespace],
		Service:   meta[metaService],
		Address:   s.Address,
		Port:      uint16(s.Port),
		Protocol:  meta[metaProtocol],
		Kind:      meta[metaKind],
		Version:   meta[metaVersion],
		Region:    meta[metaRegion],
		Zone:      meta[metaZone],
		Weight:    uint32(max(s.Weights.Passing, 1)),
	}
	if in.Address == "" && e.Node != nil {
		in.Address = e.Node.Address
	}
	if p, err := strconv.Atoi(meta[metaQUICPort]); err == nil {
		in.QUICPort = uint16(p)
	}
	if d, err := time.ParseDuration(meta[metaTTL]); err == nil {
		in.TTL = d
	}
	for k, v := range meta {
		if uk, ok := strings.CutPrefix(k, metaUser); ok {
			if in.Metadata == nil {
				in.Metadata = map[string]string{}
			}
			in.Metadata[uk] = v
		}
	}
	switch e.Checks.AggregatedStatus() {
	case api.HealthPassing:
		in.Health = registry.Passing
	case api.HealthWarning:
		in.Health = registry.Warning
	default: // critical, maintenance
		in.Health = registry.Critical
	}
	if in.Namespace == "" || in.Service == "" || Name(in.Namespace, in.Service) != s.Service {
		return registry.Instance{}, false
	}
	return in, true
}

// Watch streams snapshots built from blocking queries: one on the catalog's
// service list, one per mesh service on its health.
func (r *Registry) Watch(ctx context.Context) (<-chan registry.Snapshot, error) {
	w := &watch{r: r, out: make(chan registry.Snapshot, 1), services: map[string]*serviceWatch{}, changed: make(chan struct{}, 1)}
	w.conn.log, w.conn.reg = r.log, r
	// The first snapshot is complete before Watch returns.
	names, index, err := r.meshServices(ctx, 0)
	if err != nil {
		return nil, r.unavailable(err)
	}
	for _, name := range names {
		entries, idx, err := r.serviceHealth(ctx, name, 0)
		if err != nil {
			return nil, r.unavailable(err)
		}
		w.services[name] = &serviceWatch{instances: entries, index: idx}
	}
	if w.splits, w.splitsIndex, err = splitsKV.list(ctx, r, 0); err != nil {
		return nil, r.unavailable(err)
	}
	if w.policies, w.policiesIndex, err = policiesKV.list(ctx, r, 0); err != nil {
		return nil, r.unavailable(err)
	}
	if w.externals, w.externalsIndex, err = externalsKV.list(ctx, r, 0); err != nil {
		return nil, r.unavailable(err)
	}
	w.out <- w.snapshot()
	go w.run(ctx, index)
	return w.out, nil
}

type watch struct {
	r         *Registry
	conn      connState
	out       chan registry.Snapshot
	changed   chan struct{}
	mu        sync.Mutex
	services  map[string]*serviceWatch
	splits    []registry.Split
	policies  []registry.Policy
	externals []registry.External
	// The indexes where the first queries of the KV prefixes left off.
	splitsIndex, policiesIndex, externalsIndex uint64
	emitted                                    uint64
}

type serviceWatch struct {
	instances []registry.Instance
	index     uint64
	cancel    context.CancelFunc
}

// waitTime bounds one blocking query; Consul returns earlier on a change.
const waitTime = 5 * time.Minute

func (r *Registry) meshServices(ctx context.Context, index uint64) ([]string, uint64, error) {
	q := (&api.QueryOptions{WaitIndex: index, WaitTime: waitTime, AllowStale: true}).WithContext(ctx)
	all, meta, err := r.client.Catalog().Services(q)
	if err != nil {
		return nil, 0, err
	}
	var names []string
	for name, tags := range all {
		if slices.Contains(tags, Tag) && strings.Contains(name, "_") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names, meta.LastIndex, nil
}

func (r *Registry) serviceHealth(ctx context.Context, name string, index uint64) ([]registry.Instance, uint64, error) {
	q := (&api.QueryOptions{WaitIndex: index, WaitTime: waitTime, AllowStale: true}).WithContext(ctx)
	entries, meta, err := r.client.Health().Service(name, Tag, false, q)
	if err != nil {
		return nil, 0, err
	}
	var ins []registry.Instance
	for _, e := range entries {
		if in, ok := fromEntry(e); ok {
			ins = append(ins, in)
		}
	}
	return ins, meta.LastIndex, nil
}

// nextIndex applies Consul's rules for blocking-query indexes: reset when
// it goes backwards, never wait on 0.
func nextIndex(old, got uint64) uint64 {
	if got < old || got == 0 {
		return 0
	}
	return got
}

func (w *watch) run(ctx context.Context, index uint64) {
	defer close(w.out)
	var wg sync.WaitGroup
	defer wg.Wait()
	w.mu.Lock()
	for name, sw := range w.services {
		w.startService(ctx, &wg, name, sw)
	}
	w.mu.Unlock()
	wg.Add(4)
	go func() {
		defer wg.Done()
		w.emit(ctx)
	}()
	go func() {
		defer wg.Done()
		externalsKV.follow(ctx, w, w.externalsIndex, &w.externals)
	}()
	go func() {
		defer wg.Done()
		splitsKV.follow(ctx, w, w.splitsIndex, &w.splits)
	}()
	go func() {
		defer wg.Done()
		policiesKV.follow(ctx, w, w.policiesIndex, &w.policies)
	}()
	follow(ctx, &w.conn, index, w.r.meshServices, func(names []string, _ uint64) {
		w.mu.Lock()
		defer w.mu.Unlock()
		for name, sw := range w.services {
			if !slices.Contains(names, name) {
				sw.cancel()
				delete(w.services, name)
				w.signal()
			}
		}
		for _, name := range names {
			if _, ok := w.services[name]; !ok {
				sw := &serviceWatch{}
				w.services[name] = sw
				w.startService(ctx, &wg, name, sw)
			}
		}
	})
}

// startService runs the blocking health query of one service. Called with w.mu held.
func (w *watch) startService(ctx context.Context, wg *sync.WaitGroup, name string, sw *serviceWatch) {
	sctx, cancel := context.WithCancel(ctx)
	sw.cancel = cancel
	index := sw.index
	wg.Add(1)
	go func() {
		defer wg.Done()
		follow(sctx, &w.conn, index, func(ctx context.Context, index uint64) ([]registry.Instance, uint64, error) {
			ins, got, err := w.r.serviceHealth(ctx, name, index)
			w.r.log.Debug("consul service query returned", "service", name, "index", got, "waited_on", index, "instances", len(ins), "err", err)
			return ins, got, err
		}, func(ins []registry.Instance, index uint64) {
			w.mu.Lock()
			defer w.mu.Unlock()
			if cur, ok := w.services[name]; ok && cur == sw {
				sw.instances, sw.index = ins, index
				w.signal()
			}
		})
	}()
}

// follow runs a blocking query from index until ctx ends and hands apply
// each answer that moved the index: after a failure it backs off and
// starts over from index 0 (the agent may come back with its indexes reset
// — a restart —, and waiting on the old index would block for the wait
// time); a wait that timed out with no change is not an answer.
func follow[T any](ctx context.Context, conn *connState, index uint64, query func(context.Context, uint64) (T, uint64, error), apply func(T, uint64)) {
	b := backoff{conn: conn}
	for ctx.Err() == nil {
		v, got, err := query(ctx, index)
		if err != nil {
			if ctx.Err() == nil {
				b.fail(ctx, err)
			}
			index = 0
			continue
		}
		b.ok()
		if got == index && index != 0 {
			continue
		}
		index = nextIndex(index, got)
		apply(v, index)
	}
}

func (w *watch) signal() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *watch) snapshot() registry.Snapshot {
	var ins []registry.Instance
	for _, name := range slices.Sorted(maps.Keys(w.services)) {
		ins = append(ins, w.services[name].instances...)
	}
	registry.SortInstances(ins)
	w.emitted++
	return registry.Snapshot{Index: w.emitted, Instances: ins, Splits: w.splits, Policies: w.policies, Externals: w.externals}
}

// emit sends the latest snapshot after each change, replacing one the
// reader has not taken yet.
func (w *watch) emit(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.changed:
		}
		w.mu.Lock()
		s := w.snapshot()
		w.mu.Unlock()
		select {
		case <-w.out:
		default:
		}
		select {
		case w.out <- s:
		case <-ctx.Done():
			return
		}
	}
}

// connState tracks whether Consul answers, across all of a watch's
// queries, so that each change of state is logged once.
type connState struct {
	mu     sync.Mutex
	log    *slog.Logger
	reg    *Registry
	failed bool
}

func (c *connState) set(failed bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reg != nil {
		c.reg.setReachable(!failed, err)
	}
	if failed == c.failed {
		return
	}
	c.failed = failed
	if failed {
		c.log.Warn("consul unreachable; serving the last known state and retrying", "err", err)
	} else {
		c.log.Info("consul reachable again")
	}
}

// backoff waits between failed queries of one loop: 100 ms doubling to 5 s.
type backoff struct {
	conn  *connState
	delay time.Duration
}

func (b *backoff) fail(ctx context.Context, err error) {
	b.conn.set(true, err)
	b.delay = min(max(b.delay*2, 100*time.Millisecond), 5*time.Second)
	t := time.NewTimer(b.delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (b *backoff) ok() {
	if b.delay != 0 {
		b.conn.set(false, nil)
	}
	b.delay = 0
}
