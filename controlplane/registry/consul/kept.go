package consul

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/hashicorp/consul/api"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/identity"
)

// Prefixes of the KV keys under which the registry keeps, per service, a
// split and an operator policy, and the external services by name.
const (
	SplitsPrefix    = "micromesh/splits/"
	PoliciesPrefix  = "micromesh/policies/"
	ExternalsPrefix = "micromesh/externals/"
)

// kvKind is one kind of it in the KV store: one JSON value per service
// under prefix + "<ns>/<name>".
type kvKind[T registry.PerService] struct {
	prefix   string
	what     string // "split", "policy", "external service": for messages
	validate func(*T) error
	equal    func(a, b T) bool
}

var (
	splitsKV = kvKind[registry.Split]{prefix: SplitsPrefix, what: "split", validate: (*registry.Split).Validate,
		equal: func(a, b registry.Split) bool { return registry.SameSplit(&a, &b) }}
	policiesKV = kvKind[registry.Policy]{prefix: PoliciesPrefix, what: "policy", validate: (*registry.Policy).Validate,
		equal: func(a, b registry.Policy) bool {
			return a.Namespace == b.Namespace && a.Service == b.Service && maps.Equal(a.Keys, b.Keys)
		}}
	externalsKV = kvKind[registry.External]{prefix: ExternalsPrefix, what: "external service", validate: (*registry.External).Validate,
		equal: func(a, b registry.External) bool { return a == b }}
)

func (k kvKind[T]) key(ns, service string) string { return k.prefix + ns + "/" + service }

// set writes x, checked, for its service.
func (k kvKind[T]) set(ctx context.Context, r *Registry, x T) error {
	if err := k.validate(&x); err != nil {
		return err
	}
	data, err := json.Marshal(x)
	if err != nil {
		return err
	}
	if _, err := r.client.KV().Put(&api.KVPair{Key: k.key(x.ServiceOf()), Value: data}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return r.unavailable(err)
	}
	return nil
}

// remove deletes a service's value; ErrNotFound if it has none.
func (k kvKind[T]) remove(ctx context.Context, r *Registry, ns, service string) error {
	if ns == "" {
		ns = identity.DefaultNamespace
	}
	key := k.key(ns, service)
	pair, _, err := r.client.KV().Get(key, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return r.unavailable(err)
	}
	if pair == nil {
		return fmt.Errorf("%w: %s.%s has no %s", registry.ErrNotFound, service, ns, k.what)
	}
	// Only the value read: one set again meanwhile stays.
	ok, _, err := r.client.KV().DeleteCAS(&api.KVPair{Key: key, ModifyIndex: pair.ModifyIndex}, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return r.unavailable(err)
	}
	if !ok {
		return fmt.Errorf("%w: the %s of %s.%s changed while it was being removed; try again", registry.ErrUnavailable, k.what, service, ns)
	}
	return nil
}

// list reads every value, waiting for a change past index. Values that
// are not valid (written by hand) are logged and skipped.
func (k kvKind[T]) list(ctx context.Context, r *Registry, index uint64) ([]T, uint64, error) {
	q := (&api.QueryOptions{WaitIndex: index, WaitTime: waitTime, AllowStale: true}).WithContext(ctx)
	pairs, meta, err := r.client.KV().List(k.prefix, q)
	if err != nil {
		return nil, 0, err
	}
	var out []T
	for _, p := range pairs {
		var x T
		if err := json.Unmarshal(p.Value, &x); err != nil {
			r.log.Warn("skipping a "+k.what+" that is not JSON", "key", p.Key, "err", err)
			continue
		}
		if err := k.validate(&x); err != nil || p.Key != k.key(x.ServiceOf()) {
			r.log.Warn("skipping an invalid "+k.what, "key", p.Key, "err", err)
			continue
		}
		out = append(out, x)
	}
	registry.SortByService(out)
	return out, meta.LastIndex, nil
}

// follow keeps *dst, under w.mu, to the values past index.
func (k kvKind[T]) follow(ctx context.Context, w *watch, index uint64, dst *[]T) {
	follow(ctx, &w.conn, index, func(ctx context.Context, index uint64) ([]T, uint64, error) {
		return k.list(ctx, w.r, index)
	}, func(vs []T, _ uint64) {
		w.mu.Lock()
		defer w.mu.Unlock()
		if !slices.EqualFunc(*dst, vs, k.equal) {
			*dst = vs
			w.signal()
		}
	})
}

// SetSplit writes the service's split to the KV store.
func (r *Registry) SetSplit(ctx context.Context, sp registry.Split) error {
	return splitsKV.set(ctx, r, sp)
}

// SetSplitIf writes the service's split while the KV store still holds
// prev: a check-and-set on the value's modify index.
func (r *Registry) SetSplitIf(ctx context.Context, sp registry.Split, prev *registry.Split) error {
	if err := sp.Validate(); err != nil {
		return err
	}
	data, err := json.Marshal(sp)
	if err != nil {
		return err
	}
	key := splitsKV.key(sp.ServiceOf())
	pair, _, err := r.client.KV().Get(key, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return r.unavailable(err)
	}
	changed := fmt.Errorf("%w: the split of %s.%s", registry.ErrChanged, sp.Service, sp.Namespace)
	var cur *registry.Split
	index := uint64(0) // CAS with 0: only if there is none
	if pair != nil {
		var x registry.Split
		if err := json.Unmarshal(pair.Value, &x); err != nil {
			return changed
		}
		cur, index = &x, pair.ModifyIndex
	}
	if !registry.SameSplit(cur, prev) {
		return changed
	}
	ok, _, err := r.client.KV().CAS(&api.KVPair{Key: key, Value: data, ModifyIndex: index}, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return r.unavailable(err)
	}
	if !ok {
		return changed
	}
	return nil
}

// DeleteSplit removes the service's split from the KV store.
func (r *Registry) DeleteSplit(ctx context.Context, ns, service string) error {
	return splitsKV.remove(ctx, r, ns, service)
}

// SetPolicy writes the service's operator policy to the KV store.
func (r *Registry) SetPolicy(ctx context.Context, p registry.Policy) error {
	return policiesKV.set(ctx, r, p)
}

// DeletePolicy removes the service's operator policy from the KV store.
func (r *Registry) DeletePolicy(ctx context.Context, ns, service string) error {
	return policiesKV.remove(ctx, r, ns, service)
}

// SetExternal writes an external service to the KV store.
func (r *Registry) SetExternal(ctx context.Context, e registry.External) error {
	return externalsKV.set(ctx, r, e)
}

// DeleteExternal removes an external service from the KV store.
func (r *Registry) DeleteExternal(ctx context.Context, ns, name string) error {
	return externalsKV.remove(ctx, r, ns, name)
}
