// Package stats sends the sidecar's request metrics to the control plane:
// requests by caller, callee, response code and gRPC status, and their
// durations — the golden signals `meshctl stat` and the dashboard show —,
// as OTLP/gRPC metrics (opentelemetry.proto.collector.metrics.v1), every
// Interval, over the connection the spans take. Envoy's OpenTelemetry stat
// sink sends its own counters the same way.
//
// The points are cumulative, from the sidecar's start: a lost export
// loses nothing (the next carries the totals), and a control plane that
// restarts has rates again after two exports.
package stats

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/micromesh/micromesh/internal/otlpwire"
	"github.com/micromesh/micromesh/internal/rawcodec"
)

// ExportMethod is OTLP/gRPC's metrics export: what the control plane
// serves.
const ExportMethod = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"

// DefaultInterval is how often a sidecar exports (Envoy flushes its stat
// sinks every 5 s; Prometheus scrapes every 15 s by default).
const DefaultInterval = 10 * time.Second

// Scope is the instrumentation scope of the exported metrics.
const Scope = "micromesh.proxy"

// Exported are the metric families a sidecar exports: a counter and a
// histogram (see dataplane/proxy's metrics).
var Exported = map[string]bool{
	"micromesh_requests_total":           true,
	"micromesh_request_duration_seconds": true,
}

const exportTimeout = 5 * time.Second

// Exporter exports metrics gathered from a Prometheus registry.
type Exporter struct {
	g        prometheus.Gatherer
	service  string // service.name: "name.namespace"
	res      otlpwire.Resource
	start    time.Time
	interval time.Duration
	log      *slog.Logger

	failing           atomic.Bool
	exports, failures atomic.Uint64
}

// NewExporter returns an exporter of g's Exported families under service
// ("name.namespace") and res, counted from now, every interval
// (DefaultInterval if 0).
func NewExporter(g prometheus.Gatherer, service string, res otlpwire.Resource, interval time.Duration, log *slog.Logger) *Exporter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	return &Exporter{g: g, service: service, res: res, start: time.Now(), interval: interval, log: log}
}

// Stats counts exports done and failed.
func (e *Exporter) Stats() (exports, failures uint64) { return e.exports.Load(), e.failures.Load() }

// Run exports over conn every interval until ctx ends, then once more (for
// at most a few seconds), so that a stopping sidecar's last requests are
// counted.
func (e *Exporter) Run(ctx context.Context, conn grpc.ClientConnInterface) {
	t := time.NewTicker(e.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = e.Export(fctx, conn)
			cancel()
			return
		case <-t.C:
			_ = e.Export(ctx, conn)
		}
	}
}

// Export sends the current totals over conn in one call. Failures are
// logged once per change of state, not per export.
func (e *Exporter) Export(ctx context.Context, conn grpc.ClientConnInterface) error {
	err := e.export(ctx, conn)
	if err != nil {
		e.failures.Add(1)
		if !e.failing.Swap(true) {
			e.log.Warn("exporting request metrics to the control plane failing", "err", err)
		}
		return err
	}
	e.exports.Add(1)
	if e.failing.Swap(false) {
		e.log.Info("exporting request metrics again")
	}
	return nil
}

func (e *Exporter) export(ctx context.Context, conn grpc.ClientConnInterface) error {
	fams, err := e.g.Gather()
	if err != nil {
		return fmt.Errorf("gathering metrics: %w", err)
	}
	req := AppendExportRequest(nil, e.service, e.res, e.start, time.Now(), fams)
	ctx, cancel := context.WithTimeout(ctx, exportTimeout)
	defer cancel()
	var resp []byte
	if err := conn.Invoke(ctx, ExportMethod, &req, &resp, grpc.ForceCodecV2(rawcodec.Codec{})); err != nil {
		return err
	}
	if rejected, msg := otlpwire.PartialSuccess(resp); rejected > 0 {
		return fmt.Errorf("the control plane refused %d data point(s): %s", rejected, msg)
	}
	return nil
}

// OTLP's cumulative aggregation temporality.
const cumulative = 2

// AppendExportRequest appends an
// opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest
// with the Exported families of fams — counters as monotonic cumulative
// sums, histograms as cumulative histograms with explicit bounds — their
// points counted from start and taken at now. Labels become attributes;
// empty ones are left out, as OpenTelemetry has no empty attribute.
func AppendExportRequest(b []byte, service string, res otlpwire.Resource, start, now time.Time, fams []*dto.MetricFamily) []byte {
	var metrics []byte
	for _, f := range fams {
		if !Exported[f.GetName()] {
			continue
		}
		var m []byte
		m = otlpwire.AppendString(m, 1, f.GetName())
		m = otlpwire.AppendString(m, 2, f.GetHelp())
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			var sum []byte
			for _, p := range f.GetMetric() {
				sum = otlpwire.AppendBytes(sum, 1, appendNumberPoint(nil, p, start, now))
			}
			sum = otlpwire.AppendVarint(sum, 2, cumulative)
			sum = otlpwire.AppendVarint(sum, 3, 1) // is_monotonic
			m = otlpwire.AppendBytes(m, 7, sum)
		case dto.MetricType_HISTOGRAM:
			m = otlpwire.AppendString(m, 3, "s")
			var h []byte
			for _, p := range f.GetMetric() {
				h = otlpwire.AppendBytes(h, 1, appendHistogramPoint(nil, p, start, now))
			}
			h = otlpwire.AppendVarint(h, 2, cumulative)
			m = otlpwire.AppendBytes(m, 9, h)
		default:
			continue
		}
		metrics = otlpwire.AppendBytes(metrics, 2, m)
	}
	// ResourceMetrics (1): resource (1), scope_metrics (2): scope (1), metrics (2).
	rm := otlpwire.AppendResource(nil, 1, service, res)
	sm := otlpwire.AppendScope(nil, 1, Scope)
	sm = append(sm, metrics...)
	rm = otlpwire.AppendBytes(rm, 2, sm)
	return otlpwire.AppendBytes(b, 1, rm)
}

// appendNumberPoint encodes a counter as a NumberDataPoint: attributes
// (7), start_time_unix_nano (2), time_unix_nano (3), as_double (4).
func appendNumberPoint(b []byte, p *dto.Metric, start, now time.Time) []byte {
	b = appendLabels(b, 7, p.GetLabel())
	b = otlpwire.AppendFixed64(b, 2, uint64(start.UnixNano()))
	b = otlpwire.AppendFixed64(b, 3, uint64(now.UnixNano()))
	return otlpwire.AppendFixed64(b, 4, math.Float64bits(p.GetCounter().GetValue()))
}

// appendHistogramPoint encodes a histogram as a HistogramDataPoint:
// attributes (9), start (2), time (3), count (4), sum (5), bucket_counts
// (6) and explicit_bounds (7), both packed. Prometheus counts buckets
// cumulatively and leaves +Inf implicit; OTLP counts each bucket and
// has one more count than bounds.
func appendHistogramPoint(b []byte, p *dto.Metric, start, now time.Time) []byte {
	h := p.GetHistogram()
	b = appendLabels(b, 9, p.GetLabel())
	b = otlpwire.AppendFixed64(b, 2, uint64(start.UnixNano()))
	b = otlpwire.AppendFixed64(b, 3, uint64(now.UnixNano()))
	b = otlpwire.AppendFixed64(b, 4, h.GetSampleCount())
	b = otlpwire.AppendFixed64(b, 5, math.Float64bits(h.GetSampleSum()))
	var bounds []float64
	for _, bk := range h.GetBucket() {
		if !math.IsInf(bk.GetUpperBound(), +1) {
			bounds = append(bounds, bk.GetUpperBound())
		}
	}
	b = protowire.AppendTag(b, 6, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(8*(len(bounds)+1)))
	var prev uint64
	for i := range bounds {
		c := h.GetBucket()[i].GetCumulativeCount()
		b = protowire.AppendFixed64(b, c-min(prev, c))
		prev = c
	}
	b = protowire.AppendFixed64(b, h.GetSampleCount()-min(prev, h.GetSampleCount()))
	b = protowire.AppendTag(b, 7, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(8*len(bounds)))
	for _, v := range bounds {
		b = protowire.AppendFixed64(b, math.Float64bits(v))
	}
	return b
}

func appendLabels(b []byte, num protowire.Number, labels []*dto.LabelPair) []byte {
	for _, l := range labels {
		if l.GetValue() != "" {
			b = otlpwire.AppendAttr(b, num, otlpwire.String(l.GetName(), l.GetValue()))
		}
	}
	return b
}
