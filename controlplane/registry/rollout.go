package registry

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/micromesh/micromesh/identity"
)

// Rollout moves a service's traffic from one version to another in steps
// while the new one stays healthy (a progressive canary, as Flagger or
// Argo Rollouts do it): the control plane shifts each step's share to it
// when a step has run its interval with enough requests and none of the
// thresholds crossed, and sends everything back to the old version as
// soon as one is. It is kept with the service's split, whose shares it
// sets, so it survives a restart of the control plane and goes with the
// split to every control plane of a Consul-backed mesh.
type Rollout struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Steps are To's shares, in percent, rising, the last 100.
	Steps []uint32 `json:"steps"`
	// Step is the index of the step in force; Since when it began.
	Step  int       `json:"step"`
	Since time.Time `json:"since"`
	// Interval is how long each step runs before the next.
	Interval time.Duration `json:"interval"`
	// MinSuccess is the lowest success rate of To's requests (0-1);
	// MaxP99 the highest p99 latency (0: none); MinRequests how many
	// requests to To a step needs before it is judged.
	MinSuccess  float64       `json:"min_success"`
	MaxP99      time.Duration `json:"max_p99,omitempty"`
	MinRequests uint32        `json:"min_requests"`
	// Deadline is how long past its interval a step may wait for the
	// requests it needs before the rollout is rolled back, all traffic
	// to From (Argo's progress deadline); 0: it waits as long as it takes.
	Deadline time.Duration `json:"deadline,omitempty"`
	// State is RolloutProgressing, RolloutSucceeded, RolloutRolledBack or
	// RolloutAborted; Message says what it waits for, or why it ended.
	State   string `json:"state"`
	Message string `json:"message,omitempty"`
	// Retire asks that, RetireAfter it ended, the runtime stop the
	// instances of the version that lost: From when it succeeded, To when
	// it was rolled back or aborted. Retired is when it did (zero: not
	// yet, or never: the version is not the runtime's).
	Retire  bool      `json:"retire,omitempty"`
	Retired time.Time `json:"retired,omitzero"`
}

// WaitingForTraffic starts the message of a rollout whose step has run
// its interval with too few calls to judge.
const WaitingForTraffic = "waiting for traffic"

// RetireAfter is how long after a rollout ends the version that lost is
// stopped (Rollout.Retire): callers' sidecars have their new shares long
// before, and the requests they had sent it have ended.
const RetireAfter = 30 * time.Second

// Loser is the version a rollout that ended leaves without traffic: From
// when it succeeded, else To ("" while it progresses).
func (r *Rollout) Loser() string {
	switch r.State {
	case RolloutProgressing:
		return ""
	case RolloutSucceeded:
		return r.From
	}
	return r.To
}

// SameSplit reports whether a and b are the same split, their rollouts
// included (times compared as instants: they may have been through JSON).
func SameSplit(a, b *Split) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Namespace != b.Namespace || a.Service != b.Service || a.Header != b.Header || !slices.Equal(a.Versions, b.Versions) {
		return false
	}
	ra, rb := a.Rollout, b.Rollout
	if ra == nil || rb == nil {
		return ra == rb
	}
	return ra.From == rb.From && ra.To == rb.To && slices.Equal(ra.Steps, rb.Steps) && ra.Step == rb.Step && ra.Since.Equal(rb.Since) &&
		ra.Interval == rb.Interval && ra.MinSuccess == rb.MinSuccess && ra.MaxP99 == rb.MaxP99 && ra.MinRequests == rb.MinRequests && ra.Deadline == rb.Deadline &&
		ra.State == rb.State && ra.Message == rb.Message && ra.Retire == rb.Retire && ra.Retired.Equal(rb.Retired)
}

// Rollout states.
const (
	RolloutProgressing = "progressing"
	RolloutSucceeded   = "succeeded"
	RolloutRolledBack  = "rolled back"
	RolloutAborted     = "aborted"
)

// Bounds of a rollout.
const (
	MinRolloutInterval = 30 * time.Second // three of the sidecars' reports (every 10 s): a window of fewer may hold none to compare
	MaxRolloutInterval = time.Hour
	MaxRolloutSteps    = 20
	MaxRolloutDeadline = 24 * time.Hour
)

// DefaultRolloutSteps are To's shares when none are given.
var DefaultRolloutSteps = []uint32{10, 25, 50, 100}

// Clamp brings a rollout kept by an earlier release within today's bounds
// (an interval since refused), so that it can be moved on or ended.
func (r *Rollout) Clamp() {
	r.Interval = min(max(r.Interval, MinRolloutInterval), MaxRolloutInterval)
}

// Shares are the split's shares at the rollout's current step (for a
// rollout that ended: all to To when it succeeded, else all to From).
func (r *Rollout) Shares() []VersionWeight {
	to := uint32(0)
	switch r.State {
	case RolloutProgressing:
		to = r.Steps[r.Step]
	case RolloutSucceeded:
		to = 100
	}
	vs := []VersionWeight{{Version: r.From, Weight: 100 - to}, {Version: r.To, Weight: to}}
	slices.SortFunc(vs, func(a, b VersionWeight) int { return strings.Compare(a.Version, b.Version) })
	return vs
}

// Validate checks a rollout of service.namespace and says what is wrong
// in terms a person can act on (ErrInvalid).
func (r *Rollout) Validate(service, namespace string) error {
	bad := func(format string, args ...any) error {
		return invalidSplit(fmt.Sprintf("the rollout of %s.%s: ", service, namespace) + fmt.Sprintf(format, args...))
	}
	for _, v := range []string{r.From, r.To} {
		if err := identity.ValidateVersion(v); err != nil {
			return bad("%v", err)
		}
	}
	if r.From == r.To {
		return bad("it goes from %s to itself; name two versions", r.From)
	}
	switch {
	case len(r.Steps) == 0:
		return bad("no steps; give the new version's shares, rising to 100 (10,25,50,100)")
	case len(r.Steps) > MaxRolloutSteps:
		return bad("%d steps; the limit is %d", len(r.Steps), MaxRolloutSteps)
	case r.Steps[len(r.Steps)-1] != 100:
		return bad("its steps end at %d %%; the last gives the new version 100 %%", r.Steps[len(r.Steps)-1])
	}
	for i, st := range r.Steps {
		if st == 0 || st > 100 || (i > 0 && st <= r.Steps[i-1]) {
			return bad("steps %v: each a share of 1-100 %%, each above the one before", r.Steps)
		}
	}
	if r.Step < 0 || r.Step >= len(r.Steps) {
		return bad("step %d of %d", r.Step, len(r.Steps))
	}
	if r.Interval < MinRolloutInterval || r.Interval > MaxRolloutInterval {
		return bad("interval %v: between %v (a step is judged on three of the sidecars' reports, one every 10 s) and %v", r.Interval, MinRolloutInterval, MaxRolloutInterval)
	}
	if r.MinSuccess < 0 || r.MinSuccess > 1 {
		return bad("a lowest success rate of %g: between 0 and 100 %%", r.MinSuccess*100)
	}
	if r.MaxP99 < 0 {
		return bad("a highest p99 of %v", r.MaxP99)
	}
	if r.Deadline != 0 && (r.Deadline < MinRolloutInterval || r.Deadline > MaxRolloutDeadline) {
		return bad("deadline %v: 0 (a step waits for traffic as long as it takes) or between %v and %v", r.Deadline, MinRolloutInterval, MaxRolloutDeadline)
	}
	switch r.State {
	case RolloutProgressing, RolloutSucceeded, RolloutRolledBack, RolloutAborted:
	default:
		return bad("state %q", r.State)
	}
	if len(r.Message) > 1024 {
		return bad("a message of %d bytes; the limit is 1024", len(r.Message))
	}
	return nil
}
