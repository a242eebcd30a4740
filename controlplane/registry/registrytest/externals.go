package registrytest

import (
	"errors"
	"strings"
	"testing"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/internal/outsidetest"
)

// waitForExternals reads snapshots until ns's external services are want.
func waitForExternals(t *testing.T, ch <-chan registry.Snapshot, ns, what string, want []registry.External) {
	t.Helper()
	waitForKept(t, ch, ns, what, want, func(s registry.Snapshot) []registry.External { return s.Externals },
		func(a, b registry.External) bool { return a == b })
}

// External services are kept by name beside the instances: declared,
// replaced, removed, seen by watchers within a second, with defaults
// filled; removing one twice is ErrNotFound.
func testExternals(t *testing.T, r registry.Registry) {
	ns := namespace()
	ch, err := r.Watch(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	pay := registry.External{Namespace: ns, Name: "payments", Host: "API.Payments.Example."}
	if err := r.SetExternal(ctxT(t), pay); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.DeleteExternal(t.Context(), ns, "payments") })
	pay = registry.External{Namespace: ns, Name: "payments", Host: "api.payments.example", Port: 443, Protocol: registry.ProtocolHTTP}
	waitForExternals(t, ch, ns, "payments, host in lower case, port 443, HTTP", []registry.External{pay})

	ca := string(outsidetest.NewCA(t).PEM())
	pay.Port, pay.CA, pay.Protocol = 8443, ca, registry.ProtocolGRPC
	if err := r.SetExternal(ctxT(t), pay); err != nil {
		t.Fatal(err)
	}
	maps := registry.External{Namespace: ns, Name: "maps", Host: "maps.example", Port: 443, Protocol: registry.ProtocolHTTP}
	if err := r.SetExternal(ctxT(t), maps); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.DeleteExternal(t.Context(), ns, "maps") })
	waitForExternals(t, ch, ns, "both, payments replaced", []registry.External{maps, pay})

	if err := r.DeleteExternal(ctxT(t), ns, "payments"); err != nil {
		t.Fatal(err)
	}
	waitForExternals(t, ch, ns, "payments removed", []registry.External{maps})
	if err := r.DeleteExternal(ctxT(t), ns, "payments"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("removing an external service twice: %v, want ErrNotFound", err)
	}
}

func testInvalidExternals(t *testing.T, r registry.Registry) {
	ns := namespace()
	key := "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
	cases := map[string]struct {
		external registry.External
		mention  string
	}{
		"name":              {registry.External{Namespace: ns, Name: "Pay", Host: "a.example"}, "service name"},
		"namespace":         {registry.External{Namespace: "a_b", Name: "pay", Host: "a.example"}, "namespace"},
		"no host":           {registry.External{Namespace: ns, Name: "pay"}, "has no host"},
		"an IP address":     {registry.External{Namespace: ns, Name: "pay", Host: "192.0.2.1"}, "is an IP address"},
		"a URL":             {registry.External{Namespace: ns, Name: "pay", Host: "https://a.example"}, "is not a DNS name"},
		"a CA not PEM":      {registry.External{Namespace: ns, Name: "pay", Host: "a.example", CA: "roots"}, "no PEM certificate"},
		"a key in the CA":   {registry.External{Namespace: ns, Name: "pay", Host: "a.example", CA: key}, "only CERTIFICATE blocks"},
		"a protocol":        {registry.External{Namespace: ns, Name: "pay", Host: "a.example", Protocol: "tcp"}, `protocol "tcp" is not`},
		"a CA far too long": {registry.External{Namespace: ns, Name: "pay", Host: "a.example", CA: strings.Repeat("x", registry.MaxExternalCA+1)}, "the limit is"},
	}
	for name, c := range cases {
		if err := r.SetExternal(ctxT(t), c.external); !errors.Is(err, registry.ErrInvalid) || !strings.Contains(err.Error(), c.mention) {
			t.Errorf("%s: SetExternal = %v, want ErrInvalid mentioning %q", name, err, c.mention)
		}
	}
	s, err := registry.List(ctxT(t), r)
	if err != nil {
		t.Fatal(err)
	}
	if got := inNamespace(s.Externals, ns); len(got) != 0 {
		t.Errorf("invalid external services left %+v", got)
	}
	if err := r.DeleteExternal(ctxT(t), ns, "pay"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("removing an external service never declared: %v, want ErrNotFound", err)
	}
}
