package registrytest

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/micromesh/micromesh/controlplane/registry"
)

// waitForPolicies reads snapshots until ns's policies are want.
func waitForPolicies(t *testing.T, ch <-chan registry.Snapshot, ns, what string, want []registry.Policy) {
	t.Helper()
	waitForKept(t, ch, ns, what, want, func(s registry.Snapshot) []registry.Policy { return s.Policies },
		func(a, b registry.Policy) bool { return a.Service == b.Service && maps.Equal(a.Keys, b.Keys) })
}

// Operator policies are kept per service beside the instances: set,
// replaced, removed, seen by watchers within a second; removing one twice
// is ErrNotFound.
func testPolicies(t *testing.T, r registry.Registry) {
	ns := namespace()
	ch, err := r.Watch(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	chaos := registry.Policy{Namespace: ns, Service: "web", Keys: map[string]string{"fault_abort": "503", "/pkg.S/Slow:fault_delay": "2s"}}
	if err := r.SetPolicy(ctxT(t), chaos); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.DeletePolicy(context.Background(), ns, "web") })
	waitForPolicies(t, ch, ns, "web's policy", []registry.Policy{{Service: "web", Keys: chaos.Keys}})

	other := registry.Policy{Namespace: ns, Service: "api", Keys: map[string]string{"timeout": "2s"}}
	if err := r.SetPolicy(ctxT(t), other); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.DeletePolicy(context.Background(), ns, "api") })
	chaos.Keys = map[string]string{"fault_abort": "503", "fault_abort_percent": "10"}
	if err := r.SetPolicy(ctxT(t), chaos); err != nil {
		t.Fatal(err)
	}
	waitForPolicies(t, ch, ns, "both policies, web's replaced", []registry.Policy{{Service: "api", Keys: other.Keys}, {Service: "web", Keys: chaos.Keys}})

	if err := r.DeletePolicy(ctxT(t), ns, "web"); err != nil {
		t.Fatal(err)
	}
	waitForPolicies(t, ch, ns, "web's policy removed", []registry.Policy{{Service: "api", Keys: other.Keys}})
	if err := r.DeletePolicy(ctxT(t), ns, "web"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("removing a policy twice: %v, want ErrNotFound", err)
	}
}

func testInvalidPolicies(t *testing.T, r registry.Registry) {
	ns := namespace()
	cases := map[string]struct {
		policy  registry.Policy
		mention string
	}{
		"service name":     {registry.Policy{Namespace: ns, Service: "Web", Keys: map[string]string{"timeout": "1s"}}, "service name"},
		"namespace":        {registry.Policy{Namespace: "a_b", Service: "web", Keys: map[string]string{"timeout": "1s"}}, "namespace"},
		"no keys":          {registry.Policy{Namespace: ns, Service: "web"}, "sets no key"},
		"a key with a =":   {registry.Policy{Namespace: ns, Service: "web", Keys: map[string]string{"a=b": "1"}}, "is not a key"},
		"an empty value":   {registry.Policy{Namespace: ns, Service: "web", Keys: map[string]string{"timeout": ""}}, "is empty"},
		"a value too long": {registry.Policy{Namespace: ns, Service: "web", Keys: map[string]string{"timeout": strings.Repeat("1", 65)}}, "longer than 64 bytes"},
		"too many keys":    {registry.Policy{Namespace: ns, Service: "web", Keys: manyKeys(registry.MaxPolicyKeys + 1)}, "the limit is 64"},
	}
	for name, c := range cases {
		if err := r.SetPolicy(ctxT(t), c.policy); !errors.Is(err, registry.ErrInvalid) || !strings.Contains(err.Error(), c.mention) {
			t.Errorf("%s: SetPolicy = %v, want ErrInvalid mentioning %q", name, err, c.mention)
		}
	}
	s, err := registry.List(ctxT(t), r)
	if err != nil {
		t.Fatal(err)
	}
	if got := inNamespace(s.Policies, ns); len(got) != 0 {
		t.Errorf("invalid policies left %+v", got)
	}
	if err := r.DeletePolicy(ctxT(t), ns, "web"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("removing a policy never set: %v, want ErrNotFound", err)
	}
}
