// Package rollout runs progressive rollouts (`meshctl rollout start`):
// it judges the new version of each service under one by the calls its
// callers' sidecars and its own report (controlplane/stats), and moves the service's
// split a step on, or all the way back, in the registry — where the
// rollout is kept with the split (registry.Rollout), so a restarted
// control plane carries on where it was.
package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/controlplane/stats"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
)

// Canary is a rollout's new version's traffic over a window, seen from
// both ends.
type Canary struct {
	// Callers are the calls to its cluster as the callers' built-in
	// sidecars reported them: the network and failures to connect
	// included, but nothing from Envoy sidecars or proxyless clients,
	// which report no figures.
	Callers stats.Traffic
	// Own are the calls that reached it, as its own sidecars reported
	// them: every caller's, whatever its proxy, with the app's time.
	Own stats.Traffic
}

// Next is what rollout r does at now, given its new version's traffic
// over the window Window gives: it rolls back as soon as a threshold is
// crossed in either view of the canary that holds enough requests, goes
// a step on when the step has run its interval healthy in every view
// judged (at least one), ends, succeeded, after the last, and otherwise
// waits — saying for what when the step's time is up but its traffic too
// thin. changed reports whether r is to be written.
func Next(r registry.Rollout, canary Canary, now time.Time) (next registry.Rollout, changed bool) {
	if r.State != registry.RolloutProgressing {
		return r, false
	}
	views := []struct {
		t     stats.Traffic
		where string
	}{{canary.Callers, ""}, {canary.Own, " at its own sidecars"}}
	judged := -1 // the first view judged
	for i, v := range views {
		t := v.t
		if t.Requests < uint64(r.MinRequests) || t.Requests == 0 {
			continue
		}
		if judged < 0 {
			judged = i
		}
		if sr := t.SuccessRate(); sr < r.MinSuccess {
			return end(r, now, registry.RolloutRolledBack, fmt.Sprintf("%s's success rate%s %s is under %s (%d of %d requests failed) at %d %%; all traffic back to %s",
				r.To, v.where, percent(sr), percent(r.MinSuccess), t.Failures, t.Requests, r.Steps[r.Step], r.From)), true
		}
		if r.MaxP99 > 0 && t.P99 > r.MaxP99 {
			return end(r, now, registry.RolloutRolledBack, fmt.Sprintf("%s's p99 latency%s %v is over %v (%d requests) at %d %%; all traffic back to %s",
				r.To, v.where, t.P99.Round(time.Millisecond), r.MaxP99, t.Requests, r.Steps[r.Step], r.From)), true
		}
	}
	if now.Sub(r.Since) < r.Interval {
		return r, false
	}
	if judged < 0 {
		seen := max(canary.Callers.Requests, canary.Own.Requests)
		if r.Deadline > 0 && now.Sub(r.Since) >= r.Interval+r.Deadline {
			return end(r, now, registry.RolloutRolledBack, fmt.Sprintf("no traffic to judge %s by: %d of the %d requests a step needs, %v into its step at %d %% (deadline %v past the interval); all traffic back to %s",
				r.To, seen, r.MinRequests, now.Sub(r.Since).Round(time.Second), r.Steps[r.Step], r.Deadline, r.From)), true
		}
		msg := fmt.Sprintf("%s: %d of the %d requests to %s a step needs, in the last %v",
			registry.WaitingForTraffic, seen, r.MinRequests, r.To, r.Interval)
		if msg == r.Message {
			return r, false
		}
		r.Message = msg
		return r, true
	}
	if r.Step == len(r.Steps)-1 {
		t := views[judged].t
		return end(r, now, registry.RolloutSucceeded, fmt.Sprintf("%s took all traffic and stayed healthy (success rate%s %s, p99 %v)",
			r.To, views[judged].where, percent(t.SuccessRate()), t.P99.Round(time.Millisecond))), true
	}
	r.Step++
	r.Since = now
	r.Message = ""
	return r, true
}

// Window is the window a progressing rollout's traffic is judged over at
// now: the step so far (at least registry.MinRolloutInterval, three of
// the sidecars' reports), at most its interval.
func Window(r registry.Rollout, now time.Time) time.Duration {
	return min(max(now.Sub(r.Since), registry.MinRolloutInterval), r.Interval)
}

func end(r registry.Rollout, now time.Time, state, msg string) registry.Rollout {
	r.State, r.Message, r.Since = state, msg, now
	return r
}

func percent(f float64) string { return fmt.Sprintf("%.1f %%", f*100) }

// Runner judges every progressing rollout every tick, and stops the
// version that lost of those that ended asking for it (Rollout.Retire).
type Runner struct {
	reg    registry.Registry
	stats  *stats.Store
	retire Retirer
	log    *slog.Logger
	now    func() time.Time
	splits atomic.Pointer[[]registry.Split]

	// handled are the retirements done, or that the retirer had nothing
	// to stop for (by service, namespace, version and end): not tried
	// again (the splits observed may not show them done yet).
	handled map[retirement]bool
	// failed is the last error of each retirement that failed, so that a
	// failure is logged once, not every tick.
	failed map[retirement]string
}

// Retirer stops the instances of a version of a service (the runtime's
// Kill); stopped is false, with no error, when it runs none of them.
type Retirer func(ctx context.Context, namespace, service, version string) (stopped bool, err error)

type retirement struct {
	namespace, service, version string
	ended                       time.Time
}

// NewRunner returns a runner writing to reg, reading stats, stopping
// versions with retire (nil: none are stopped).
func NewRunner(reg registry.Registry, st *stats.Store, retire Retirer, log *slog.Logger) *Runner {
	return &Runner{reg: reg, stats: st, retire: retire, log: log.With("component", "rollout"), now: time.Now,
		handled: map[retirement]bool{}, failed: map[retirement]string{}}
}

// Observe gives the runner the registry's splits (each snapshot's).
func (r *Runner) Observe(splits []registry.Split) { r.splits.Store(&splits) }

// Run checks the rollouts every tick until ctx ends.
func (r *Runner) Run(ctx context.Context, tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.Check(ctx)
		}
	}
}

// Check judges each progressing rollout once and writes those that move.
func (r *Runner) Check(ctx context.Context) {
	p := r.splits.Load()
	if p == nil {
		return
	}
	now := r.now()
	pending := map[retirement]bool{}
	for _, sp := range *p {
		ro := sp.Rollout
		if ro != nil && ro.State != registry.RolloutProgressing && ro.Retire && ro.Retired.IsZero() {
			pending[retirementOf(sp)] = true
			if now.Sub(ro.Since) >= registry.RetireAfter {
				r.retireLoser(ctx, sp)
			}
		}
		if ro == nil || ro.State != registry.RolloutProgressing {
			continue
		}
		svc, window := sp.Service+"."+sp.Namespace, Window(*ro, now)
		next, changed := Next(*ro, Canary{Callers: r.stats.Destination(window, svc+"|"+ro.To), Own: r.stats.Version(window, svc, ro.To)}, now)
		if !changed {
			continue
		}
		prev := sp
		next.Clamp()
		sp.Rollout = &next
		sp.Versions = next.Shares()
		// Only over the split judged: an operator's split set (or abort)
		// since then stands, and the next tick judges what is there.
		if err := r.reg.SetSplitIf(ctx, sp, &prev); err != nil {
			if errors.Is(err, registry.ErrChanged) {
				r.log.Info("the split changed while its rollout was judged: judging it again", "service", sp.Service, "namespace", sp.Namespace)
			} else {
				r.log.Error("moving a rollout on", "service", sp.Service, "namespace", sp.Namespace, "err", err)
			}
			continue
		}
		attrs := []any{"service", sp.Service, "namespace", sp.Namespace, "shares", registry.Shares(sp.Versions)}
		if next.Message != "" {
			attrs = append(attrs, "message", next.Message)
		}
		switch next.State {
		case registry.RolloutRolledBack:
			r.log.Warn("rollout rolled back", attrs...)
		case registry.RolloutSucceeded:
			r.log.Info("rollout succeeded", attrs...)
		default:
			r.log.Info("rollout step", append(attrs, "step", next.Step+1, "of", len(next.Steps))...)
		}
	}
	// What is remembered of retirements no split asks for any more (noted
	// done, or the split changed) is forgotten.
	for k := range r.handled {
		if !pending[k] {
			delete(r.handled, k)
		}
	}
	for k := range r.failed {
		if !pending[k] {
			delete(r.failed, k)
		}
	}
}

// retirementOf is the retirement an ended rollout of sp asks for.
func retirementOf(sp registry.Split) retirement {
	return retirement{sp.Namespace, sp.Service, sp.Rollout.Loser(), sp.Rollout.Since}
}

// retireLoser stops the version that lost sp's rollout, and notes when
// in the rollout.
func (r *Runner) retireLoser(ctx context.Context, sp registry.Split) {
	ro := sp.Rollout
	key := retirementOf(sp)
	if r.retire == nil || r.handled[key] {
		return
	}
	log := r.log.With("service", sp.Service, "namespace", sp.Namespace, "version", key.version)
	stopped, err := r.retire(ctx, sp.Namespace, sp.Service, key.version)
	if err != nil {
		if r.failed[key] != err.Error() {
			log.Error("stopping the version that lost the rollout (tried again every tick)", "err", err)
			r.failed[key] = err.Error()
		}
		return
	}
	delete(r.failed, key)
	r.handled[key] = true
	if !stopped {
		// Not the runtime's: left as it is, by whoever runs it.
		log.Info("the version that lost the rollout is not run by this server's runtime: left running")
		return
	}
	next := *ro
	next.Retired = r.now()
	next.Message = strings.TrimSuffix(next.Message, ".") + "; " + key.version + "'s instances stopped"
	prev := sp
	sp.Rollout = &next
	if err := r.reg.SetSplitIf(ctx, sp, &prev); err != nil {
		// Stopped all the same, though not noted (the split changed
		// meanwhile, or the registry is away).
		log.Warn("noting that the version that lost the rollout was stopped", "err", err)
		return
	}
	log.Info("stopped the version that lost the rollout")
}

// From is the version a rollout of service.ns to `to` starts from when
// none is named (meshctl rollout start, the dashboard): the one with the largest share of the service's split, else the
// only other version with instances.
func From(service, ns, to string, resp *registryv1.ListServicesResponse) (string, error) {
	for _, sp := range resp.GetSplits() {
		if sp.GetService() == service && sp.GetNamespace() == ns {
			best := ""
			var most uint32
			for _, v := range sp.GetVersions() {
				if v.GetVersion() != to && v.GetWeight() > most {
					best, most = v.GetVersion(), v.GetWeight()
				}
			}
			if best != "" {
				return best, nil
			}
		}
	}
	others := map[string]bool{}
	for _, svc := range resp.GetServices() {
		if svc.GetName() == service && svc.GetNamespace() == ns {
			for _, in := range svc.GetInstances() {
				if v := in.GetVersion(); v != to && v != "" {
					others[v] = true
				}
			}
		}
	}
	if len(others) == 1 {
		for v := range others {
			return v, nil
		}
	}
	if len(others) == 0 {
		return "", noOtherVersion(fmt.Sprintf("%s.%s runs no version besides %s to move traffic from: name it with --from", service, ns, to))
	}
	return "", fmt.Errorf("%s.%s runs %d other versions: name the one traffic moves from with --from", service, ns, len(others))
}

// ErrNoOtherVersion is what From answers (errors.Is) when the service
// runs no version but the new one: a first version, with nothing to roll
// out from.
var ErrNoOtherVersion = errors.New("no other version")

type noOtherVersion string

func (e noOtherVersion) Error() string        { return string(e) }
func (e noOtherVersion) Is(target error) bool { return target == ErrNoOtherVersion }
