// Package embedded is the zero-setup registry: in-process, persisted in
// bbolt, with TTL health like Consul's (critical when a heartbeat is late,
// removed after a grace period).
package embedded

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/micromesh/micromesh/controlplane/registry"
)

// DefaultDeregisterAfter is how long an instance may stay critical before it
// is removed (Consul's DeregisterCriticalServiceAfter).
const DefaultDeregisterAfter = time.Minute

var (
	instancesBucket = []byte("instances")
	metaBucket      = []byte("meta")
	indexKey        = []byte("index")
)

// record is what is stored per instance.
type record struct {
	Instance registry.Instance `json:"instance"`
	// CriticalSince is set while the instance is critical.
	CriticalSince time.Time `json:"critical_since,omitempty"`
}

// Registry is the embedded registry.
type Registry struct {
	db              *bolt.DB
	log             *slog.Logger
	deregisterAfter time.Duration

	mu        sync.Mutex
	index     uint64
	records   map[string]*record
	splits    *kept[registry.Split]
	policies  *kept[registry.Policy]
	externals *kept[registry.External]
	deadline  map[string]time.Time // next heartbeat due, per TTL instance (memory only)
	subs      map[chan registry.Snapshot]struct{}
	wake      chan struct{} // reschedules the sweeper
	publish   chan struct{} // a change awaits publishing

	stop    chan struct{}
	done    chan struct{}
	pubDone chan struct{}
}

// State says where the registry keeps its instances: it always answers.
func (r *Registry) State() registry.State {
	return registry.State{Backend: "embedded", Address: r.db.Path()}
}

var _ registry.Registry = (*Registry)(nil)

// Option configures Open.
type Option func(*Registry)

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(r *Registry) { r.log = l } }

// WithDeregisterAfter sets how long a critical instance is kept.
func WithDeregisterAfter(d time.Duration) Option { return func(r *Registry) { r.deregisterAfter = d } }

// Open opens (or creates) the registry in dir. Instances registered before a
// restart are kept; those with a TTL get one TTL from now to heartbeat again.
func Open(dir string, opts ...Option) (*Registry, error) {
	r := &Registry{
		log:             slog.New(slog.DiscardHandler),
		deregisterAfter: DefaultDeregisterAfter,
		records:         map[string]*record{},
		splits:          newKept[registry.Split]("splits", "split"),
		policies:        newKept[registry.Policy]("policies", "policy"),
		externals:       newKept[registry.External]("externals", "external service"),
		deadline:        map[string]time.Time{},
		subs:            map[chan registry.Snapshot]struct{}{},
		wake:            make(chan struct{}, 1),
		publish:         make(chan struct{}, 1),
		stop:            make(chan struct{}),
		done:            make(chan struct{}),
		pubDone:         make(chan struct{}),
	}
	for _, o := range opts {
		o(r)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	path := filepath.Join(dir, "registry.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("registry: %s is held by another process (a running `meshctl server`?)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("registry: open %s: %w", path, err)
	}
	r.db = db
	now := time.Now()
	err = db.Update(func(tx *bolt.Tx) error {
		ib, err := tx.CreateBucketIfNotExists(instancesBucket)
		if err != nil {
			return err
		}
		mb, err := tx.CreateBucketIfNotExists(metaBucket)
		if err != nil {
			return err
		}
		if v := mb.Get(indexKey); len(v) == 8 {
			r.index = binary.BigEndian.Uint64(v)
		}
		if err := r.splits.load(tx); err != nil {
			return err
		}
		if err := r.policies.load(tx); err != nil {
			return err
		}
		if err := r.externals.load(tx); err != nil {
			return err
		}
		return ib.ForEach(func(k, v []byte) error {
			var rec record
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("instance %s: %w", k, err)
			}
			r.records[string(k)] = &rec
			if rec.Instance.TTL > 0 && rec.CriticalSince.IsZero() {
				r.deadline[string(k)] = now.Add(rec.Instance.TTL)
			}
			return nil
		})
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("registry: load %s: %w", path, err)
	}
	go r.sweep()
	go r.publisher()
	return r, nil
}

// Close stops the sweeper and closes the database. Watches end.
func (r *Registry) Close() error {
	close(r.stop)
	<-r.done
	<-r.pubDone
	r.mu.Lock()
	for ch := range r.subs {
		close(ch)
		delete(r.subs, ch)
	}
	r.mu.Unlock()
	return r.db.Close()
}

// Register adds or replaces an instance.
func (r *Registry) Register(_ context.Context, in registry.Instance) error {
	if err := in.Validate(); err != nil {
		return err
	}
	in.Health = registry.Passing
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.records[in.ID]; ok && (old.Instance.Service != in.Service || old.Instance.Namespace != in.Namespace) {
		return fmt.Errorf("%w: %s is %s.%s", registry.ErrConflict, in.ID, old.Instance.Service, old.Instance.Namespace)
	}
	rec := &record{Instance: in}
	if err := r.commit(map[string]*record{in.ID: rec}); err != nil {
		return err
	}
	if in.TTL > 0 {
		r.deadline[in.ID] = time.Now().Add(in.TTL)
	} else {
		delete(r.deadline, in.ID)
	}
	r.kick()
	return nil
}

// Deregister removes an instance.
func (r *Registry) Deregister(_ context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.records[id]; !ok {
		return fmt.Errorf("%w: no instance %q", registry.ErrNotFound, id)
	}
	if err := r.commit(map[string]*record{id: nil}); err != nil {
		return err
	}
	delete(r.deadline, id)
	return nil
}

// Heartbeat renews an instance's TTL, turning it passing if it was critical.
func (r *Registry) Heartbeat(_ context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.records[id]
	if !ok {
		return fmt.Errorf("%w: no instance %q (register it again)", registry.ErrNotFound, id)
	}
	if rec.Instance.TTL == 0 {
		return nil // static: nothing to renew
	}
	r.deadline[id] = time.Now().Add(rec.Instance.TTL)
	if rec.Instance.Health != registry.Passing {
		next := *rec
		next.Instance.Health = registry.Passing
		next.CriticalSince = time.Time{}
		if err := r.commit(map[string]*record{id: &next}); err != nil {
			return err
		}
	}
	r.kick()
	return nil
}

// Watch streams snapshots.
func (r *Registry) Watch(ctx context.Context) (<-chan registry.Snapshot, error) {
	ch := make(chan registry.Snapshot, 1)
	r.mu.Lock()
	select {
	case <-r.stop:
		r.mu.Unlock()
		return nil, fmt.Errorf("%w: closed", registry.ErrUnavailable)
	default:
	}
	r.subs[ch] = struct{}{}
	ch <- r.snapshotLocked()
	r.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-r.stop:
		}
		r.mu.Lock()
		if _, ok := r.subs[ch]; ok {
			delete(r.subs, ch)
			close(ch)
		}
		r.mu.Unlock()
	}()
	return ch, nil
}

// commit writes changes (nil deletes) and the next index in one
// transaction, then applies them in memory and notifies watchers.
// Called with r.mu held.
func (r *Registry) commit(changes map[string]*record) error {
	return r.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(instancesBucket)
		for id, rec := range changes {
			if rec == nil {
				if err := b.Delete([]byte(id)); err != nil {
					return err
				}
				continue
			}
			data, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(id), data); err != nil {
				return err
			}
		}
		return nil
	}, func() {
		for id, rec := range changes {
			if rec == nil {
				delete(r.records, id)
			} else {
				r.records[id] = rec
			}
		}
	})
}

// update runs write and the next index in one transaction, then apply
// (the change in memory) and notifies watchers. Called with r.mu held.
func (r *Registry) update(write func(*bolt.Tx) error, apply func()) error {
	next := r.index + 1
	err := r.db.Update(func(tx *bolt.Tx) error {
		if err := write(tx); err != nil {
			return err
		}
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], next)
		return tx.Bucket(metaBucket).Put(indexKey, v[:])
	})
	if err != nil {
		return fmt.Errorf("%w: write: %v", registry.ErrUnavailable, err)
	}
	r.index = next
	apply()
	select {
	case r.publish <- struct{}{}:
	default:
	}
	return nil
}

func (r *Registry) snapshotLocked() registry.Snapshot {
	ins := make([]registry.Instance, 0, len(r.records))
	for _, rec := range r.records {
		in := rec.Instance
		in.Metadata = maps.Clone(in.Metadata)
		ins = append(ins, in)
	}
	registry.SortInstances(ins)
	return registry.Snapshot{Index: r.index, Instances: ins, Splits: r.splits.list(cloneSplit), Policies: r.policies.list(clonePolicy),
		Externals: r.externals.list(func(e registry.External) registry.External { return e })}
}

// publisher hands watchers the latest snapshot after changes. A burst of
// changes (10,000 registrations) costs a few snapshots, not one each: while
// one is built and sent, further changes coalesce into the next.
func (r *Registry) publisher() {
	defer close(r.pubDone)
	for {
		select {
		case <-r.stop:
			return
		case <-r.publish:
		}
		r.mu.Lock()
		r.publishLocked()
		r.mu.Unlock()
	}
}

// publishLocked hands the latest snapshot to every watcher, replacing one it
// has not read yet.
func (r *Registry) publishLocked() {
	if len(r.subs) == 0 {
		return
	}
	s := r.snapshotLocked()
	for ch := range r.subs {
		select {
		case <-ch:
		default:
		}
		ch <- s
	}
}

func (r *Registry) kick() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// sweep turns instances critical when their heartbeat is late and removes
// them after deregisterAfter, waking exactly when the next one is due.
func (r *Registry) sweep() {
	defer close(r.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := r.sweepOnce(time.Now())
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), 0)
		}
		timer.Reset(wait)
		select {
		case <-r.stop:
			return
		case <-r.wake:
		case <-timer.C:
		}
	}
}

// sweepOnce applies due health changes and returns when the next one is due.
func (r *Registry) sweepOnce(now time.Time) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	changes := map[string]*record{}
	var next time.Time
	soonest := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for _, id := range slices.Sorted(maps.Keys(r.records)) {
		rec := r.records[id]
		if rec.Instance.TTL == 0 {
			continue
		}
		if rec.CriticalSince.IsZero() {
			due := r.deadline[id]
			if now.Before(due) {
				soonest(due)
				continue
			}
			c := *rec
			c.Instance.Health = registry.Critical
			c.CriticalSince = now
			changes[id] = &c
			delete(r.deadline, id)
			r.log.Info("instance missed its heartbeat: critical", "id", id, "service", rec.Instance.Service, "namespace", rec.Instance.Namespace)
			soonest(now.Add(r.deregisterAfter))
			continue
		}
		if gone := rec.CriticalSince.Add(r.deregisterAfter); now.Before(gone) {
			soonest(gone)
			continue
		}
		changes[id] = nil
		r.log.Info("removed instance critical for too long", "id", id, "after", r.deregisterAfter)
	}
	if len(changes) > 0 {
		if err := r.commit(changes); err != nil {
			r.log.Error("apply health changes", "err", err)
			return now.Add(time.Second)
		}
	}
	return next
}
