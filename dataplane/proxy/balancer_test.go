package proxy

import (
	"maps"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/dataplane/config"
)

func cluster(leastRequest bool, eps ...config.Endpoint) *config.Cluster {
	return &config.Cluster{Name: "c", LeastRequest: leastRequest, Endpoints: eps, PanicThreshold: 50,
		Outlier: &config.Outlier{Consecutive5xx: 3, Split: true, ConsecutiveLocalFailure: 2, BaseEjectionTime: time.Second, MaxEjectionTime: 4 * time.Second, MaxEjectionPercent: 50}}
}

func ep(addr string, healthy bool) config.Endpoint {
	return config.Endpoint{Address: addr, Weight: 1, Healthy: healthy}
}

func TestRoundRobinSpreadsAndSkipsUnhealthy(t *testing.T) {
	b := newBalancer(cluster(false, ep("a", true), ep("b", true), ep("c", false)), nil)
	seen := map[string]int{}
	for range 100 {
		seen[b.pick(nil).addr]++
	}
	if seen["a"] != 50 || seen["b"] != 50 || seen["c"] != 0 {
		t.Errorf("picks = %v", seen)
	}
}

func TestWeightsAreHonoured(t *testing.T) {
	c := cluster(false, ep("a", true), ep("b", true))
	c.Endpoints[0].Weight = 3
	b := newBalancer(c, nil)
	seen := map[string]int{}
	for range 400 {
		seen[b.pick(nil).addr]++
	}
	if seen["a"] != 300 || seen["b"] != 100 {
		t.Errorf("picks = %v, want 3:1", seen)
	}
}

func TestLeastRequestPrefersTheIdle(t *testing.T) {
	b := newBalancer(cluster(true, ep("a", true), ep("b", true)), nil)
	b.eps[0].active.Store(100)
	seen := map[string]int{}
	for range 1000 {
		seen[b.pick(nil).addr]++
	}
	if seen["b"] < 700 {
		t.Errorf("picks = %v: the busy endpoint should lose most choices", seen)
	}
}

func TestOutlierDetectionEjectsWithBackoff(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newBalancer(cluster(false, ep("a", true), ep("b", true), ep("c", true), ep("d", true)), nil)
	b.now = func() time.Time { return now }
	a := b.eps[0]
	for range 2 {
		b.report(a, serverError)
	}
	if !a.available(now) {
		t.Fatal("ejected before the threshold")
	}
	b.report(a, serverError)
	if a.available(now) {
		t.Fatal("not ejected after 3 consecutive 5xx")
	}
	for range 50 {
		if b.pick(nil) == a {
			t.Fatal("an ejected endpoint was picked")
		}
	}
	now = now.Add(1100 * time.Millisecond)
	if !a.available(now) {
		t.Fatal("still ejected after the base ejection time")
	}
	// Second ejection lasts twice as long; two local failures suffice.
	b.report(a, localFailure)
	b.report(a, localFailure)
	if a.available(now.Add(1500 * time.Millisecond)) {
		t.Error("the second ejection did not double")
	}
	if !a.available(now.Add(2100 * time.Millisecond)) {
		t.Error("the second ejection lasted more than twice the base")
	}
	// A success resets the count.
	b.report(b.eps[1], serverError)
	b.report(b.eps[1], serverError)
	b.report(b.eps[1], success)
	b.report(b.eps[1], serverError)
	if !b.eps[1].available(now) {
		t.Error("failures were counted across a success")
	}
}

// Local failures count apart when split (as the control plane sets it):
// 5xx and local failures in turn eject on neither count. Not split, as
// Envoy's default, a local failure counts as a 5xx.
func TestLocalFailuresCountAsEnvoys(t *testing.T) {
	now := time.Unix(1000, 0)
	for _, split := range []bool{true, false} {
		c := cluster(false, ep("a", true), ep("b", true))
		c.Outlier.Split = split
		if !split {
			c.Outlier.ConsecutiveLocalFailure = 0 // what the compiler leaves when not split
		}
		b := newBalancer(c, nil)
		b.now = func() time.Time { return now }
		a := b.eps[0]
		b.report(a, serverError)
		b.report(a, localFailure)
		b.report(a, serverError)
		if ejected := !a.available(now); ejected == split {
			t.Errorf("split %v: 5xx, local failure, 5xx: ejected %v, want %v", split, ejected, !split)
		}
	}
}

// Below the panic threshold's share of available endpoints the balancer
// picks among all of them, unhealthy ones too, as Envoy does (default
// 50 %); at or above it, only among the available.
func TestPanicThresholdAsEnvoys(t *testing.T) {
	for _, tc := range []struct {
		threshold float64
		eps       []config.Endpoint
		want      string // the endpoints picked, sorted
	}{
		{50, []config.Endpoint{ep("a", true), ep("b", false)}, "a"},                   // 50 %: no panic
		{50, []config.Endpoint{ep("a", true), ep("b", false), ep("c", false)}, "abc"}, // 33 %: panic
		{0, []config.Endpoint{ep("a", true), ep("b", false), ep("c", false)}, "a"},    // panic off
		{50, []config.Endpoint{ep("a", false)}, "a"},                                  // none available: panic
		{0, []config.Endpoint{ep("a", false)}, ""},                                    // none, panic off: nothing
	} {
		c := cluster(false, tc.eps...)
		c.PanicThreshold = tc.threshold
		b := newBalancer(c, nil)
		seen := map[string]bool{}
		for range 60 {
			if e := b.pick(nil); e != nil {
				seen[e.addr] = true
			}
		}
		got := slices.Sorted(maps.Keys(seen))
		if strings.Join(got, "") != tc.want {
			t.Errorf("threshold %v, %v: picked %v, want %q", tc.threshold, tc.eps, got, tc.want)
		}
	}
}

func TestMaxEjectionPercentAndPanicMode(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newBalancer(cluster(false, ep("a", true), ep("b", true)), nil)
	b.now = func() time.Time { return now }
	for _, e := range b.eps {
		for range 3 {
			b.report(e, serverError)
		}
	}
	ejected := 0
	for _, e := range b.eps {
		if !e.available(now) {
			ejected++
		}
	}
	if ejected != 1 {
		t.Fatalf("%d of 2 ejected; 50%% allows 1", ejected)
	}
	// All candidates tried or ejected: pick still answers from the healthy.
	only := b.pick([]*endpoint{b.eps[0], b.eps[1]})
	if only != nil {
		t.Fatal("picked an endpoint already tried")
	}
}

func TestEjectionSurvivesConfigUpdate(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newBalancer(cluster(false, ep("a", true), ep("b", true), ep("c", true)), nil)
	b.now = func() time.Time { return now }
	for range 3 {
		b.report(b.eps[0], serverError)
	}
	b2 := newBalancer(cluster(false, ep("a", true), ep("b", true), ep("c", true), ep("d", true)), b)
	if b2.eps[0].available(now) {
		t.Fatal("an endpoint's ejection was forgotten by an EDS update")
	}
}

func TestGRPCDeadlinePassed(t *testing.T) {
	start := time.Now().Add(-time.Second)
	for v, want := range map[string]bool{"500m": true, "2S": false, "999999u": true, "1H": false, "": false, "x": false, "10q": false} {
		r := httptest.NewRequest("POST", "/svc/M", nil)
		r.Header.Set("Content-Type", "application/grpc")
		if v != "" {
			r.Header.Set("Grpc-Timeout", v)
		}
		if got := grpcDeadlinePassed(r, start); got != want {
			t.Errorf("grpc-timeout %q: %v, want %v", v, got, want)
		}
	}
}
