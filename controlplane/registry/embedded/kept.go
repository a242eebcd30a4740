package embedded

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/identity"
)

// kept holds one kind of it — splits, operator policies, externals — in memory by
// "namespace/service" and in its own bucket.
type kept[T registry.PerService] struct {
	bucket []byte
	what   string // "split", "policy": for messages
	m      map[string]T
}

func newKept[T registry.PerService](bucket, what string) *kept[T] {
	return &kept[T]{bucket: []byte(bucket), what: what, m: map[string]T{}}
}

func keptKey(ns, service string) string { return ns + "/" + service }

// load reads the bucket (creating it) into memory.
func (k *kept[T]) load(tx *bolt.Tx) error {
	b, err := tx.CreateBucketIfNotExists(k.bucket)
	if err != nil {
		return err
	}
	return b.ForEach(func(key, v []byte) error {
		var x T
		if err := json.Unmarshal(v, &x); err != nil {
			return fmt.Errorf("%s %s: %w", k.what, key, err)
		}
		k.m[string(key)] = x
		return nil
	})
}

// list returns what is kept, in snapshot order, each copied by clone.
func (k *kept[T]) list(clone func(T) T) []T {
	var out []T
	for _, x := range k.m {
		out = append(out, clone(x))
	}
	registry.SortByService(out)
	return out
}

// setKept sets or replaces x (checked by validate) for its service.
func setKept[T registry.PerService](r *Registry, k *kept[T], x T, validate func(*T) error) error {
	if err := validate(&x); err != nil {
		return err
	}
	data, err := json.Marshal(x)
	if err != nil {
		return err
	}
	key := keptKey(x.ServiceOf())
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.update(func(tx *bolt.Tx) error {
		return tx.Bucket(k.bucket).Put([]byte(key), data)
	}, func() { k.m[key] = x })
}

// deleteKept removes what k keeps for a service; ErrNotFound if nothing.
func deleteKept[T registry.PerService](r *Registry, k *kept[T], ns, service string) error {
	if ns == "" {
		ns = identity.DefaultNamespace
	}
	key := keptKey(ns, service)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := k.m[key]; !ok {
		return fmt.Errorf("%w: %s.%s has no %s", registry.ErrNotFound, service, ns, k.what)
	}
	return r.update(func(tx *bolt.Tx) error {
		return tx.Bucket(k.bucket).Delete([]byte(key))
	}, func() { delete(k.m, key) })
}

// SetSplit sets or replaces a service's split.
func (r *Registry) SetSplit(_ context.Context, sp registry.Split) error {
	return setKept(r, r.splits, sp, (*registry.Split).Validate)
}

// SetSplitIf sets a service's split while it is still prev.
func (r *Registry) SetSplitIf(_ context.Context, sp registry.Split, prev *registry.Split) error {
	if err := sp.Validate(); err != nil {
		return err
	}
	data, err := json.Marshal(sp)
	if err != nil {
		return err
	}
	key := keptKey(sp.ServiceOf())
	r.mu.Lock()
	defer r.mu.Unlock()
	var cur *registry.Split
	if x, ok := r.splits.m[key]; ok {
		cur = &x
	}
	if !registry.SameSplit(cur, prev) {
		return fmt.Errorf("%w: the split of %s.%s", registry.ErrChanged, sp.Service, sp.Namespace)
	}
	return r.update(func(tx *bolt.Tx) error {
		return tx.Bucket(r.splits.bucket).Put([]byte(key), data)
	}, func() { r.splits.m[key] = sp })
}

// DeleteSplit removes a service's split.
func (r *Registry) DeleteSplit(_ context.Context, ns, service string) error {
	return deleteKept(r, r.splits, ns, service)
}

// SetPolicy sets or replaces a service's operator policy.
func (r *Registry) SetPolicy(_ context.Context, p registry.Policy) error {
	return setKept(r, r.policies, p, (*registry.Policy).Validate)
}

// DeletePolicy removes a service's operator policy.
func (r *Registry) DeletePolicy(_ context.Context, ns, service string) error {
	return deleteKept(r, r.policies, ns, service)
}

// SetExternal declares or replaces a service outside the mesh.
func (r *Registry) SetExternal(_ context.Context, e registry.External) error {
	return setKept(r, r.externals, e, (*registry.External).Validate)
}

// DeleteExternal removes an external service.
func (r *Registry) DeleteExternal(_ context.Context, ns, name string) error {
	return deleteKept(r, r.externals, ns, name)
}

func cloneSplit(sp registry.Split) registry.Split {
	sp.Versions = slices.Clone(sp.Versions)
	if sp.Rollout != nil {
		r := *sp.Rollout
		r.Steps = slices.Clone(r.Steps)
		sp.Rollout = &r
	}
	return sp
}

func clonePolicy(p registry.Policy) registry.Policy {
	p.Keys = maps.Clone(p.Keys)
	return p
}
