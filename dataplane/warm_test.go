package dataplane

import (
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/micromesh/micromesh/dataplane/config"
	"github.com/micromesh/micromesh/dataplane/xdswire"
	"github.com/micromesh/micromesh/dataplane/xdswire/xdswiretest"
	"github.com/micromesh/micromesh/xds"
)

// configOf compiles what the control plane sends a caller in the default
// namespace when b has instances of the versions given (a split over all
// of them when more than one); without its endpoints when edsArrived is
// false for a version.
func configOf(t *testing.T, versions []string, edsArrived map[string]bool) *config.Config {
	t.Helper()
	return configWithout(t, versions, edsArrived, "")
}

// configWithout is configOf without cluster noCluster (its removal came
// first).
func configWithout(t *testing.T, versions []string, edsArrived map[string]bool, noCluster string) *config.Config {
	t.Helper()
	svc := xds.Service{Name: "b", Namespace: "default", Protocol: xds.ProtocolHTTP}
	for i, v := range versions {
		svc.Endpoints = append(svc.Endpoints, xds.Endpoint{ID: "b-" + v, Address: "127.0.0.1", Port: uint32(9000 + i), Kind: xds.KindEnvoy, Version: v, Health: xds.HealthPassing})
		if len(versions) > 1 {
			svc.Split = append(svc.Split, xds.VersionWeight{Version: v, Weight: uint32(100 / len(versions))})
		}
	}
	if len(svc.Split) > 0 {
		svc.Split[0].Weight += 100 % uint32(len(versions))
	}
	r, err := xds.Build(&xds.Mesh{TrustDomain: "micromesh.local", Roots: []byte("x"), Services: []xds.Service{svc}},
		xds.Proxy{NodeID: "n", Namespace: "default", Service: "a", Kind: xds.KindBuiltin, OutboundPort: 15001, CertDir: "/certs"})
	if err != nil {
		t.Fatal(err)
	}
	res := config.Resources{
		Listeners: xdswiretest.DecodeAll[*xdswire.Listener](t, r.Listeners),
		Routes:    xdswiretest.DecodeAll[*xdswire.RouteConfiguration](t, r.Routes),
		Secrets:   xdswiretest.DecodeAll[*xdswire.Secret](t, r.Secrets),
	}
	for _, c := range xdswiretest.DecodeAll[*xdswire.Cluster](t, r.Clusters) {
		if c.Name != noCluster {
			res.Clusters = append(res.Clusters, c)
		}
	}
	for _, e := range xdswiretest.DecodeAll[*xdswire.ClusterLoadAssignment](t, r.Endpoints) {
		if v, ok := edsArrived[e.ClusterName]; !ok || v {
			res.Endpoints = append(res.Endpoints, e)
		}
	}
	cfg, err := config.Compile(res)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// recorder is a put that records what was put in force.
type recorder struct {
	mu  sync.Mutex
	got []*config.Config
	put chan struct{}
}

func (r *recorder) record(c *config.Config) error {
	r.mu.Lock()
	r.got = append(r.got, c)
	r.mu.Unlock()
	r.put <- struct{}{}
	return nil
}

func (r *recorder) last() (*config.Config, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[len(r.got)-1], len(r.got)
}

// A split's new version arrives as a cluster whose endpoints come next:
// the config that routes to it is held until they do, so no request meets
// a cluster with no endpoints; a config still missing them after the bound
// goes in force anyway.
func TestConfigsWaitForWhatTheyReferTo(t *testing.T) {
	rec := &recorder{put: make(chan struct{}, 10)}
	w := &warmer{put: rec.record, within: time.Hour, log: slog.New(slog.DiscardHandler)}
	t.Cleanup(w.close)

	// The first config goes in force even if incomplete (the proxy holds
	// calls until it is complete, on its own bound).
	first := configOf(t, []string{"v1"}, map[string]bool{"b.default": false})
	if err := w.offer(first); err != nil {
		t.Fatal(err)
	}
	if got, n := rec.last(); got != first || n != 1 {
		t.Fatalf("the first config was not put in force")
	}
	complete := configOf(t, []string{"v1"}, nil)
	if err := w.offer(complete); err != nil {
		t.Fatal(err)
	}
	// The split arrives before v2's endpoints: held.
	waiting := configOf(t, []string{"v1", "v2"}, map[string]bool{"b.default|v2": false})
	if len(waiting.Missing()) == 0 {
		t.Fatal("the test's config misses nothing")
	}
	if err := w.offer(waiting); err != nil {
		t.Fatal(err)
	}
	if got, n := rec.last(); got != complete || n != 2 {
		t.Fatalf("a config routing to a cluster without its endpoints went in force (%d puts)", n)
	}
	if !w.holding() {
		t.Error("holding() = false while a config is held (micromesh_config_held reads it)")
	}
	// Its endpoints arrive: in force.
	warm := configOf(t, []string{"v1", "v2"}, nil)
	if err := w.offer(warm); err != nil {
		t.Fatal(err)
	}
	if got, n := rec.last(); got != warm || n != 3 {
		t.Fatalf("the complete config was not put in force (%d puts)", n)
	}
	if w.holding() {
		t.Error("holding() = true with nothing held")
	}

	// A cluster's removal comes before the route that stops using it: held
	// until the route comes.
	removedFirst := configWithout(t, []string{"v1", "v2"}, nil, "b.default|v2")
	if err := w.offer(removedFirst); err != nil {
		t.Fatal(err)
	}
	if got, n := rec.last(); got != warm || n != 3 {
		t.Fatalf("a config routing to a removed cluster went in force (%d puts)", n)
	}
	if err := w.offer(complete); err != nil {
		t.Fatal(err)
	}
	if got, n := rec.last(); got != complete || n != 4 {
		t.Fatalf("the route without the removed cluster was not put in force (%d puts)", n)
	}

	// Endpoints that never come: in force after the bound.
	rec.put = make(chan struct{}, 10)
	w2 := &warmer{put: rec.record, within: 50 * time.Millisecond, log: slog.New(slog.DiscardHandler)}
	t.Cleanup(w2.close)
	if err := w2.offer(complete); err != nil {
		t.Fatal(err)
	}
	<-rec.put
	start := time.Now()
	if err := w2.offer(waiting); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rec.put:
		if got, _ := rec.last(); got != waiting || time.Since(start) < 50*time.Millisecond {
			t.Errorf("after %v, put %p; want the held config %p after the bound", time.Since(start), got, waiting)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the held config never went in force")
	}
	// What the config in force misses too holds nothing back: the next
	// update, still without v2's endpoints, goes in force at once.
	again := configOf(t, []string{"v1", "v2"}, map[string]bool{"b.default|v2": false})
	if err := w2.offer(again); err != nil {
		t.Fatal(err)
	}
	if got, _ := rec.last(); got != again {
		t.Error("an update missing only what the config in force misses was held")
	}
}
