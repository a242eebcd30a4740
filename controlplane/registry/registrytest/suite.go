// Package registrytest is the behavioural suite every registry backend
// passes: run it from the backend's tests with a function that opens one.
package registrytest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/micromesh/micromesh/controlplane/registry"
)

// Within is how soon a watch must report a change.
const Within = time.Second

var nsCounter atomic.Int64

// Run runs the suite. open returns a registry; several tests may share one
// backend, so each test works in a namespace of its own.
func Run(t *testing.T, open func(t *testing.T) registry.Registry) {
	t.Run("RegisterAndList", func(t *testing.T) { testRegisterAndList(t, open(t)) })
	t.Run("InvalidRegistrations", func(t *testing.T) { testInvalid(t, open(t)) })
	t.Run("DuplicateIDOfAnotherService", func(t *testing.T) { testConflict(t, open(t)) })
	t.Run("ReRegisterReplaces", func(t *testing.T) { testReRegister(t, open(t)) })
	t.Run("DeregisterAndUnknownIDs", func(t *testing.T) { testDeregister(t, open(t)) })
	t.Run("WatchSeesChangesWithinOneSecond", func(t *testing.T) { testWatch(t, open(t)) })
	t.Run("NamespacesAreSeparate", func(t *testing.T) { testNamespaces(t, open(t)) })
	t.Run("Splits", func(t *testing.T) { testSplits(t, open(t)) })
	t.Run("InvalidSplits", func(t *testing.T) { testInvalidSplits(t, open(t)) })
	t.Run("Policies", func(t *testing.T) { testPolicies(t, open(t)) })
	t.Run("InvalidPolicies", func(t *testing.T) { testInvalidPolicies(t, open(t)) })
	t.Run("Externals", func(t *testing.T) { testExternals(t, open(t)) })
	t.Run("InvalidExternals", func(t *testing.T) { testInvalidExternals(t, open(t)) })
}

// namespace returns a namespace no other test uses.
func namespace() string { return fmt.Sprintf("t%d-%d", time.Now().UnixNano()%100000, nsCounter.Add(1)) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// instance returns a valid instance in ns.
func instance(ns, svc, id string, port uint16) registry.Instance {
	return registry.Instance{ID: id, Service: svc, Namespace: ns, Address: "127.0.0.1", Port: port}
}

// in returns the instances of snapshot s in namespace ns.
func in(s registry.Snapshot, ns string) []registry.Instance {
	var out []registry.Instance
	for _, i := range s.Instances {
		if i.Namespace == ns {
			out = append(out, i)
		}
	}
	return out
}

func list(t *testing.T, r registry.Registry, ns string) []registry.Instance {
	t.Helper()
	s, err := registry.List(ctxT(t), r)
	if err != nil {
		t.Fatal(err)
	}
	return in(s, ns)
}

func register(t *testing.T, r registry.Registry, inst registry.Instance) {
	t.Helper()
	if err := r.Register(ctxT(t), inst); err != nil {
		t.Fatalf("Register(%s): %v", inst.ID, err)
	}
	t.Cleanup(func() { _ = r.Deregister(context.Background(), inst.ID) })
}

func testRegisterAndList(t *testing.T, r registry.Registry) {
	ns := namespace()
	full := registry.Instance{
		ID: ns + "-web-1", Service: "web", Namespace: ns, Address: "10.0.0.7", Port: 8443, QUICPort: 8443,
		Protocol: registry.ProtocolHTTP, Kind: registry.KindBuiltin, Version: "v2", Region: "eu", Zone: "eu-1a",
		Weight: 3, Metadata: map[string]string{"team": "blue"}, TTL: 30 * time.Second,
	}
	register(t, r, full)
	register(t, r, instance(ns, "api", ns+"-api-1", 9000))

	got := list(t, r, ns)
	if len(got) != 2 {
		t.Fatalf("listed %d instances, want 2: %+v", len(got), got)
	}
	if got[0].Service != "api" || got[1].Service != "web" {
		t.Errorf("not sorted by service: %s, %s", got[0].Service, got[1].Service)
	}
	want := full
	want.Health = registry.Passing
	if g := got[1]; g.ID != want.ID || g.Address != want.Address || g.Port != want.Port || g.QUICPort != want.QUICPort ||
		g.Protocol != want.Protocol || g.Kind != want.Kind || g.Version != want.Version || g.Region != want.Region ||
		g.Zone != want.Zone || g.Weight != want.Weight || g.Metadata["team"] != "blue" || g.TTL != want.TTL || g.Health != registry.Passing {
		t.Errorf("round trip:\n got %+v\nwant %+v", g, want)
	}
	if d := got[0]; d.Protocol != registry.ProtocolGRPC || d.Kind != registry.KindBuiltin || d.Weight != 1 || d.Health != registry.Passing {
		t.Errorf("defaults not applied: %+v", d)
	}
}

func testInvalid(t *testing.T, r registry.Registry) {
	ns := namespace()
	ok := instance(ns, "web", ns+"-ok", 8443)
	mod := func(f func(*registry.Instance)) registry.Instance { i := ok; f(&i); return i }
	cases := map[string]registry.Instance{
		"empty ID":         mod(func(i *registry.Instance) { i.ID = "" }),
		"ID with a slash":  mod(func(i *registry.Instance) { i.ID = "a/b" }),
		"long ID":          mod(func(i *registry.Instance) { i.ID = strings.Repeat("a", 129) }),
		"service name":     mod(func(i *registry.Instance) { i.Service = "Web_1" }),
		"namespace":        mod(func(i *registry.Instance) { i.Namespace = "-x" }),
		"no address":       mod(func(i *registry.Instance) { i.Address = "" }),
		"bad address":      mod(func(i *registry.Instance) { i.Address = "not an address!" }),
		"port 0":           mod(func(i *registry.Instance) { i.Port = 0 }),
		"protocol":         mod(func(i *registry.Instance) { i.Protocol = "ftp" }),
		"tcp, proxyless":   mod(func(i *registry.Instance) { i.Protocol = registry.ProtocolTCP; i.Kind = registry.KindProxyless }),
		"kind":             mod(func(i *registry.Instance) { i.Kind = "nginx" }),
		"QUIC on envoy":    mod(func(i *registry.Instance) { i.Kind = registry.KindEnvoy; i.QUICPort = 1 }),
		"weight":           mod(func(i *registry.Instance) { i.Weight = 1000 }),
		"TTL too short":    mod(func(i *registry.Instance) { i.TTL = time.Millisecond }),
		"zone":             mod(func(i *registry.Instance) { i.Zone = "Zone A" }),
		"metadata key":     mod(func(i *registry.Instance) { i.Metadata = map[string]string{"a b": "c"} }),
		"metadata value":   mod(func(i *registry.Instance) { i.Metadata = map[string]string{"k": strings.Repeat("v", 513)} }),
		"too many metakey": mod(func(i *registry.Instance) { i.Metadata = manyKeys(33) }),
	}
	for name, inst := range cases {
		err := r.Register(ctxT(t), inst)
		if !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("%s: Register = %v, want ErrInvalid", name, err)
		}
	}
	if got := list(t, r, ns); len(got) != 0 {
		t.Errorf("invalid registrations left %d instances", len(got))
	}
}

func manyKeys(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprintf("k%d", i)] = "v"
	}
	return m
}

func testConflict(t *testing.T, r registry.Registry) {
	ns := namespace()
	register(t, r, instance(ns, "web", ns+"-1", 8443))
	err := r.Register(ctxT(t), instance(ns, "api", ns+"-1", 9000))
	if !errors.Is(err, registry.ErrConflict) {
		t.Fatalf("re-using an ID for another service: %v, want ErrConflict", err)
	}
	got := list(t, r, ns)
	if len(got) != 1 || got[0].Service != "web" || got[0].Port != 8443 {
		t.Errorf("after the conflict: %+v", got)
	}
}

func testReRegister(t *testing.T, r registry.Registry) {
	ns := namespace()
	a := instance(ns, "web", ns+"-1", 8443)
	a.Version = "v1"
	register(t, r, a)
	a.Version, a.Port = "v2", 8444
	register(t, r, a)
	got := list(t, r, ns)
	if len(got) != 1 || got[0].Version != "v2" || got[0].Port != 8444 {
		t.Errorf("after re-registering: %+v", got)
	}
}

func testDeregister(t *testing.T, r registry.Registry) {
	ns := namespace()
	register(t, r, instance(ns, "web", ns+"-1", 8443))
	if err := r.Deregister(ctxT(t), ns+"-1"); err != nil {
		t.Fatal(err)
	}
	if got := list(t, r, ns); len(got) != 0 {
		t.Errorf("deregistered instance still listed: %+v", got)
	}
	if err := r.Deregister(ctxT(t), ns+"-1"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("deregistering twice: %v, want ErrNotFound", err)
	}
	if err := r.Heartbeat(ctxT(t), ns+"-nope"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("heartbeat of an unknown ID: %v, want ErrNotFound", err)
	}
	static := instance(ns, "web", ns+"-static", 8443)
	register(t, r, static)
	if err := r.Heartbeat(ctxT(t), static.ID); err != nil {
		t.Errorf("heartbeat of a static instance: %v, want nil", err)
	}
}

// waitFor reads snapshots until cond holds for ns's instances, failing
// after within; it returns how long that took.
func waitFor(t *testing.T, ch <-chan registry.Snapshot, within time.Duration, ns, what string, cond func([]registry.Instance) bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		select {
		case s, ok := <-ch:
			if !ok {
				t.Fatalf("watch closed while waiting for %s", what)
			}
			if cond(in(s, ns)) {
				return time.Since(start)
			}
		case <-deadline.C:
			t.Fatalf("watch did not show %s within %v", what, within)
		}
	}
}

func testWatch(t *testing.T, r registry.Registry) {
	ns := namespace()
	ch, err := r.Watch(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	a := instance(ns, "web", ns+"-1", 8443)
	a.TTL = time.Second
	register(t, r, a)
	d := waitFor(t, ch, Within, ns, "the registration", func(ins []registry.Instance) bool {
		return len(ins) == 1 && ins[0].Health == registry.Passing
	})
	t.Logf("registration seen after %v", d.Round(time.Millisecond))

	// No heartbeat: critical once the TTL lapses.
	d = waitFor(t, ch, a.TTL+Within, ns, "critical after a missed heartbeat", func(ins []registry.Instance) bool {
		return len(ins) == 1 && ins[0].Health == registry.Critical
	})
	t.Logf("missed heartbeat seen %v after registering (TTL %v)", d.Round(time.Millisecond), a.TTL)

	if err := r.Heartbeat(ctxT(t), a.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ch, Within, ns, "passing after a heartbeat", func(ins []registry.Instance) bool {
		return len(ins) == 1 && ins[0].Health == registry.Passing
	})
	if err := r.Deregister(ctxT(t), a.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ch, Within, ns, "the deregistration", func(ins []registry.Instance) bool { return len(ins) == 0 })
}

func testNamespaces(t *testing.T, r registry.Registry) {
	a, b := namespace(), namespace()
	register(t, r, instance(a, "web", a+"-web", 8443))
	register(t, r, instance(b, "web", b+"-web", 9443))
	if got := list(t, r, a); len(got) != 1 || got[0].Port != 8443 {
		t.Errorf("namespace %s: %+v", a, got)
	}
	if got := list(t, r, b); len(got) != 1 || got[0].Port != 9443 {
		t.Errorf("namespace %s: %+v", b, got)
	}
}

// inNamespace returns the splits or policies of namespace ns.
func inNamespace[T registry.PerService](vs []T, ns string) []T {
	var out []T
	for _, v := range vs {
		if n, _ := v.ServiceOf(); n == ns {
			out = append(out, v)
		}
	}
	return out
}

func splitsIn(s registry.Snapshot, ns string) []registry.Split { return inNamespace(s.Splits, ns) }

// waitForKept reads snapshots until what of reads of ns in one (splits,
// policies) equals want.
func waitForKept[T registry.PerService](t *testing.T, ch <-chan registry.Snapshot, ns, what string, want []T,
	of func(registry.Snapshot) []T, equal func(a, b T) bool) {
	t.Helper()
	deadline := time.NewTimer(Within)
	defer deadline.Stop()
	var last []T
	for {
		select {
		case s, ok := <-ch:
			if !ok {
				t.Fatalf("watch closed while waiting for %s", what)
			}
			last = inNamespace(of(s), ns)
			if slices.EqualFunc(last, want, equal) {
				return
			}
		case <-deadline.C:
			t.Fatalf("watch did not show %s within %v: %+v, want %+v", what, Within, last, want)
		}
	}
}

// waitForSplits reads snapshots until ns's splits are want.
func waitForSplits(t *testing.T, ch <-chan registry.Snapshot, ns, what string, want []registry.Split) {
	t.Helper()
	waitForKept(t, ch, ns, what, want, func(s registry.Snapshot) []registry.Split { return s.Splits }, func(a, b registry.Split) bool {
		return a.Service == b.Service && a.Header == b.Header && slices.Equal(a.Versions, b.Versions)
	})
}

func testSplits(t *testing.T, r registry.Registry) {
	ns := namespace()
	ch, err := r.Watch(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	canary := registry.Split{Namespace: ns, Service: "web", Versions: []registry.VersionWeight{vw("v2", 10), vw("v1", 90)}}
	if err := r.SetSplit(ctxT(t), canary); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.DeleteSplit(context.Background(), ns, "web") })
	sorted := []registry.VersionWeight{vw("v1", 90), vw("v2", 10)}
	waitForSplits(t, ch, ns, "the split, versions sorted", []registry.Split{{Service: "web", Versions: sorted}})

	// A split of another service, then the first replaced.
	other := registry.Split{Namespace: ns, Service: "api", Versions: []registry.VersionWeight{vw("blue", 0), vw("green", 100)}, Header: "x-color"}
	if err := r.SetSplit(ctxT(t), other); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.DeleteSplit(context.Background(), ns, "api") })
	canary.Versions = []registry.VersionWeight{vw("v1", 50), vw("v2", 50)}
	if err := r.SetSplit(ctxT(t), canary); err != nil {
		t.Fatal(err)
	}
	waitForSplits(t, ch, ns, "both splits, web's replaced", []registry.Split{
		{Service: "api", Versions: other.Versions, Header: "x-color"}, {Service: "web", Versions: canary.Versions},
	})

	if err := r.DeleteSplit(ctxT(t), ns, "web"); err != nil {
		t.Fatal(err)
	}
	waitForSplits(t, ch, ns, "web's split removed", []registry.Split{{Service: "api", Versions: other.Versions, Header: "x-color"}})
	if err := r.DeleteSplit(ctxT(t), ns, "web"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("removing a split twice: %v, want ErrNotFound", err)
	}

	// A split set by a rollout keeps it, every field, as it was written.
	ro := &registry.Rollout{From: "v1", To: "v2", Steps: []uint32{20, 100}, Step: 1, Since: time.Date(2026, 11, 29, 12, 0, 0, 5, time.UTC),
		Interval: time.Minute, MinSuccess: 0.995, MaxP99: 250 * time.Millisecond, MinRequests: 30, Deadline: 10 * time.Minute, State: registry.RolloutProgressing, Message: "waiting for traffic"}
	rolling := registry.Split{Namespace: ns, Service: "web", Versions: ro.Shares(), Rollout: ro}
	if err := r.SetSplit(ctxT(t), rolling); err != nil {
		t.Fatal(err)
	}
	waitForRollout := func(what string, want *registry.Rollout) registry.Split {
		t.Helper()
		var got registry.Split
		waitForKept(t, ch, ns, what, []registry.Split{{Service: "api", Versions: other.Versions, Header: "x-color"}, {Service: "web", Versions: want.Shares(), Rollout: want}},
			func(s registry.Snapshot) []registry.Split { return s.Splits }, func(a, b registry.Split) bool {
				if a.Service == "web" {
					got = a
				}
				return a.Service == b.Service && slices.Equal(a.Versions, b.Versions) && (a.Rollout == nil) == (b.Rollout == nil) &&
					(a.Rollout == nil || reflect.DeepEqual(*a.Rollout, *b.Rollout))
			})
		return got
	}
	read := waitForRollout("the rollout's split", ro)

	// Written only over what was read: a rollout's next state (the same
	// shares, a new message: seen by watchers too) over the split it
	// judged; not over one changed since.
	next := *ro
	next.Message = "judged again"
	if err := r.SetSplitIf(ctxT(t), registry.Split{Namespace: ns, Service: "web", Versions: next.Shares(), Rollout: &next}, &read); err != nil {
		t.Fatalf("SetSplitIf over the split read: %v", err)
	}
	waitForRollout("the rollout's new message", &next)
	// Asked to retire the version that loses, then noted as retired: each
	// change alone seen by watchers.
	retire := next
	retire.Retire = true
	retired := retire
	retired.Retired = time.Date(2026, 11, 29, 12, 1, 0, 7, time.UTC)
	for _, step := range []struct {
		what string
		ro   *registry.Rollout
	}{{"asked to retire", &retire}, {"retired", &retired}, {"the rollout's new message again", &next}} {
		if err := r.SetSplit(ctxT(t), registry.Split{Namespace: ns, Service: "web", Versions: step.ro.Shares(), Rollout: step.ro}); err != nil {
			t.Fatal(err)
		}
		waitForRollout(step.what, step.ro)
	}
	if err := r.SetSplitIf(ctxT(t), registry.Split{Namespace: ns, Service: "web", Versions: ro.Shares(), Rollout: ro}, &read); !errors.Is(err, registry.ErrChanged) {
		t.Errorf("SetSplitIf over a split changed since: %v, want ErrChanged", err)
	}
	if err := r.SetSplitIf(ctxT(t), registry.Split{Namespace: ns, Service: "new", Versions: []registry.VersionWeight{vw("v1", 100)}}, nil); err != nil {
		t.Errorf("SetSplitIf of a service with none, expecting none: %v", err)
	}
	t.Cleanup(func() { _ = r.DeleteSplit(context.Background(), ns, "new") })
	if err := r.SetSplitIf(ctxT(t), registry.Split{Namespace: ns, Service: "new", Versions: []registry.VersionWeight{vw("v2", 100)}}, nil); !errors.Is(err, registry.ErrChanged) {
		t.Errorf("SetSplitIf expecting none where there is one: %v, want ErrChanged", err)
	}
}

func testInvalidSplits(t *testing.T, r registry.Registry) {
	ns := namespace()
	ok := registry.Split{Namespace: ns, Service: "web", Versions: []registry.VersionWeight{vw("v1", 90), vw("v2", 10)}}
	mod := func(f func(*registry.Split)) registry.Split {
		s := ok
		s.Versions = slices.Clone(ok.Versions)
		f(&s)
		return s
	}
	cases := map[string]struct {
		split   registry.Split
		mention string
	}{
		"service name":         {mod(func(s *registry.Split) { s.Service = "Web" }), "service name"},
		"namespace":            {mod(func(s *registry.Split) { s.Namespace = "a_b" }), "namespace"},
		"no versions":          {mod(func(s *registry.Split) { s.Versions = nil }), "names no version"},
		"shares not 100":       {mod(func(s *registry.Split) { s.Versions[1].Weight = 20 }), "add up to 110 %"},
		"a share above 100":    {mod(func(s *registry.Split) { s.Versions = []registry.VersionWeight{vw("v1", 200)} }), "0-100 %"},
		"a version twice":      {mod(func(s *registry.Split) { s.Versions[1].Version = "v1" }), `"v1" is named twice`},
		"a bad version":        {mod(func(s *registry.Split) { s.Versions[1].Version = "v 2" }), `version "v 2" may hold only`},
		"an empty version":     {mod(func(s *registry.Split) { s.Versions[1].Version = "" }), "version is empty"},
		"a header in capitals": {mod(func(s *registry.Split) { s.Header = "X-Version" }), "lower-case HTTP header name"},
		"the mesh's header":    {mod(func(s *registry.Split) { s.Header = "x-mesh-caller" }), "means something else to the mesh"},
		"a rollout's shares not its own": {mod(func(s *registry.Split) {
			s.Rollout = &registry.Rollout{From: "v1", To: "v2", Steps: []uint32{50, 100}, Interval: time.Minute, State: registry.RolloutProgressing}
		}), "its shares v1=90 v2=10 are not its rollout's (v1=50 v2=50)"},
		"a rollout's steps falling": {mod(func(s *registry.Split) {
			s.Rollout = &registry.Rollout{From: "v1", To: "v2", Steps: []uint32{10, 5, 100}, Interval: time.Minute, State: registry.RolloutProgressing}
		}), "each above the one before"},
		"a rollout short of 100 %": {mod(func(s *registry.Split) {
			s.Rollout = &registry.Rollout{From: "v1", To: "v2", Steps: []uint32{10, 50}, Interval: time.Minute, State: registry.RolloutProgressing}
		}), "the last gives the new version 100 %"},
		"a rollout to itself": {mod(func(s *registry.Split) {
			s.Rollout = &registry.Rollout{From: "v1", To: "v1", Steps: []uint32{100}, Interval: time.Minute, State: registry.RolloutProgressing}
		}), "from v1 to itself"},
		"a rollout's interval": {mod(func(s *registry.Split) {
			s.Rollout = &registry.Rollout{From: "v1", To: "v2", Steps: []uint32{10, 100}, Interval: time.Second, State: registry.RolloutProgressing}
		}), "interval 1s: between 30s"},
		"a rollout's deadline": {mod(func(s *registry.Split) {
			s.Rollout = &registry.Rollout{From: "v1", To: "v2", Steps: []uint32{10, 100}, Interval: time.Minute, Deadline: time.Second, State: registry.RolloutProgressing}
		}), "deadline 1s: 0"},
		"a rollout's success rate": {mod(func(s *registry.Split) {
			s.Rollout = &registry.Rollout{From: "v1", To: "v2", Steps: []uint32{10, 100}, Interval: time.Minute, MinSuccess: 99, State: registry.RolloutProgressing}
		}), "between 0 and 100 %"},
		"too many versions": {mod(func(s *registry.Split) {
			s.Versions = nil
			for i := range registry.MaxSplitVersions + 1 {
				s.Versions = append(s.Versions, registry.VersionWeight{Version: fmt.Sprintf("v%d", i)})
			}
		}), "the limit is 16"},
	}
	for name, c := range cases {
		err := r.SetSplit(ctxT(t), c.split)
		if !errors.Is(err, registry.ErrInvalid) || !strings.Contains(err.Error(), c.mention) {
			t.Errorf("%s: SetSplit = %v, want ErrInvalid mentioning %q", name, err, c.mention)
		}
	}
	s, err := registry.List(ctxT(t), r)
	if err != nil {
		t.Fatal(err)
	}
	if got := splitsIn(s, ns); len(got) != 0 {
		t.Errorf("invalid splits left %+v", got)
	}
	if err := r.DeleteSplit(ctxT(t), ns, "web"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("removing a split never set: %v, want ErrNotFound", err)
	}
	bad := instance(ns, "web", ns+"-1", 8443)
	bad.Version = "v1/beta"
	if err := r.Register(ctxT(t), bad); !errors.Is(err, registry.ErrInvalid) || !strings.Contains(err.Error(), "may hold only") {
		t.Errorf("an instance of version %q: %v, want ErrInvalid", bad.Version, err)
	}
}

func vw(version string, weight uint32) registry.VersionWeight {
	return registry.VersionWeight{Version: version, Weight: weight}
}
