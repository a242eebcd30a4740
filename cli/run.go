package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/controlplane/rollout"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/envconfig"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
	runtimev1 "github.com/micromesh/micromesh/proto/runtime/v1"
	"github.com/micromesh/micromesh/runtime"
	"github.com/micromesh/micromesh/xds"
)

// runtimeCallTimeout bounds run and update: a cold build takes a while.
const runtimeCallTimeout = 10 * time.Minute

// withRuntime calls the runtime of the local server as the admin identity.
func withRuntime(ctx context.Context, g *globalOptions, controlPlane string, timeout time.Duration, call func(context.Context, runtimev1.RuntimeServiceClient) error) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	conn, err := adminConn(ctx, g, controlPlane)
	if err != nil {
		return err
	}
	defer conn.Close()
	return call(ctx, runtimev1.NewRuntimeServiceClient(conn))
}

type runOptions struct {
	target    serviceTarget
	name      string
	instances uint32
	env       []string
	version   string
	policy    map[string]string
	upstreams []string
	appProto  string
	rollout   bool
	watch     bool
	// --rollout-steps, --rollout-interval, --rollout-deadline
	rolloutSteps    string
	rolloutInterval time.Duration
	rolloutDeadline time.Duration
}

func newRunCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &runOptions{}
	cmd := &cobra.Command{
		Use:   "run PATH|GIT-URL[@REF] [-- ARGS...]",
		Short: "Build a service from source and run it with its own sidecar",
		Long: `Build a service from source with go build and run it on the local server:
each instance gets a certificate for its identity, a sidecar (mTLS, HTTP/3
between sidecars) and the environment the framework reads. run returns once
every instance is healthy and registered; the service keeps running, is
restarted if it crashes, and starts again with the server.

PATH is a directory with a main package; GIT-URL is cloned (file://, https://
or ssh) at REF (a branch, tag or commit) under $MESH_HOME/src.`,
		Example: `  meshctl run examples/helloworld
  meshctl run ./myservice --name orders --instances 2 --env DB_URL=postgres://...
  meshctl run file:///srv/git/orders.git@v1.2.0 -- --verbose
  meshctl run examples/helloworld --policy timeout=2s --policy '/helloworld.Greeter/SayHello:retries=0'
  meshctl run examples/helloworld --version v2   # beside the version running; then: meshctl split set helloworld ...
  meshctl run examples/helloworld --version v2 --rollout   # and move the traffic to it step by step
  meshctl run ./orders --watch   # rebuild and replace it at each save, until Ctrl-C
  meshctl run ./orders --upstream db   # the app connects to $MESH_UPSTREAM_DB: db, a TCP service, through the mesh
  meshctl run examples/kv --app-protocol tcp   # a TCP server listening on $MESH_ADDRESS`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); dash >= 0 && dash != 1 {
				return errors.New("one source, then -- and the app's arguments")
			}
			if dash := cmd.ArgsLenAtDash(); dash < 0 && len(args) > 1 {
				return fmt.Errorf("one source; the app's arguments go after --, as in: meshctl run %s -- %s", args[0], strings.Join(args[1:], " "))
			}
			src := args[0]
			if !runtime.IsGit(src) {
				if env, err := g.environment(); err != nil {
					return err
				} else if env != nil {
					return fmt.Errorf("%s is a directory of this machine; the environment is %s, remote, whose server builds what it can fetch: a git URL (https://, ssh://, or file:// of its own machine)", src, env.Name)
				}
				abs, err := filepath.Abs(src)
				if err != nil {
					return err
				}
				src = abs
			}
			if o.watch && runtime.IsGit(args[0]) {
				return fmt.Errorf("--watch follows a directory of this machine; %s changes by commits: push, then meshctl update", args[0])
			}
			if o.watch && o.rollout {
				return errors.New("--watch and --rollout: a rollout moves traffic over minutes, --watch replaces the service at each save; run --rollout, or --watch while developing")
			}
			if o.name != "" {
				if err := identity.ValidateName("--name", o.name); err != nil {
					return err
				}
			}
			ups, err := upstreamNames(o.upstreams)
			if err != nil {
				return err
			}
			var plan *rolloutPlan
			if o.rollout {
				var err error
				if plan, err = prepareRollout(cmd.Context(), g, o, src); err != nil {
					return err
				}
			}
			var resp *runtimev1.RunResponse
			err = withRuntime(cmd.Context(), g, o.target.controlPlane, runtimeCallTimeout, func(ctx context.Context, c runtimev1.RuntimeServiceClient) (err error) {
				resp, err = c.Run(ctx, &runtimev1.RunRequest{
					Name: o.name, Namespace: o.target.namespace, Source: src, Instances: o.instances,
					Env: o.env, Args: args[1:], Version: o.version, Policy: o.policy, Upstreams: ups, AppProtocol: o.appProto,
				})
				return err
			})
			if err != nil {
				plan.undo(cmd.Context(), g, o)
				return err
			}
			svc := resp.GetService()
			running := func() string {
				name := svc.GetName()
				how := fmt.Sprintf("call it: meshctl call %s <Endpoint> '{...}'   (meshctl describe %s lists them)", name, name)
				switch o.appProto {
				case "tcp":
					how = fmt.Sprintf("reach it: meshctl port-forward %s PORT, then your client to 127.0.0.1:PORT; or run a service with --upstream %s", name, name)
				case "http":
					how = fmt.Sprintf("reach it: meshctl port-forward %s PORT, then curl http://127.0.0.1:PORT/; or through the gateway, /%s/...", name, name)
				}
				return fmt.Sprintf("%s is running: %d instance(s), version %s, in namespace %s\n%s\n",
					name, len(svc.GetInstances()), svc.GetVersion(), svc.GetNamespace(), how)
			}
			if plan == nil {
				if o.watch {
					if g.output != outputJSON {
						fmt.Fprint(s.Out, running())
					}
					return watchSource(cmd.Context(), g, s, o, src, svc)
				}
				return render(s.Out, g.output, svc, running)
			}
			out := runRolloutJSON{Service: svc}
			if plan.from != "" {
				r, err := changeRollout(cmd.Context(), g, o.target.controlPlane, func(ctx context.Context, client registryv1.RegistryServiceClient) (*registryv1.Split, error) {
					r := &registryv1.Rollout{From: plan.from, To: o.version, Steps: plan.steps, Interval: durationpb.New(o.rolloutInterval), Retire: true}
					if o.rolloutDeadline > 0 {
						r.Deadline = durationpb.New(o.rolloutDeadline)
					}
					resp, err := client.StartRollout(ctx, &registryv1.StartRolloutRequest{Service: plan.name, Namespace: o.target.namespace, Rollout: r})
					return resp.GetSplit(), err
				})
				if err != nil {
					return fmt.Errorf("%s %s runs, without traffic: starting its rollout: %w (meshctl rollout start %s --to %s tries again)", plan.name, o.version, err, plan.name, o.version)
				}
				out.Rollout = &r
			}
			return render(s.Out, g.output, out, func() string {
				if out.Rollout == nil {
					return running() + fmt.Sprintf("the first version of %s: it takes all the traffic, with nothing to roll out from\n", svc.GetName())
				}
				return running() + fmt.Sprintf("rollout of %s.%s started: %s\n%sfollow it: meshctl rollout status %s --watch\n",
					out.Rollout.Service, out.Rollout.Namespace, out.Rollout.Shares, describeRollout(*out.Rollout), svc.GetName())
			})
		},
	}
	o.target.flags(cmd)
	f := cmd.Flags()
	f.StringVar(&o.name, "name", "", "service name (default: the source's directory or repository name)")
	f.Uint32Var(&o.instances, "instances", 1, "instances to run")
	f.StringArrayVar(&o.env, "env", nil, "environment variable for the app, KEY=VALUE (repeatable)")
	f.StringVar(&o.version, "version", "", "version, registered with each instance (what meshctl split names; default: the git commit, or the build's hash); run with another --version, a service runs beside its running version")
	f.BoolVar(&o.rollout, "rollout", false, "with --version: run it without traffic beside the version running, then move the traffic to it in steps while it stays healthy (as meshctl rollout start: ≥ 99 % success on ≥ 20 requests a step), and stop the version that lost 30s after the rollout ends")
	f.StringVar(&o.rolloutSteps, "rollout-steps", "10,25,50,100", "with --rollout: the new version's shares, in percent, rising to 100")
	f.DurationVar(&o.rolloutInterval, "rollout-interval", time.Minute, "with --rollout: how long each step runs before the next (30s-1h)")
	f.DurationVar(&o.rolloutDeadline, "rollout-deadline", 0, "with --rollout: roll back when a step still lacks the requests it needs this long past its interval (30s-24h; default: wait as long as it takes)")
	f.BoolVar(&o.watch, "watch", false, "then keep watching the source directory: each change rebuilds the service (regenerating its .proto files' Go first when one changed) and replaces its instances one by one; a build that fails leaves the running version; Ctrl-C stops watching, the service keeps running")
	f.StringVar(&o.appProto, "app-protocol", "grpc", "what the app speaks on $MESH_ADDRESS: grpc (a service of the framework), http (HTTP/1.1), or tcp (its own protocol, as a database: callers reach it with --upstream)")
	f.StringArrayVar(&o.upstreams, "upstream", nil, "a TCP service the app reaches (SERVICE or SERVICE.NAMESPACE; repeatable, or comma-separated): each instance's sidecar takes it on a loopback port, which the app reads from $MESH_UPSTREAM_<SERVICE> (docs/tcp.md)")
	f.StringToStringVar(&o.policy, "policy", nil, "traffic policy — what the service's callers apply (fault_* injects faults into their calls), and rate_limit (requests/s) each instance enforces —, key=value, repeatable (keys: "+strings.Join(policyKeys(), ", ")+"); PATH:key=value for the requests of one path, PATH* for a prefix ("+strings.Join(xds.PathPolicyKeys(), ", ")+")")
	return cmd
}

func newStatusCommand(g *globalOptions, s Streams) *cobra.Command {
	t := &serviceTarget{}
	var all bool
	cmd := &cobra.Command{
		Use:     "status [SERVICE]",
		Short:   "List the services the runtime runs: version, source, instances ready, status",
		Args:    cobra.MaximumNArgs(1),
		Example: "  meshctl status\n  meshctl status helloworld -o json\n  meshctl status --all-namespaces",
		RunE: func(cmd *cobra.Command, args []string) error {
			ns := t.namespace
			if all {
				ns = ""
			}
			var resp *runtimev1.StatusResponse
			err := withRuntime(cmd.Context(), g, t.controlPlane, adminCallTimeout, func(ctx context.Context, c runtimev1.RuntimeServiceClient) (err error) {
				resp, err = c.Status(ctx, &runtimev1.StatusRequest{Namespace: ns})
				return err
			})
			if err != nil {
				return err
			}
			svcs := resp.GetServices()
			if len(args) == 1 {
				var one []*runtimev1.Service
				for _, svc := range svcs {
					if svc.GetName() == args[0] {
						one = append(one, svc)
					}
				}
				if len(one) == 0 {
					return fmt.Errorf("%s is not running in namespace %s", args[0], t.namespace)
				}
				svcs = one
			}
			if svcs == nil {
				svcs = []*runtimev1.Service{}
			}
			return render(s.Out, g.output, svcs, func() string { return renderStatus(svcs, time.Now(), len(args) == 1) })
		},
	}
	t.flags(cmd)
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "every namespace")
	return cmd
}

func renderStatus(svcs []*runtimev1.Service, now time.Time, detail bool) string {
	if len(svcs) == 0 {
		return "no services run; start one with: meshctl run PATH\n"
	}
	var rows [][]string
	for _, svc := range svcs {
		ready := 0
		for _, in := range svc.GetInstances() {
			if in.GetReady() {
				ready++
			}
		}
		name := svc.GetName()
		if svc.GetNamespace() != identity.DefaultNamespace {
			name += "." + svc.GetNamespace()
		}
		rows = append(rows, []string{name, svc.GetVersion(), svc.GetSource(),
			fmt.Sprintf("%d/%d", ready, len(svc.GetInstances())), svc.GetStatus(), ago(svc.GetUpdated(), now)})
	}
	out := table([]string{"NAME", "VERSION", "SOURCE", "INSTANCES", "STATUS", "UPDATED"}, rows)
	var b strings.Builder
	b.WriteString(out)
	for _, svc := range svcs {
		for _, in := range svc.GetInstances() {
			if !detail && in.GetStatus() == "running" {
				continue
			}
			fmt.Fprintf(&b, "\n%s: %s, pid %d (sidecar %d), %d restart(s)", in.GetId(), in.GetStatus(), in.GetAppPid(), in.GetSidecarPid(), in.GetRestarts())
			if in.GetLastExit() != nil {
				fmt.Fprintf(&b, ", last exit code %d %s", in.GetLastExitCode(), ago(in.GetLastExit(), now))
			}
			b.WriteString("\n")
			for _, l := range in.GetLastLines() {
				b.WriteString("  | " + l + "\n")
			}
		}
	}
	return b.String()
}

// ago says how long ago t was, coarsely.
func ago(t *timestamppb.Timestamp, now time.Time) string {
	if t == nil {
		return "-"
	}
	d := now.Sub(t.AsTime())
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s ago"
	case d < time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m ago"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Hours())) + "h ago"
	default:
		return strconv.Itoa(int(d.Hours()/24)) + "d ago"
	}
}

func newKillCommand(g *globalOptions, s Streams) *cobra.Command {
	t := &serviceTarget{}
	var version string
	cmd := &cobra.Command{
		Use:     "kill SERVICE",
		Short:   "Stop a service: deregister, drain, stop each app, then its sidecar",
		Args:    cobra.ExactArgs(1),
		Example: "  meshctl kill helloworld\n  meshctl kill helloworld --version v1   # one of the versions running side by side",
		RunE: func(cmd *cobra.Command, args []string) error {
			err := withRuntime(cmd.Context(), g, t.controlPlane, runtimeCallTimeout, func(ctx context.Context, c runtimev1.RuntimeServiceClient) error {
				_, err := c.Kill(ctx, &runtimev1.KillRequest{Name: args[0], Namespace: t.namespace, Version: version})
				return err
			})
			if err != nil {
				return err
			}
			return render(s.Out, g.output, map[string]string{"killed": args[0], "namespace": t.namespace, "version": version}, func() string {
				if version != "" {
					return args[0] + " " + version + " stopped\n"
				}
				return args[0] + " stopped\n"
			})
		},
	}
	t.flags(cmd)
	cmd.Flags().StringVar(&version, "version", "", "which version, when several run side by side")
	return cmd
}

func newScaleCommand(g *globalOptions, s Streams) *cobra.Command {
	t := &serviceTarget{}
	var version string
	cmd := &cobra.Command{
		Use:   "scale SERVICE INSTANCES",
		Short: "Run more or fewer instances of a service",
		Long: `Set how many instances of a service run (1 to 16), from the build it runs:
new instances are healthy and registered before scale returns; extra ones
are deregistered, drained and stopped, the newest first, so callers see no
failed request. The count stays across restarts of the server.`,
		Args:    cobra.ExactArgs(2),
		Example: "  meshctl scale helloworld 3\n  meshctl scale helloworld 1 --version v1   # one of the versions running side by side",
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.ParseUint(args[1], 10, 32)
			if err != nil || n < 1 || n > 16 {
				return fmt.Errorf("INSTANCES %q: a number from 1 to 16 (meshctl kill %s stops it)", args[1], args[0])
			}
			var resp *runtimev1.ScaleResponse
			err = withRuntime(cmd.Context(), g, t.controlPlane, runtimeCallTimeout, func(ctx context.Context, c runtimev1.RuntimeServiceClient) (err error) {
				resp, err = c.Scale(ctx, &runtimev1.ScaleRequest{Name: args[0], Namespace: t.namespace, Version: version, Instances: uint32(n)})
				return err
			})
			if err != nil {
				return err
			}
			svc := resp.GetService()
			return render(s.Out, g.output, svc, func() string {
				return fmt.Sprintf("%s scaled: %d instance(s)\n", svc.GetName(), len(svc.GetInstances()))
			})
		},
	}
	t.flags(cmd)
	cmd.Flags().StringVar(&version, "version", "", "which version, when several run side by side")
	return cmd
}

func newUpdateCommand(g *globalOptions, s Streams) *cobra.Command {
	t := &serviceTarget{}
	var version string
	cmd := &cobra.Command{
		Use:     "update SERVICE",
		Short:   "Rebuild a service from its source and replace its instances one by one",
		Args:    cobra.ExactArgs(1),
		Example: "  meshctl update helloworld",
		RunE: func(cmd *cobra.Command, args []string) error {
			var resp *runtimev1.UpdateResponse
			err := withRuntime(cmd.Context(), g, t.controlPlane, runtimeCallTimeout, func(ctx context.Context, c runtimev1.RuntimeServiceClient) (err error) {
				resp, err = c.Update(ctx, &runtimev1.UpdateRequest{Name: args[0], Namespace: t.namespace, Version: version})
				return err
			})
			if err != nil {
				return err
			}
			svc := resp.GetService()
			return render(s.Out, g.output, svc, func() string {
				return fmt.Sprintf("%s updated: version %s, %d instance(s)\n", svc.GetName(), svc.GetVersion(), len(svc.GetInstances()))
			})
		},
	}
	t.flags(cmd)
	cmd.Flags().StringVar(&version, "version", "", "which version, when several run side by side")
	return cmd
}

type logsOptions struct {
	target  serviceTarget
	follow  bool
	lines   uint32
	since   time.Duration
	version string
}

func newLogsCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &logsOptions{}
	cmd := &cobra.Command{
		Use:     "logs SERVICE",
		Short:   "Show the logs of a service's apps and sidecars",
		Args:    cobra.ExactArgs(1),
		Example: "  meshctl logs helloworld\n  meshctl logs helloworld -f\n  meshctl logs helloworld --since 1h -n 0\n  meshctl logs helloworld --version v2   # a canary's own lines",
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.since < 0 {
				return fmt.Errorf("--since %v: must be positive", o.since)
			}
			req := &runtimev1.LogsRequest{Name: args[0], Namespace: o.target.namespace, Lines: o.lines, Follow: o.follow, Version: o.version}
			if o.since > 0 {
				req.Since = timestamppb.New(time.Now().Add(-o.since))
			} else if o.lines == 0 {
				req.Lines = 100
			}
			timeout := adminCallTimeout
			if o.follow {
				timeout = 0 // until Ctrl-C
			}
			err := withRuntime(cmd.Context(), g, o.target.controlPlane, timeout, func(ctx context.Context, c runtimev1.RuntimeServiceClient) error {
				stream, err := c.Logs(ctx, req)
				if err != nil {
					return err
				}
				return printLogs(stream, s.Out, g.output)
			})
			if cmd.Context().Err() != nil {
				return nil // Ctrl-C ends -f
			}
			return err
		},
	}
	o.target.flagsShort(cmd, "")
	cmd.Flags().BoolVarP(&o.follow, "follow", "f", false, "keep printing new lines")
	cmd.Flags().Uint32VarP(&o.lines, "lines", "n", 0, "lines from the end to start with (default 100; 0 with --since: all since then)")
	cmd.Flags().DurationVar(&o.since, "since", 0, "only lines newer than this, e.g. 1h")
	cmd.Flags().StringVar(&o.version, "version", "", "only the instances of this version (of versions side by side)")
	return cmd
}

func printLogs(stream grpc.ServerStreamingClient[runtimev1.LogsResponse], w io.Writer, output string) error {
	for {
		l, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if output == outputJSON { // one object per line
			if err := json.NewEncoder(w).Encode(map[string]string{"time": l.GetTime().AsTime().Format(time.RFC3339Nano), "instance": l.GetInstance(), "source": l.GetSource(), "line": l.GetLine()}); err != nil {
				return err
			}
			continue
		}
		if _, err := fmt.Fprintf(w, "%s %s %-7s | %s\n", l.GetTime().AsTime().Local().Format("15:04:05.000"), l.GetInstance(), l.GetSource(), l.GetLine()); err != nil {
			return err
		}
	}
}

// runRolloutJSON is what run --rollout answers.
type runRolloutJSON struct {
	Service *runtimev1.Service `json:"service"`
	// Rollout is nil for a first version (nothing to roll out from).
	Rollout *rolloutOutput `json:"rollout,omitempty"`
}

// rolloutPlan is what run --rollout found before running: the service's
// name, the version traffic moves from ("" for a first version), and
// whether it set a split to keep the new version dark meanwhile.
type rolloutPlan struct {
	name, from string
	steps      []uint32
	setSplit   bool
}

// prepareRollout finds the version run --rollout moves traffic from and,
// when the service has no split (every instance alike), sets one giving
// that version all of it, so that the new version's instances take no
// traffic until the rollout's first step.
func prepareRollout(ctx context.Context, g *globalOptions, o *runOptions, src string) (*rolloutPlan, error) {
	if o.version == "" {
		return nil, errors.New("--rollout needs --version: the name of the version the traffic moves to")
	}
	steps, err := parseSteps(o.rolloutSteps)
	if err != nil {
		return nil, fmt.Errorf("--rollout-steps: %w", err)
	}
	plan := &rolloutPlan{name: o.name, steps: steps}
	if plan.name == "" {
		var err error
		if plan.name, err = runtime.DefaultName(src); err != nil {
			return nil, err
		}
	}
	ns := o.target.namespace
	err = withAdmin(ctx, g, o.target.controlPlane, func(ctx context.Context, conn *grpc.ClientConn) error {
		client := registryv1.NewRegistryServiceClient(conn)
		resp, err := client.ListServices(ctx, &registryv1.ListServicesRequest{Namespace: ns})
		if err != nil {
			return err
		}
		for _, svc := range resp.GetServices() {
			for _, in := range svc.GetInstances() {
				if svc.GetName() == plan.name && svc.GetNamespace() == ns && in.GetVersion() == o.version {
					return fmt.Errorf("%s %s already runs in namespace %s: meshctl rollout start %s --to %s moves traffic to it", plan.name, o.version, ns, plan.name, o.version)
				}
			}
		}
		plan.from, err = rollout.From(plan.name, ns, o.version, resp)
		if errors.Is(err, rollout.ErrNoOtherVersion) {
			plan.from = ""
			return nil // a first version
		}
		if err != nil {
			return fmt.Errorf("%w; or run it without --rollout, then: meshctl rollout start %s --from VERSION --to %s", err, plan.name, o.version)
		}
		// Refused now, not once the new version runs.
		r := registry.Rollout{From: plan.from, To: o.version, Steps: steps, Interval: o.rolloutInterval, Deadline: o.rolloutDeadline, MinSuccess: 0.99, State: registry.RolloutProgressing}
		if err := r.Validate(plan.name, ns); err != nil {
			return err
		}
		for _, sp := range resp.GetSplits() {
			if sp.GetService() == plan.name && sp.GetNamespace() == ns {
				return nil // versions it does not name take no traffic
			}
		}
		_, err = client.SetSplit(ctx, &registryv1.SetSplitRequest{Split: &registryv1.Split{Service: plan.name, Namespace: ns,
			Versions: []*registryv1.VersionWeight{{Version: plan.from, Weight: 100}}}})
		plan.setSplit = err == nil
		return err
	})
	if err != nil {
		return nil, err
	}
	return plan, nil
}

// undo clears the split prepareRollout set, when the run failed.
func (p *rolloutPlan) undo(ctx context.Context, g *globalOptions, o *runOptions) {
	if p == nil || !p.setSplit {
		return
	}
	_ = withAdmin(ctx, g, o.target.controlPlane, func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := registryv1.NewRegistryServiceClient(conn).DeleteSplit(ctx, &registryv1.DeleteSplitRequest{Service: p.name, Namespace: o.target.namespace})
		return err
	})
}

// upstreamNames reads --upstream: service names, each port the runtime's
// to pick.
func upstreamNames(flags []string) ([]string, error) {
	var out []string
	for _, f := range flags {
		for u := range strings.SplitSeq(f, ",") {
			if u = strings.TrimSpace(u); u == "" {
				continue
			}
			if name, _, ok := strings.Cut(u, "="); ok {
				return nil, fmt.Errorf("--upstream %s: the runtime picks each instance's port; give the service alone (--upstream %s) and have the app read $%s", u, name, envconfig.UpstreamVar(name))
			}
			if _, _, err := identity.SplitService(u); err != nil {
				return nil, fmt.Errorf("--upstream: %w", err)
			}
			out = append(out, u)
		}
	}
	return out, nil
}
