package embedded

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/controlplane/registry/registrytest"
)

func open(t *testing.T, dir string, opts ...Option) *Registry {
	t.Helper()
	r, err := Open(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func TestSuite(t *testing.T) {
	registrytest.Run(t, func(t *testing.T) registry.Registry { return open(t, t.TempDir()) })
}

func TestSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, in := range []registry.Instance{
		{ID: "web-1", Service: "web", Address: "127.0.0.1", Port: 8443, TTL: time.Minute},
		{ID: "db-1", Service: "db", Address: "127.0.0.1", Port: 5432},
	} {
		if err := r.Register(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	split := registry.Split{Service: "web", Versions: []registry.VersionWeight{{Version: "v1", Weight: 75}, {Version: "v2", Weight: 25}}}
	if err := r.SetSplit(ctx, split); err != nil {
		t.Fatal(err)
	}
	if err := r.SetPolicy(ctx, registry.Policy{Service: "web", Keys: map[string]string{"fault_abort": "503"}}); err != nil {
		t.Fatal(err)
	}
	before, _ := registry.List(ctx, r)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	r2 := open(t, dir)
	after, err := registry.List(ctx, r2)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Instances) != 2 || after.Index != before.Index {
		t.Fatalf("after restart: index %d → %d, instances %+v", before.Index, after.Index, after.Instances)
	}
	for _, in := range after.Instances {
		if in.Health != registry.Passing {
			t.Errorf("%s is %s after restart", in.ID, in.Health)
		}
	}
	if len(after.Splits) != 1 || !reflect.DeepEqual(after.Splits[0], before.Splits[0]) || after.Splits[0].Namespace != "default" {
		t.Errorf("splits after restart: %+v, want %+v", after.Splits, before.Splits)
	}
	if len(after.Policies) != 1 || !reflect.DeepEqual(after.Policies[0], before.Policies[0]) || after.Policies[0].Namespace != "default" {
		t.Errorf("policies after restart: %+v, want %+v", after.Policies, before.Policies)
	}
}

func TestCriticalInstancesAreRemoved(t *testing.T) {
	r := open(t, t.TempDir(), WithDeregisterAfter(300*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ch, err := r.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Register(ctx, registry.Instance{ID: "web-1", Service: "web", Address: "127.0.0.1", Port: 8443, TTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	var sawCritical bool
	for s := range ch {
		switch {
		case len(s.Instances) == 1 && s.Instances[0].Health == registry.Critical:
			sawCritical = true
		case len(s.Instances) == 0 && sawCritical:
			return
		}
	}
	t.Fatal("watch ended before the critical instance was removed")
}
