package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/controlplane/rollout"
	"github.com/micromesh/micromesh/controlplane/stats"
	"github.com/micromesh/micromesh/identity"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
	statsv1 "github.com/micromesh/micromesh/proto/stats/v1"
)

func newRolloutCommand(g *globalOptions, s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Move a service's traffic to a new version step by step, back at the first sign of trouble",
		Long: `Move a service's traffic from one version to another in steps (a progressive
canary): the control plane gives the new version each step's share of
requests, judges it by its callers' reports (success rate, p99 latency)
and takes the next step when a step has run its interval healthy — or sends
all traffic back to the old version as soon as a threshold is crossed. The
rollout is kept with the service's split: it goes on across restarts of the
control plane. meshctl split set during a rollout replaces it.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newRolloutStartCommand(g, s), newRolloutStatusCommand(g, s), newRolloutAbortCommand(g, s))
	return cmd
}

type rolloutStartOptions struct {
	namespace, controlPlane string
	from, to                string
	steps                   string
	interval                time.Duration
	minSuccess              string
	maxP99                  time.Duration
	minRequests             uint32
	deadline                time.Duration
	retire                  bool
}

// parseSteps reads --steps: the new version's shares, "10,25,50,100".
func parseSteps(s string) ([]uint32, error) {
	var out []uint32
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(f), "%"), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--steps %q: want the new version's shares in percent, rising to 100, e.g. 10,25,50,100", s)
		}
		out = append(out, uint32(n))
	}
	return out, nil
}

// parsePercent reads "99", "99%" or "99.5 %" as a fraction.
func parsePercent(flag, s string) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(s), "%")), 64)
	if err != nil || f < 0 || f > 100 {
		return 0, fmt.Errorf("--%s %q: want a percentage, 0-100 (e.g. 99.5)", flag, s)
	}
	return f / 100, nil
}

func newRolloutStartCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &rolloutStartOptions{}
	cmd := &cobra.Command{
		Use:   "start SERVICE --to VERSION",
		Short: "Start moving a service's traffic to a new version",
		Args:  cobra.ExactArgs(1),
		Example: `  meshctl run --version v2 examples/helloworld     # the new version beside v1
  meshctl rollout start helloworld --to v2          # 10, 25, 50, 100 %, a minute each, ≥ 99 % success
  meshctl rollout start helloworld --from v1 --to v2 --steps 5,50,100 --interval 5m --max-p99 300ms
  meshctl rollout start helloworld --to v2 --deadline 10m   # back to v1 if a step gets too few calls to judge
  meshctl rollout status helloworld`,
		RunE: func(cmd *cobra.Command, args []string) error {
			service := args[0]
			if err := identity.ValidateName("service name", service); err != nil {
				return err
			}
			steps, err := parseSteps(o.steps)
			if err != nil {
				return err
			}
			minSuccess, err := parsePercent("min-success", o.minSuccess)
			if err != nil {
				return err
			}
			if o.to == "" {
				return fmt.Errorf("name the version to roll out with --to (one started with meshctl run --version)")
			}
			out, err := changeRollout(cmd.Context(), g, o.controlPlane, func(ctx context.Context, client registryv1.RegistryServiceClient) (*registryv1.Split, error) {
				from := o.from
				if from == "" {
					resp, err := client.ListServices(ctx, &registryv1.ListServicesRequest{Namespace: o.namespace})
					if err != nil {
						return nil, err
					}
					if from, err = rollout.From(service, o.namespace, o.to, resp); err != nil {
						return nil, err
					}
				}
				r := &registryv1.Rollout{From: from, To: o.to, Steps: steps, Interval: durationpb.New(o.interval),
					MinSuccessRate: proto.Float64(minSuccess), MinRequests: proto.Uint32(o.minRequests), Retire: o.retire}
				if o.maxP99 > 0 {
					r.MaxP99 = durationpb.New(o.maxP99)
				}
				if o.deadline > 0 {
					r.Deadline = durationpb.New(o.deadline)
				}
				resp, err := client.StartRollout(ctx, &registryv1.StartRolloutRequest{Service: service, Namespace: o.namespace, Rollout: r})
				return resp.GetSplit(), err
			})
			if err != nil {
				return err
			}
			return render(s.Out, g.output, out, func() string {
				return fmt.Sprintf("rollout of %s.%s started: %s\n%s", out.Service, out.Namespace, out.Shares, describeRollout(out))
			})
		},
	}
	targetFlags(cmd, &o.namespace, &o.controlPlane)
	f := cmd.Flags()
	f.StringVar(&o.to, "to", "", "the version to move traffic to (required)")
	f.StringVar(&o.from, "from", "", "the version traffic moves from (default: the one that has it now)")
	f.StringVar(&o.steps, "steps", "10,25,50,100", "the new version's shares, in percent, rising to 100")
	f.DurationVar(&o.interval, "interval", time.Minute, "how long each step runs before the next (30s-1h)")
	f.StringVar(&o.minSuccess, "min-success", "99", "the lowest success rate of the new version's requests, in percent")
	f.DurationVar(&o.maxP99, "max-p99", 0, "the highest p99 latency of the new version's requests (default: none)")
	f.Uint32Var(&o.minRequests, "min-requests", 20, "how many requests to the new version a step needs before it is judged")
	f.DurationVar(&o.deadline, "deadline", 0, "roll back when a step still lacks the requests it needs this long past its interval (30s-24h; default: wait as long as it takes)")
	f.BoolVar(&o.retire, "retire", false, "when it ends, stop the instances of the version that lost (the old one if it succeeds, the new one if not) 30s after, where the server's runtime runs them")
	return cmd
}

// changeRollout calls the registry as change does and answers the split
// it returns as a rollout.
func changeRollout(ctx context.Context, g *globalOptions, controlPlane string, change func(context.Context, registryv1.RegistryServiceClient) (*registryv1.Split, error)) (rolloutOutput, error) {
	var sp *registryv1.Split
	err := withAdmin(ctx, g, controlPlane, func(ctx context.Context, conn *grpc.ClientConn) error {
		var err error
		sp, err = change(ctx, registryv1.NewRegistryServiceClient(conn))
		return err
	})
	if err != nil {
		return rolloutOutput{}, err
	}
	return rolloutOf(sp), nil
}

// rolloutOutput is a rollout as meshctl shows it.
type rolloutOutput struct {
	Service     string    `json:"service"`
	Namespace   string    `json:"namespace"`
	Shares      string    `json:"shares"`
	From        string    `json:"from"`
	To          string    `json:"to"`
	Steps       []uint32  `json:"steps"`
	Step        uint32    `json:"step"`
	Since       time.Time `json:"since"`
	Interval    string    `json:"interval"`
	MinSuccess  float64   `json:"min_success_rate"`
	MaxP99      string    `json:"max_p99,omitempty"`
	MinRequests uint32    `json:"min_requests"`
	Deadline    string    `json:"deadline,omitempty"`
	State       string    `json:"state"`
	Message     string    `json:"message,omitempty"`
	// Retire: the version that lost is stopped 30 s after the end;
	// Retired: when it was.
	Retire  bool       `json:"retire,omitempty"`
	Retired *time.Time `json:"retired,omitempty"`
	// Canary is how the new version is doing now, as its callers and its
	// own sidecars report (a rollout in progress, in meshctl rollout
	// status).
	Canary *canaryJSON `json:"canary,omitempty"`
}

// canaryJSON is a rollout's new version's calls over the window its step
// is judged on, as its callers' built-in sidecars reported them (every
// caller's added up, p99 the slowest caller's) and as its own did (Own:
// Envoy sidecars' and proxyless clients' calls too).
type canaryJSON struct {
	Window string `json:"window"`
	canaryTraffic
	Own canaryTraffic `json:"own"`
}

type canaryTraffic struct {
	Requests    uint64  `json:"requests"`
	Failures    uint64  `json:"failures"`
	SuccessRate float64 `json:"success_rate"`
	P99         string  `json:"p99,omitempty"`
}

func (c *canaryTraffic) set(requests, failures uint64, p99 time.Duration) {
	c.Requests, c.Failures = requests, failures
	if requests > 0 {
		c.SuccessRate = 1 - float64(failures)/float64(requests)
		c.P99 = p99.Round(100 * time.Microsecond).String()
	}
}

// canaryNow reads the stats API for the calls to a rollout's new version
// (its cluster, "name.namespace|version") over the window the control
// plane judges the step on.
func canaryNow(ctx context.Context, conn *grpc.ClientConn, sp *registryv1.Split) (*canaryJSON, error) {
	ro := sp.GetRollout()
	// The runner's window, within what the stats API answers.
	window := min(rollout.Window(registry.Rollout{Since: ro.GetSince().AsTime(), Interval: ro.GetInterval().AsDuration()}, time.Now()), stats.MaxWindow)
	resp, err := statsv1.NewStatsServiceClient(conn).GetStats(ctx, &statsv1.GetStatsRequest{Namespace: sp.GetNamespace(), Service: sp.GetService(), Window: durationpb.New(window)})
	if err != nil {
		return nil, err
	}
	c := &canaryJSON{Window: window.Round(time.Second).String()}
	svc := sp.GetService() + "." + sp.GetNamespace()
	var requests, failures uint64
	var p99 time.Duration
	for _, e := range resp.GetEdges() {
		if e.GetDestination() == svc+"|"+ro.GetTo() {
			requests += e.GetTraffic().GetRequests()
			failures += e.GetTraffic().GetFailures()
			p99 = max(p99, e.GetTraffic().GetP99().AsDuration())
		}
	}
	c.set(requests, failures, p99)
	for _, s := range resp.GetServices() {
		for _, v := range s.GetVersions() {
			if s.GetService() == svc && v.GetVersion() == ro.GetTo() {
				t := v.GetTraffic()
				c.Own.set(t.GetRequests(), t.GetFailures(), t.GetP99().AsDuration())
			}
		}
	}
	return c, nil
}

func rolloutOf(sp *registryv1.Split) rolloutOutput {
	r := sp.GetRollout()
	out := rolloutOutput{Service: sp.GetService(), Namespace: sp.GetNamespace(), Shares: registry.Shares(registry.WeightsOf(sp.GetVersions())), From: r.GetFrom(), To: r.GetTo(),
		Steps: r.GetSteps(), Step: r.GetStep(), Since: r.GetSince().AsTime(), Interval: r.GetInterval().AsDuration().String(),
		MinSuccess: r.GetMinSuccessRate(), MinRequests: r.GetMinRequests(), State: r.GetState(), Message: r.GetMessage(), Retire: r.GetRetire()}
	if r.GetRetired() != nil {
		t := r.GetRetired().AsTime()
		out.Retired = &t
	}
	if r.GetMaxP99() != nil {
		out.MaxP99 = r.GetMaxP99().AsDuration().String()
	}
	if r.GetDeadline() != nil {
		out.Deadline = r.GetDeadline().AsDuration().String()
	}
	return out
}

// describeRollout says where a rollout is and what it asks of the new
// version.
func describeRollout(r rolloutOutput) string {
	var b strings.Builder
	switch r.State {
	case registry.RolloutProgressing:
		share := uint32(0)
		if int(r.Step) < len(r.Steps) {
			share = r.Steps[r.Step]
		}
		fmt.Fprintf(&b, "  %s → %s: step %d of %d (%s at %d %%) since %s, %s a step\n", r.From, r.To, r.Step+1, len(r.Steps), r.To, share,
			r.Since.Local().Format("15:04:05"), r.Interval)
	default:
		fmt.Fprintf(&b, "  %s → %s: %s at %s\n", r.From, r.To, r.State, r.Since.Local().Format("2006-01-02 15:04:05"))
	}
	cond := fmt.Sprintf("success ≥ %s", strconv.FormatFloat(r.MinSuccess*100, 'f', -1, 64)+" %")
	if r.MaxP99 != "" {
		cond += ", p99 ≤ " + r.MaxP99
	}
	fmt.Fprintf(&b, "  asks of %s: %s, judged on ≥ %d requests", r.To, cond, r.MinRequests)
	if r.Deadline != "" {
		fmt.Fprintf(&b, " (rolled back if a step lacks them %s past its interval)", r.Deadline)
	}
	b.WriteString("\n")
	switch {
	case r.Retired != nil:
		fmt.Fprintf(&b, "  retired: the version that lost stopped at %s\n", r.Retired.Local().Format("15:04:05"))
	case r.Retire && r.State == registry.RolloutProgressing:
		fmt.Fprintf(&b, "  retires: the version that loses is stopped %v after the end\n", registry.RetireAfter)
	case r.Retire:
		fmt.Fprintf(&b, "  retires: %s is stopped at %s (if the server's runtime runs it)\n", loser(r), r.Since.Add(registry.RetireAfter).Local().Format("15:04:05"))
	}
	if c := r.Canary; c != nil {
		switch {
		case c.Requests == 0 && c.Own.Requests == 0:
			fmt.Fprintf(&b, "  now: no calls to %s reported in the last %s\n", r.To, c.Window)
		case c.Requests == 0:
			fmt.Fprintf(&b, "  now: no calls to %s reported by its callers in the last %s\n", r.To, c.Window)
		default:
			fmt.Fprintf(&b, "  now: %d calls to %s in the last %s, %s success, p99 %s (the slowest caller's)\n", c.Requests, r.To, c.Window,
				strconv.FormatFloat(c.SuccessRate*100, 'f', 1, 64)+" %", c.P99)
		}
		if c.Own.Requests > 0 {
			fmt.Fprintf(&b, "       at %s's own sidecars: %d calls, %s success, p99 %s\n", r.To, c.Own.Requests,
				strconv.FormatFloat(c.Own.SuccessRate*100, 'f', 1, 64)+" %", c.Own.P99)
		}
	}
	if r.Message != "" {
		fmt.Fprintf(&b, "  %s\n", r.Message)
	}
	return b.String()
}

// loser is the version an ended rollout leaves without traffic.
func loser(r rolloutOutput) string {
	ro := registry.Rollout{From: r.From, To: r.To, State: r.State}
	return ro.Loser()
}

func newRolloutStatusCommand(g *globalOptions, s Streams) *cobra.Command {
	var namespace, controlPlane string
	var watch bool
	cmd := &cobra.Command{
		Use:   "status [SERVICE]",
		Short: "Show the rollouts of a namespace's services, in progress or ended",
		Long: `Show the rollouts of a namespace's services, in progress or ended: where
each is, what it asks of the new version, how the new version is doing now.
With --watch and a service, follow its rollout until it ends: each step and
change is printed as it happens, and the command fails unless the rollout
succeeded (for a pipeline: meshctl rollout start ... && meshctl rollout
status S --watch).`,
		Args:    cobra.MaximumNArgs(1),
		Example: "  meshctl rollout status\n  meshctl rollout status helloworld -o json\n  meshctl rollout status helloworld --watch",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if err := identity.ValidateName("service name", args[0]); err != nil {
					return err
				}
			} else if watch {
				return fmt.Errorf("--watch follows one service's rollout: name the service")
			}
			service := ""
			if len(args) == 1 {
				service = args[0]
			}
			outs, err := listRollouts(cmd.Context(), g, controlPlane, namespace, service)
			if err != nil {
				return err
			}
			if service != "" && len(outs) == 0 {
				return fmt.Errorf("%s.%s has no rollout: start one with meshctl rollout start %s --to VERSION", service, namespace, service)
			}
			if watch {
				return watchRollout(cmd.Context(), g, s, controlPlane, outs[0])
			}
			return render(s.Out, g.output, outs, func() string {
				if len(outs) == 0 {
					return fmt.Sprintf("no rollouts in namespace %s\n", namespace)
				}
				var b strings.Builder
				for _, r := range outs {
					fmt.Fprintf(&b, "%s.%s: %s (%s)\n%s", r.Service, r.Namespace, r.State, r.Shares, describeRollout(r))
				}
				return b.String()
			})
		},
	}
	targetFlags(cmd, &namespace, &controlPlane)
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "follow the service's rollout until it ends; fail unless it succeeded")
	return cmd
}

// listRollouts reads the rollouts of namespace's services (or service's),
// with the new version's calls now for those in progress.
func listRollouts(ctx context.Context, g *globalOptions, controlPlane, namespace, service string) ([]rolloutOutput, error) {
	var outs []rolloutOutput
	err := withAdmin(ctx, g, controlPlane, func(ctx context.Context, conn *grpc.ClientConn) error {
		resp, err := registryv1.NewRegistryServiceClient(conn).ListServices(ctx, &registryv1.ListServicesRequest{Namespace: namespace})
		if err != nil {
			return err
		}
		for _, sp := range resp.GetSplits() {
			if sp.GetRollout() != nil && (service == "" || sp.GetService() == service) {
				r := rolloutOf(sp)
				if r.State == registry.RolloutProgressing {
					if r.Canary, err = canaryNow(ctx, conn, sp); err != nil {
						return err
					}
				}
				outs = append(outs, r)
			}
		}
		return nil
	})
	return outs, err
}

// rolloutWatchEvery is how often --watch looks: the control plane judges
// every 2 s.
var rolloutWatchEvery = 2 * time.Second

// watchRollout prints r's state, then each change of its step, state or
// message, until it ends: nil if it succeeded, an error saying how it
// ended otherwise. -o json: one object per change.
func watchRollout(ctx context.Context, g *globalOptions, s Streams, controlPlane string, r rolloutOutput) error {
	show := func(r rolloutOutput) error {
		return render(s.Out, g.output, r, func() string {
			return fmt.Sprintf("%s %s.%s: %s (%s)\n%s", time.Now().Format("15:04:05"), r.Service, r.Namespace, r.State, r.Shares, describeRollout(r))
		})
	}
	if err := show(r); err != nil {
		return err
	}
	last := r
	for r.State == registry.RolloutProgressing {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(rolloutWatchEvery):
		}
		outs, err := listRollouts(ctx, g, controlPlane, r.Namespace, r.Service)
		if err != nil {
			return err
		}
		if len(outs) == 0 {
			return fmt.Errorf("the rollout of %s.%s is gone: its split was cleared", r.Service, r.Namespace)
		}
		r = outs[0]
		if r.Step != last.Step || r.State != last.State || r.Message != last.Message || !r.Since.Equal(last.Since) {
			if err := show(r); err != nil {
				return err
			}
			last = r
		}
	}
	if r.State != registry.RolloutSucceeded {
		return fmt.Errorf("the rollout of %s.%s %s: %s", r.Service, r.Namespace, r.State, r.Message)
	}
	return nil
}

func newRolloutAbortCommand(g *globalOptions, s Streams) *cobra.Command {
	var namespace, controlPlane string
	cmd := &cobra.Command{
		Use:     "abort SERVICE",
		Short:   "Stop a service's rollout and send all its traffic back to the old version",
		Args:    cobra.ExactArgs(1),
		Example: "  meshctl rollout abort helloworld",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := identity.ValidateName("service name", args[0]); err != nil {
				return err
			}
			out, err := changeRollout(cmd.Context(), g, controlPlane, func(ctx context.Context, client registryv1.RegistryServiceClient) (*registryv1.Split, error) {
				resp, err := client.AbortRollout(ctx, &registryv1.AbortRolloutRequest{Service: args[0], Namespace: namespace})
				return resp.GetSplit(), err
			})
			if err != nil {
				return err
			}
			return render(s.Out, g.output, out, func() string {
				return fmt.Sprintf("rollout of %s.%s aborted: %s\n", out.Service, out.Namespace, out.Shares)
			})
		},
	}
	targetFlags(cmd, &namespace, &controlPlane)
	return cmd
}
