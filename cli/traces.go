package cli

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	tracev1 "github.com/micromesh/micromesh/proto/trace/v1"
)

type tracesOptions struct {
	controlPlane string
	service      string
	limit        uint32
	errors       bool
	minDuration  time.Duration
}

func (o *tracesOptions) validate() error {
	if o.limit == 0 || o.limit > 1000 {
		return fmt.Errorf("--limit %d: from 1 to 1000", o.limit)
	}
	if o.minDuration < 0 {
		return fmt.Errorf("--min-duration %v: must not be negative", o.minDuration)
	}
	return nil
}

// traceSummaryJSON is one line of meshctl traces -o json.
type traceSummaryJSON struct {
	TraceID     string    `json:"trace_id"`
	Start       time.Time `json:"start"`
	DurationMS  float64   `json:"duration_ms"`
	Spans       uint32    `json:"spans"`
	Errors      uint32    `json:"errors"`
	RootService string    `json:"root_service"`
	RootName    string    `json:"root_name"`
	Services    []string  `json:"services"`
}

func newTracesCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &tracesOptions{}
	cmd := &cobra.Command{
		Use:   "traces",
		Short: "List the newest traces the mesh's proxies recorded",
		Long: `List the newest recorded traces, newest first: when each started, how long
it took, how many spans it has and how many failed, and the services it
crossed. meshctl trace TRACE_ID shows one.

Proxies record a trace when the request that starts it is sampled (meshctl
server --trace-sampling, 1 % by default) or when the caller asks for it: a
request with a W3C traceparent whose sampled flag is set, as meshctl call
--trace sends.`,
		Example: `  meshctl traces
  meshctl traces --service helloworld --errors
  meshctl traces --min-duration 100ms --limit 50 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			return withAdmin(cmd.Context(), g, o.controlPlane, func(ctx context.Context, conn *grpc.ClientConn) error {
				resp, err := tracev1.NewTraceServiceClient(conn).ListTraces(ctx, &tracev1.ListTracesRequest{
					Service: o.service, Limit: o.limit, ErrorsOnly: o.errors, MinDuration: durationpb.New(o.minDuration),
				})
				if err != nil {
					return err
				}
				out := make([]traceSummaryJSON, 0, len(resp.Traces))
				for _, t := range resp.Traces {
					out = append(out, traceSummaryJSON{TraceID: t.TraceId, Start: t.Start.AsTime().UTC(), DurationMS: ms(t.Duration.AsDuration()),
						Spans: t.Spans, Errors: t.Errors, RootService: t.RootService, RootName: t.RootName, Services: t.Services})
				}
				return render(s.Out, g.output, out, func() string { return renderTraces(out) })
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.controlPlane, "controlplane", "", "control plane address (default: the local server)")
	f.StringVar(&o.service, "service", "", "only traces with a span of this service (name, or name.namespace)")
	f.Uint32Var(&o.limit, "limit", 20, "at most this many traces (1 to 1000)")
	f.BoolVar(&o.errors, "errors", false, "only traces with a failed span")
	f.DurationVar(&o.minDuration, "min-duration", 0, "only traces at least this long")
	return cmd
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// short rounds d for people: microseconds under a second.
func short(d time.Duration) string {
	if d >= time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Microsecond).String()
}

// when is a trace's start in local time: the time of day for today's,
// with the date for older ones.
func when(t time.Time) string {
	t = t.Local()
	if y, m, d := t.Date(); time.Now().Year() == y && time.Now().Month() == m && time.Now().Day() == d {
		return t.Format("15:04:05.000")
	}
	return t.Format("2006-01-02 15:04:05")
}

func renderTraces(ts []traceSummaryJSON) string {
	if len(ts) == 0 {
		return "no traces recorded (meshctl call --trace records one; meshctl server --trace-sampling sets how many requests start one)\n"
	}
	rows := make([][]string, 0, len(ts))
	for _, t := range ts {
		errs := "-"
		if t.Errors > 0 {
			errs = fmt.Sprint(t.Errors)
		}
		rows = append(rows, []string{t.TraceID, when(t.Start), short(time.Duration(t.DurationMS * float64(time.Millisecond))),
			fmt.Sprint(t.Spans), errs, t.RootService + " " + t.RootName, strings.Join(t.Services, ",")})
	}
	return table([]string{"TRACE", "START", "DURATION", "SPANS", "ERRORS", "ROOT", "SERVICES"}, rows)
}

// spanJSON is one span of meshctl trace -o json.
type spanJSON struct {
	TraceID    string            `json:"trace_id"`
	SpanID     string            `json:"span_id"`
	ParentID   string            `json:"parent_span_id,omitempty"`
	Service    string            `json:"service"`
	Name       string            `json:"name"`
	Kind       string            `json:"kind"`
	Start      time.Time         `json:"start"`
	DurationMS float64           `json:"duration_ms"`
	Attributes map[string]string `json:"attributes,omitempty"`
	Error      bool              `json:"error,omitempty"`
	Message    string            `json:"message,omitempty"`
	depth      int
	duration   time.Duration
}

type traceOptions struct {
	controlPlane string
	wait         time.Duration
}

func newTraceCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &traceOptions{}
	cmd := &cobra.Command{
		Use:   "trace TRACE_ID",
		Short: "Show one trace: every hop of a request, as a timeline",
		Long: `Show the spans of one trace as a tree in time: each hop a proxy recorded —
CLIENT where a service's sidecar sent a request, SERVER where the callee's
received it —, when it started relative to the trace, how long it took, and
how it ended (an HTTP status, a gRPC code, or the proxy's reason for a
failure).

Proxies export spans about once a second: a trace asked for at once waits
up to --wait for its first spans.`,
		Example: `  meshctl trace 4bf92f3577b34da6a3ce929d0e0e4736
  meshctl trace 4bf92f3577b34da6a3ce929d0e0e4736 -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.wait < 0 {
				return fmt.Errorf("--wait %v: must not be negative", o.wait)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), adminCallTimeout+o.wait)
			defer cancel()
			conn, err := adminConn(ctx, g, o.controlPlane)
			if err != nil {
				return err
			}
			defer conn.Close()
			spans, err := getTrace(ctx, tracev1.NewTraceServiceClient(conn), args[0], o.wait)
			if err != nil {
				return err
			}
			return render(s.Out, g.output, spans, func() string { return renderTrace(spans) })
		},
	}
	cmd.Flags().StringVar(&o.controlPlane, "controlplane", "", "control plane address (default: the local server)")
	cmd.Flags().DurationVar(&o.wait, "wait", 3*time.Second, "how long to wait for a trace whose spans are still on their way")
	return cmd
}

// getTrace reads a trace, waiting up to wait for its spans to arrive: once
// it has some, until none has come for a flush interval and a half.
func getTrace(ctx context.Context, c tracev1.TraceServiceClient, id string, wait time.Duration) ([]spanJSON, error) {
	deadline := time.Now().Add(wait)
	var (
		last    []*tracev1.Span
		changed time.Time
	)
	for {
		resp, err := c.GetTrace(ctx, &tracev1.GetTraceRequest{TraceId: id})
		switch {
		case err == nil:
			if len(resp.Spans) != len(last) {
				last, changed = resp.Spans, time.Now()
			}
		case status.Code(err) != codes.NotFound || time.Now().After(deadline):
			return nil, err
		}
		if last != nil && (time.Since(changed) >= 1500*time.Millisecond || time.Now().After(deadline)) {
			return treeOf(last), nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// treeOf orders spans depth first, children by start; a span whose parent
// was not kept starts a branch of its own.
func treeOf(spans []*tracev1.Span) []spanJSON {
	byID := map[string]bool{}
	children := map[string][]*tracev1.Span{}
	for _, s := range spans {
		byID[s.SpanId] = true
	}
	var roots []*tracev1.Span
	for _, s := range spans {
		if s.ParentSpanId == "" || !byID[s.ParentSpanId] {
			roots = append(roots, s)
		} else {
			children[s.ParentSpanId] = append(children[s.ParentSpanId], s)
		}
	}
	byStart := func(a, b *tracev1.Span) int { return a.Start.AsTime().Compare(b.Start.AsTime()) }
	slices.SortStableFunc(roots, byStart)
	out := make([]spanJSON, 0, len(spans))
	var walk func(s *tracev1.Span, depth int)
	walk = func(s *tracev1.Span, depth int) {
		d := s.Duration.AsDuration()
		out = append(out, spanJSON{TraceID: s.TraceId, SpanID: s.SpanId, ParentID: s.ParentSpanId, Service: s.Service, Name: s.Name,
			Kind: strings.TrimPrefix(s.Kind.String(), "KIND_"), Start: s.Start.AsTime().UTC(), DurationMS: ms(d),
			Attributes: s.Attributes, Error: s.Error, Message: s.Message, depth: depth, duration: d})
		kids := children[s.SpanId]
		slices.SortStableFunc(kids, byStart)
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return out
}

// timelineWidth is the width of meshctl trace's timeline column.
const timelineWidth = 24

func renderTrace(spans []spanJSON) string {
	first, last := spans[0].Start, spans[0].Start
	for _, s := range spans {
		if s.Start.Before(first) {
			first = s.Start
		}
		if end := s.Start.Add(s.duration); end.After(last) {
			last = end
		}
	}
	total := last.Sub(first)
	var rows [][]string
	for _, s := range spans {
		rows = append(rows, []string{"+" + short(s.Start.Sub(first)), short(s.duration), s.Service, s.Kind,
			timeline(s.Start.Sub(first), s.duration, total), strings.Repeat("  ", s.depth) + s.Name, spanStatus(s)})
	}
	head := fmt.Sprintf("trace %s: %d spans, %s, from %s\n\n", spans[0].TraceID, len(spans), short(total), first.Local().Format("2006-01-02 15:04:05.000"))
	return head + table([]string{"OFFSET", "DURATION", "SERVICE", "KIND", "TIMELINE", "NAME", "STATUS"}, rows)
}

// timeline draws a span's place in the trace.
func timeline(offset, d, total time.Duration) string {
	if total <= 0 {
		return "[" + strings.Repeat("=", timelineWidth) + "]"
	}
	from := int(int64(offset) * timelineWidth / int64(total))
	to := int((int64(offset+d)*timelineWidth + int64(total) - 1) / int64(total))
	from, to = min(from, timelineWidth-1), max(min(to, timelineWidth), from+1)
	return "[" + strings.Repeat(" ", from) + strings.Repeat("=", to-from) + strings.Repeat(" ", timelineWidth-to) + "]"
}

// spanStatus is how a span ended: its HTTP status and gRPC code, and why
// it failed when it did.
func spanStatus(s spanJSON) string {
	var parts []string
	if c := s.Attributes["http.response.status_code"]; c != "" {
		parts = append(parts, c)
	}
	if c := s.Attributes["rpc.grpc.status_code"]; c != "" {
		if n, err := strconv.Atoi(c); err == nil {
			c = codes.Code(n).String()
		}
		parts = append(parts, "grpc "+c)
	}
	if s.Error {
		parts = append(parts, "ERROR")
	}
	if s.Message != "" {
		m := s.Message
		if len(m) > 120 {
			m = m[:120] + "…"
		}
		parts = append(parts, m)
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}
