package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	statsv1 "github.com/micromesh/micromesh/proto/stats/v1"
)

type statOptions struct {
	controlPlane string
	namespace    string
	window       time.Duration
	watch        bool
	every        time.Duration
}

func (o *statOptions) validate() error {
	if o.window < 10*time.Second || o.window > 10*time.Minute {
		return fmt.Errorf("--window %v: from 10s to 10m", o.window)
	}
	if o.every < time.Second {
		return fmt.Errorf("--every %v: 1s or more", o.every)
	}
	return nil
}

// trafficJSON is what a service's or a call's requests came to in meshctl
// stat -o json; rates and latencies only when there were requests.
type trafficJSON struct {
	Requests          uint64   `json:"requests"`
	Failures          uint64   `json:"failures"`
	RequestsPerSecond float64  `json:"requests_per_second"`
	SuccessRate       *float64 `json:"success_rate,omitempty"`
	P50MS             *float64 `json:"p50_ms,omitempty"`
	P95MS             *float64 `json:"p95_ms,omitempty"`
	P99MS             *float64 `json:"p99_ms,omitempty"`
}

type serviceStatJSON struct {
	Service   string `json:"service"`
	Instances uint32 `json:"instances"`
	Reporting uint32 `json:"reporting"`
	trafficJSON
	// Methods: with a SERVICE named, its figures by gRPC method.
	Methods []methodStatJSON `json:"methods,omitempty"`
	// Versions: its figures by the version of the instances that served
	// them.
	Versions []versionStatJSON `json:"versions,omitempty"`
}

type versionStatJSON struct {
	Version string `json:"version"`
	trafficJSON
}

type methodStatJSON struct {
	Method string `json:"method"`
	trafficJSON
}

type callStatJSON struct {
	From string `json:"from"`
	To   string `json:"to"`
	trafficJSON
}

type statJSON struct {
	WindowSeconds float64           `json:"window_seconds"`
	Services      []serviceStatJSON `json:"services"`
	Calls         []callStatJSON    `json:"calls"`
}

func newStatCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &statOptions{}
	cmd := &cobra.Command{
		Use:   "stat [SERVICE]",
		Short: "Show each service's requests per second, success rate and latency, and the calls between services",
		Long: `Show the golden signals of the mesh's services over a recent window: for
each service its requests per second, success rate and latency percentiles
as its own sidecars saw them (its app's time included), and for each pair
of caller and service the same as the callers' sidecars saw them (the
network and the callee's sidecar included). With a SERVICE named, its
figures by gRPC method too.

A request failed if it was answered with an HTTP 5xx or a gRPC status that
is the server's fault (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
UNAVAILABLE, DATA_LOSS); NOT_FOUND or INVALID_ARGUMENT is the caller's.
Latencies are interpolated within the sidecars' histogram buckets, as
Prometheus's histogram_quantile does.

Sidecars send their counts to the control plane every 10 s (meshctl sidecar
--stats-interval): a call shows here within that, and the figures of a
window of 1 m move in steps of it.`,
		Example: `  meshctl stat
  meshctl stat helloworld
  meshctl stat -n shop --window 5m
  meshctl stat -w            # again every 5 s, until Ctrl-C
  meshctl stat -o json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			service := ""
			if len(args) == 1 {
				service = args[0]
			}
			req := &statsv1.GetStatsRequest{Namespace: o.namespace, Service: service, Window: durationpb.New(o.window), ByMethod: service != ""}
			if !o.watch {
				return withAdmin(cmd.Context(), g, o.controlPlane, func(ctx context.Context, conn *grpc.ClientConn) error {
					return showStat(ctx, conn, req, g.output, s.Out)
				})
			}
			// Until interrupted: one connection, a fresh look every
			// interval, each under its own deadline.
			conn, err := adminConn(cmd.Context(), g, o.controlPlane)
			if err != nil {
				return err
			}
			defer conn.Close()
			clear := isTerminal(s.Out) && g.output != outputJSON
			t := time.NewTicker(o.every)
			defer t.Stop()
			for {
				if clear {
					_, _ = io.WriteString(s.Out, "\x1b[H\x1b[2J") // home, clear the screen
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), adminCallTimeout)
				err := showStat(ctx, conn, req, g.output, s.Out)
				cancel()
				if err != nil && cmd.Context().Err() == nil {
					return err
				}
				if !clear && g.output != outputJSON {
					_, _ = io.WriteString(s.Out, "\n")
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-t.C:
				}
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.controlPlane, "controlplane", "", "control plane address (default: the local server)")
	f.StringVarP(&o.namespace, "namespace", "n", "", "only this namespace's services and the calls to and from them (default: every namespace)")
	f.DurationVar(&o.window, "window", time.Minute, "how far back to look (10s to 10m)")
	f.BoolVarP(&o.watch, "watch", "w", false, "show the figures again every --every until interrupted (-o json: one object per look)")
	f.DurationVar(&o.every, "every", 5*time.Second, "with --watch, how often to look (1s or more)")
	return cmd
}

// showStat asks for the figures and renders them.
func showStat(ctx context.Context, conn *grpc.ClientConn, req *statsv1.GetStatsRequest, format string, w io.Writer) error {
	resp, err := statsv1.NewStatsServiceClient(conn).GetStats(ctx, req)
	if err != nil {
		return err
	}
	out := statJSON{WindowSeconds: resp.Window.AsDuration().Seconds(), Services: []serviceStatJSON{}, Calls: []callStatJSON{}}
	for _, sv := range resp.Services {
		o := serviceStatJSON{Service: sv.Service, Instances: sv.Instances, Reporting: sv.Reporting, trafficJSON: trafficOf(sv.Traffic)}
		for _, m := range sv.Methods {
			o.Methods = append(o.Methods, methodStatJSON{Method: m.Method, trafficJSON: trafficOf(m.Traffic)})
		}
		for _, v := range sv.Versions {
			o.Versions = append(o.Versions, versionStatJSON{Version: v.Version, trafficJSON: trafficOf(v.Traffic)})
		}
		out.Services = append(out.Services, o)
	}
	for _, e := range resp.Edges {
		out.Calls = append(out.Calls, callStatJSON{From: e.Source, To: e.Destination, trafficJSON: trafficOf(e.Traffic)})
	}
	return render(w, format, out, func() string { return renderStat(out) })
}

func trafficOf(t *statsv1.Traffic) trafficJSON {
	out := trafficJSON{Requests: t.GetRequests(), Failures: t.GetFailures(), RequestsPerSecond: t.GetRequestsPerSecond()}
	if t.GetRequests() > 0 {
		sr := t.GetSuccessRate()
		out.SuccessRate = &sr
	}
	for _, p := range []struct {
		d   *durationpb.Duration
		out **float64
	}{{t.GetP50(), &out.P50MS}, {t.GetP95(), &out.P95MS}, {t.GetP99(), &out.P99MS}} {
		if p.d != nil {
			v := ms(p.d.AsDuration())
			*p.out = &v
		}
	}
	return out
}

func renderStat(st statJSON) string {
	if len(st.Services) == 0 && len(st.Calls) == 0 {
		return "no services (meshctl run starts one)\n"
	}
	var b strings.Builder
	rows := make([][]string, 0, len(st.Services))
	for _, sv := range st.Services {
		of := fmt.Sprintf("%d/%d", sv.Reporting, sv.Instances)
		if sv.Instances == 0 {
			of = fmt.Sprintf("%d/-", sv.Reporting) // an edge proxy of the platform's: not registered
		}
		rows = append(rows, append([]string{sv.Service, of}, trafficCells(sv.trafficJSON)...))
	}
	b.WriteString(table([]string{"SERVICE", "REPORTING", "SUCCESS", "RPS", "P50", "P95", "P99"}, rows))
	// Each service's versions side by side (a canary beside the stable
	// one), where more than one served; then its methods.
	for _, sv := range st.Services {
		if len(sv.Versions) >= 2 {
			b.WriteString(byKey("VERSION ("+sv.Service+")", sv.Versions, func(v versionStatJSON) (string, trafficJSON) { return v.Version, v.trafficJSON }))
		}
	}
	for _, sv := range st.Services {
		if len(sv.Methods) > 0 {
			b.WriteString(byKey("METHOD ("+sv.Service+")", sv.Methods, func(m methodStatJSON) (string, trafficJSON) { return m.Method, m.trafficJSON }))
		}
	}
	if len(st.Calls) > 0 {
		rows = rows[:0]
		for _, c := range st.Calls {
			rows = append(rows, append([]string{c.From, c.To}, trafficCells(c.trafficJSON)...))
		}
		b.WriteString("\n")
		b.WriteString(table([]string{"FROM", "TO", "SUCCESS", "RPS", "P50", "P95", "P99"}, rows))
	}
	return b.String()
}

// byKey is a table, after a blank line, of one service's figures by
// version or by method: a row of each.
func byKey[T any](head string, items []T, row func(T) (string, trafficJSON)) string {
	rows := make([][]string, 0, len(items))
	for _, it := range items {
		k, t := row(it)
		rows = append(rows, append([]string{k}, trafficCells(t)...))
	}
	return "\n" + table([]string{head, "SUCCESS", "RPS", "P50", "P95", "P99"}, rows)
}

// trafficCells are the SUCCESS, RPS and percentile columns; "-" where
// there were no requests.
func trafficCells(t trafficJSON) []string {
	cells := []string{"-", fmt.Sprintf("%.2f", t.RequestsPerSecond), "-", "-", "-"}
	if t.SuccessRate != nil {
		cells[0] = fmt.Sprintf("%.2f%%", 100**t.SuccessRate)
	}
	for i, p := range []*float64{t.P50MS, t.P95MS, t.P99MS} {
		if p != nil {
			cells[2+i] = short(time.Duration(*p * float64(time.Millisecond)))
		}
	}
	return cells
}

// isTerminal reports whether w is a terminal (where a watch redraws the
// screen rather than appends).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
