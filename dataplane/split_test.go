package dataplane_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/dataplane"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/meshtest"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
)

// A canary, as an operator runs one: b's v1 serves; v2 starts beside it;
// a split sends it all of b's traffic, then none, then half; cleared, both
// serve again (a split need not name every version: v1's instance gets
// nothing while the split names v2 alone). Through real sidecars, the registry API and the control
// plane's weighted clusters.
func TestASplitSendsEachVersionItsShare(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
	for _, v := range []string{"v1", "v2"} {
		cp.StartSidecar("default", "b", meshtest.WithApp(startEcho(t, "b-"+v), "http"), meshtest.WithInstance("b-"+v),
			meshtest.WithOptions(func(o *dataplane.Options) { o.Version = v }))
	}
	admin := cp.RegistryClient(cp.Join(identity.SystemNamespace, "meshctl"))
	header := ""
	split := func(shares map[string]uint32) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		sp := &registryv1.Split{Service: "b", Header: header}
		for v, w := range shares {
			sp.Versions = append(sp.Versions, &registryv1.VersionWeight{Version: v, Weight: w})
		}
		if _, err := admin.SetSplit(ctx, &registryv1.SetSplitRequest{Split: sp}); err != nil {
			t.Fatal(err)
		}
	}
	// calls counts which app answered n calls from a to b; every call
	// must succeed once b is known (a split never fails a call to a
	// version that has instances: no "no healthy endpoint" while a new
	// version's cluster waits for its endpoints).
	known := false
	calls := func(n int) map[string]int {
		t.Helper()
		got := map[string]int{}
		for range n {
			resp, e := call(t, a.Info.Outbound, "b", "/", nil)
			if resp.StatusCode != http.StatusOK {
				if !known {
					return got // a has not learnt of b and its instances yet
				}
				t.Fatalf("a → b: %d %q", resp.StatusCode, e.Body)
			}
			got[e.App]++
		}
		return got
	}
	waitFor(t, "both versions to serve", func() bool { c := calls(10); return c["b-v1"] > 0 && c["b-v2"] > 0 })
	known = true

	split(map[string]uint32{"v1": 0, "v2": 100})
	waitFor(t, "v2 to take every call", func() bool { return calls(10)["b-v2"] == 10 })
	if c := calls(50); c["b-v2"] != 50 {
		t.Errorf("split v2=100: %v", c)
	}

	// A tester's requests carry the version header: the shares still send
	// everything to v2, x-version: v1 reaches v1 (before the header, no
	// request could).
	header = "x-version"
	split(map[string]uint32{"v1": 0, "v2": 100})
	waitFor(t, "x-version: v1 to reach v1 under v2=100", func() bool {
		_, e := call(t, a.Info.Outbound, "b", "/", http.Header{"X-Version": {"v1"}})
		return e.App == "b-v1"
	})
	for range 10 {
		if _, e := call(t, a.Info.Outbound, "b", "/", http.Header{"X-Version": {"v1"}}); e.App != "b-v1" {
			t.Fatalf("x-version: v1 reached %q", e.App)
		}
		if _, e := call(t, a.Info.Outbound, "b", "/", nil); e.App != "b-v2" {
			t.Fatalf("without the header, v2=100: reached %q", e.App)
		}
	}
	header = ""

	split(map[string]uint32{"v1": 100, "v2": 0})
	waitFor(t, "v1 to take every call", func() bool { return calls(10)["b-v1"] == 10 })

	split(map[string]uint32{"v1": 50, "v2": 50})
	waitFor(t, "v2 to take calls again", func() bool { return calls(10)["b-v2"] > 0 })
	// 200 calls at 50 %: 100 ± 7 (one standard deviation); 40 either way
	// is more than five of them.
	if c := calls(200); c["b-v1"] < 60 || c["b-v2"] < 60 {
		t.Errorf("split v1=50 v2=50, 200 calls: %v", c)
	}

	// a's metrics tell the versions apart: the destination is the
	// version's cluster.
	if m := metrics(t, a.Info.Admin); !strings.Contains(m, `destination="b.default|v1"`) || !strings.Contains(m, `destination="b.default|v2"`) {
		t.Errorf("a's request metrics do not name each version:\n%s", grep(m, "micromesh_requests_total"))
	}

	// Cleared, from all to v2: v1 serves again.
	split(map[string]uint32{"v2": 100})
	waitFor(t, "v2 to take every call", func() bool { return calls(10)["b-v2"] == 10 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := admin.DeleteSplit(ctx, &registryv1.DeleteSplitRequest{Service: "b"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "v1 to serve without the split", func() bool { return calls(10)["b-v1"] > 0 })
}
