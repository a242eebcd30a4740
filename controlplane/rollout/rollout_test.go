package rollout

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/controlplane/registry/embedded"
	"github.com/micromesh/micromesh/controlplane/stats"
)

// withDeadline is r with a progress deadline.
func withDeadline(r registry.Rollout, d time.Duration) registry.Rollout {
	r.Deadline = d
	return r
}

func TestNext(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	base := registry.Rollout{From: "v1", To: "v2", Steps: []uint32{10, 50, 100}, Since: t0, Interval: time.Minute,
		MinSuccess: 0.99, MaxP99: 200 * time.Millisecond, MinRequests: 20, State: registry.RolloutProgressing}
	at := func(step int) registry.Rollout { r := base; r.Step = step; return r }
	healthy := Canary{Callers: stats.Traffic{Requests: 100, Failures: 0, P99: 50 * time.Millisecond}}
	// The canary's own sidecars alone report (its callers are Envoy
	// sidecars or proxyless clients).
	own := func(t stats.Traffic) Canary { return Canary{Own: t} }
	callers := func(t stats.Traffic) Canary { return Canary{Callers: t} }
	for _, c := range []struct {
		name    string
		r       registry.Rollout
		canary  Canary
		now     time.Time
		changed bool
		state   string
		step    int
		says    string
	}{
		{"healthy, mid-step: waits", at(0), healthy, t0.Add(30 * time.Second), false, registry.RolloutProgressing, 0, ""},
		{"healthy, step over: next step", at(0), healthy, t0.Add(time.Minute), true, registry.RolloutProgressing, 1, ""},
		{"healthy at 100 %, step over: succeeded", at(2), healthy, t0.Add(time.Minute), true, registry.RolloutSucceeded, 2, "v2 took all traffic"},
		{"failing mid-step: rolled back at once", at(1), callers(stats.Traffic{Requests: 100, Failures: 5}), t0.Add(10 * time.Second), true,
			registry.RolloutRolledBack, 1, "v2's success rate 95.0 % is under 99.0 % (5 of 100 requests failed) at 50 %; all traffic back to v1"},
		{"slow: rolled back", at(0), callers(stats.Traffic{Requests: 100, P99: 300 * time.Millisecond}), t0.Add(time.Minute), true,
			registry.RolloutRolledBack, 0, "v2's p99 latency 300ms is over 200ms"},
		{"too few requests to judge a failure", at(0), callers(stats.Traffic{Requests: 10, Failures: 10}), t0.Add(10 * time.Second), false, registry.RolloutProgressing, 0, ""},
		{"step over, too few requests: waits, saying so", at(0), callers(stats.Traffic{Requests: 3}), t0.Add(time.Minute), true,
			registry.RolloutProgressing, 0, "waiting for traffic: 3 of the 20 requests to v2 a step needs"},
		{"no traffic at all, nothing asked: still waits", func() registry.Rollout { r := at(0); r.MinRequests = 0; return r }(), callers(stats.Traffic{}), t0.Add(time.Minute), true,
			registry.RolloutProgressing, 0, "waiting for traffic: 0 of the 0"},
		{"ended: nothing more", func() registry.Rollout { r := at(1); r.State = registry.RolloutAborted; return r }(), callers(stats.Traffic{Requests: 100, Failures: 100}), t0.Add(time.Hour), false,
			registry.RolloutAborted, 1, ""},
		{"only its own sidecars report, healthy: next step", at(0), own(stats.Traffic{Requests: 100, P99: 20 * time.Millisecond}), t0.Add(time.Minute), true, registry.RolloutProgressing, 1, ""},
		{"only its own sidecars report, failing: rolled back", at(0), own(stats.Traffic{Requests: 100, Failures: 50}), t0.Add(10 * time.Second), true,
			registry.RolloutRolledBack, 0, "v2's success rate at its own sidecars 50.0 % is under 99.0 % (50 of 100 requests failed) at 10 %"},
		{"healthy to its built-in callers, failing Envoy's: rolled back", at(1), Canary{Callers: healthy.Callers, Own: stats.Traffic{Requests: 300, Failures: 30}}, t0.Add(time.Minute), true,
			registry.RolloutRolledBack, 1, "v2's success rate at its own sidecars 90.0 %"},
		{"slow where its callers see it, though quick at its own sidecars: rolled back", at(0), Canary{Callers: stats.Traffic{Requests: 100, P99: time.Second}, Own: stats.Traffic{Requests: 100, P99: time.Millisecond}}, t0.Add(time.Minute), true,
			registry.RolloutRolledBack, 0, "v2's p99 latency 1s is over 200ms"},
		{"too few calls from its callers, enough at its own sidecars: judged on those", at(2), Canary{Callers: stats.Traffic{Requests: 3, Failures: 3}, Own: stats.Traffic{Requests: 40, P99: 10 * time.Millisecond}}, t0.Add(time.Minute), true,
			registry.RolloutSucceeded, 2, "v2 took all traffic and stayed healthy (success rate at its own sidecars 100.0 %, p99 10ms)"},
		{"too few either way: waits, counting the larger", at(0), Canary{Callers: stats.Traffic{Requests: 3}, Own: stats.Traffic{Requests: 7}}, t0.Add(time.Minute), true,
			registry.RolloutProgressing, 0, "waiting for traffic: 7 of the 20"},
		{"too few, within the deadline: waits", withDeadline(at(1), 5*time.Minute), callers(stats.Traffic{Requests: 3}), t0.Add(5*time.Minute + 59*time.Second), true,
			registry.RolloutProgressing, 1, "waiting for traffic: 3 of the 20"},
		{"too few, the deadline past the interval passed: rolled back", withDeadline(at(1), 5*time.Minute), callers(stats.Traffic{Requests: 3}), t0.Add(6 * time.Minute), true,
			registry.RolloutRolledBack, 1, "no traffic to judge v2 by: 3 of the 20 requests a step needs, 6m0s into its step at 50 % (deadline 5m0s past the interval); all traffic back to v1"},
		{"enough, past the deadline: judged, next step", withDeadline(at(0), 5*time.Minute), healthy, t0.Add(time.Hour), true, registry.RolloutProgressing, 1, ""},
	} {
		next, changed := Next(c.r, c.canary, c.now)
		if changed != c.changed || next.State != c.state || next.Step != c.step || !strings.Contains(next.Message, c.says) {
			t.Errorf("%s: changed %v, %s at step %d, %q; want %v, %s at step %d, saying %q", c.name, changed, next.State, next.Step, next.Message, c.changed, c.state, c.step, c.says)
		}
		if changed && next.State != registry.RolloutProgressing && !next.Since.Equal(c.now) {
			t.Errorf("%s: ended at %v, want %v", c.name, next.Since, c.now)
		}
		if err := next.Validate("helloworld", "default"); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	// Waiting says so once: the same message again is no change.
	r, _ := Next(at(0), callers(stats.Traffic{Requests: 3}), t0.Add(time.Minute))
	if _, changed := Next(r, callers(stats.Traffic{Requests: 3}), t0.Add(61*time.Second)); changed {
		t.Error("the same wait written twice")
	}
	// The shares follow the state.
	for _, c := range []struct {
		state string
		step  int
		want  string
	}{{registry.RolloutProgressing, 1, "v1=50 v2=50"}, {registry.RolloutSucceeded, 2, "v1=0 v2=100"}, {registry.RolloutRolledBack, 1, "v1=100 v2=0"}, {registry.RolloutAborted, 0, "v1=100 v2=0"}} {
		r := at(c.step)
		r.State = c.state
		if got := registry.Shares(r.Shares()); got != c.want {
			t.Errorf("%s at step %d: shares %s, want %s", c.state, c.step, got, c.want)
		}
	}
}

func TestWindow(t *testing.T) {
	t0 := time.Now()
	r := registry.Rollout{Since: t0, Interval: time.Minute}
	for _, c := range []struct{ after, want time.Duration }{{0, 30 * time.Second}, {45 * time.Second, 45 * time.Second}, {5 * time.Minute, time.Minute}} {
		if got := Window(r, t0.Add(c.after)); got != c.want {
			t.Errorf("%v into the step: window %v, want %v", c.after, got, c.want)
		}
	}
}

// A rollout kept under older bounds (a 10 s interval, since refused) can
// still be moved on: clamped into today's.
func TestClampKeepsOldRolloutsMoving(t *testing.T) {
	r := registry.Rollout{From: "v1", To: "v2", Steps: []uint32{50, 100}, Interval: 10 * time.Second, State: registry.RolloutProgressing}
	if err := r.Validate("helloworld", "default"); err == nil {
		t.Fatal("a 10 s interval accepted")
	}
	r.Clamp()
	if err := r.Validate("helloworld", "default"); err != nil || r.Interval != registry.MinRolloutInterval {
		t.Errorf("clamped: %v, %v", r.Interval, err)
	}
}

// A rollout that ended asking for it has the version that lost stopped,
// RetireAfter its end and once; one the retirer does not run is left, and
// not asked for again; one that failed is tried again.
func TestRunnerRetiresTheLoser(t *testing.T) {
	ctx := t.Context()
	reg, err := embedded.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	ended := func(service, state string) registry.Split {
		r := registry.Rollout{From: "v1", To: "v2", Steps: []uint32{50, 100}, Step: 1, Since: t0, Interval: time.Minute, MinSuccess: 0.99,
			State: state, Message: "why it ended", Retire: true}
		return registry.Split{Service: service, Namespace: "default", Rollout: &r, Versions: r.Shares()}
	}
	for _, sp := range []registry.Split{ended("won", registry.RolloutSucceeded), ended("lost", registry.RolloutRolledBack), ended("elsewhere", registry.RolloutAborted)} {
		if err := reg.SetSplit(ctx, sp); err != nil {
			t.Fatal(err)
		}
	}
	var stopped []string
	fail := errors.New("the runtime is busy")
	retire := func(_ context.Context, ns, service, version string) (bool, error) {
		switch {
		case service == "elsewhere":
			return false, nil
		case service == "lost" && fail != nil:
			return false, fail
		}
		stopped = append(stopped, service+"/"+version)
		return true, nil
	}
	r := NewRunner(reg, stats.NewStore(), retire, slog.New(slog.DiscardHandler))
	check := func(at time.Time) {
		snap, err := registry.List(ctx, reg)
		if err != nil {
			t.Fatal(err)
		}
		r.Observe(snap.Splits)
		r.now = func() time.Time { return at }
		r.Check(ctx)
	}
	check(t0.Add(registry.RetireAfter - time.Second))
	if len(stopped) != 0 {
		t.Fatalf("stopped before RetireAfter: %v", stopped)
	}
	check(t0.Add(registry.RetireAfter))
	r.Check(ctx) // again before the registry's next snapshot: nothing twice
	fail = nil
	check(t0.Add(registry.RetireAfter + 2*time.Second))
	check(t0.Add(registry.RetireAfter + 4*time.Second))
	if got := strings.Join(stopped, " "); got != "won/v1 lost/v2" {
		t.Errorf("stopped %q; want the old version of the one that succeeded, the new one of the one rolled back (after a failure), once each", got)
	}
	// Once the registry shows them done, only the one left running is
	// remembered (not asked again).
	check(t0.Add(registry.RetireAfter + 6*time.Second))
	if len(r.handled) != 1 || len(r.failed) != 0 || strings.Join(stopped, " ") != "won/v1 lost/v2" {
		t.Errorf("remembered %v and %v, stopped %v; want only elsewhere's retirement", r.handled, r.failed, stopped)
	}
	snap, _ := registry.List(ctx, reg)
	for _, sp := range snap.Splits {
		ro := sp.Rollout
		switch sp.Service {
		case "won", "lost":
			if ro.Retired.IsZero() || !strings.HasSuffix(ro.Message, "'s instances stopped") {
				t.Errorf("%s: retired %v, %q", sp.Service, ro.Retired, ro.Message)
			}
		case "elsewhere":
			if !ro.Retired.IsZero() || ro.Message != "why it ended" {
				t.Errorf("elsewhere, not the runtime's: retired %v, %q", ro.Retired, ro.Message)
			}
		}
	}
}
