package stats

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	collectorv1 "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	metricsv1 "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/identity"
)

// Caller returns the verified identity of a call's peer (its client
// certificate), or an error saying why there is none.
type Caller func(ctx context.Context) (identity.ID, error)

// The metrics kept (what dataplane/stats exports); others are ignored, so
// that a proxy exporting more (Envoy's stat sink) is not refused.
const (
	requestsMetric  = "micromesh_requests_total"
	durationsMetric = "micromesh_request_duration_seconds"
)

// Collector is the OTLP/gRPC metrics collector the sidecars export their
// request metrics to: each its own service's, for one instance.
type Collector struct {
	collectorv1.UnimplementedMetricsServiceServer
	store  *Store
	caller Caller
	log    *slog.Logger

	exports, rejected atomic.Uint64
}

// NewCollector returns a collector that keeps what it receives in store.
func NewCollector(store *Store, caller Caller, log *slog.Logger) *Collector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Collector{store: store, caller: caller, log: log.With("component", "stats")}
}

// Stats counts exports kept and data points refused.
func (c *Collector) Stats() (exports, rejected uint64) { return c.exports.Load(), c.rejected.Load() }

// Export keeps one export. It is refused whole when its caller is not a
// workload of the service it names or names no instance; malformed data
// points are refused in a partial success, as OTLP has it.
func (c *Collector) Export(ctx context.Context, req *collectorv1.ExportMetricsServiceRequest) (*collectorv1.ExportMetricsServiceResponse, error) {
	id, err := c.caller(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	if id.Kind != identity.KindService {
		return nil, status.Errorf(codes.PermissionDenied, "request metrics are exported by workloads; %s is not one", id)
	}
	self := id.Name + "." + id.Namespace
	now := c.store.now()
	var (
		rejected int64
		reason   string
	)
	reject := func(n int, err error) {
		rejected += int64(n)
		if reason == "" {
			reason = err.Error()
		}
	}
	type kept struct {
		instance string
		e        *export
	}
	var keep []kept
	for _, rm := range req.ResourceMetrics {
		attrs := rm.GetResource().GetAttributes()
		svc, inst := attr(attrs, "service.name"), attr(attrs, "service.instance.id")
		if svc != self {
			if svc == "" {
				svc = "none"
			}
			return nil, status.Errorf(codes.PermissionDenied,
				"%s may export metrics of its own service only (service.name %q); these name %q", id, self, svc)
		}
		if inst == "" || len(inst) > 256 {
			return nil, status.Errorf(codes.InvalidArgument, "service.instance.id: want the instance's ID (1–256 bytes), so that instances are told apart; got %d bytes", len(inst))
		}
		version := attr(attrs, "service.version")
		if version != "" {
			if err := identity.ValidateVersion(version); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "service.version: %v (the version the instance registered with; leave it out for none)", err)
			}
		}
		s := &export{at: now, version: version, requests: map[reqKey]float64{}, durations: map[durKey]*hist{}}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				switch m.Name {
				case requestsMetric:
					c.requests(s, m, reject)
				case durationsMetric:
					c.durations(s, m, reject)
				}
			}
		}
		keep = append(keep, kept{inst, s})
	}
	for _, k := range keep {
		if err := c.store.add(self, k.instance, k.e); err != nil {
			return nil, status.Errorf(codes.ResourceExhausted, "%s: %v (instance %q refused; those that reported within %v are kept)", self, err, k.instance, MaxWindow)
		}
	}
	c.exports.Add(1)
	resp := &collectorv1.ExportMetricsServiceResponse{}
	if rejected > 0 {
		c.rejected.Add(uint64(rejected))
		resp.PartialSuccess = &collectorv1.ExportMetricsPartialSuccess{RejectedDataPoints: rejected,
			ErrorMessage: fmt.Sprintf("%d data point(s) refused; the first: %s", rejected, reason)}
	}
	return resp, nil
}

// requests reads micromesh_requests_total: a cumulative, monotonic sum.
func (c *Collector) requests(s *export, m *metricsv1.Metric, reject func(int, error)) {
	sum := m.GetSum()
	if sum == nil || !sum.IsMonotonic || sum.AggregationTemporality != metricsv1.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE {
		reject(max(1, len(sum.GetDataPoints())), fmt.Errorf("%s: want a monotonic cumulative sum", m.Name))
		return
	}
	for _, p := range sum.DataPoints {
		v := p.GetAsDouble()
		if _, ok := p.Value.(*metricsv1.NumberDataPoint_AsInt); ok {
			v = float64(p.GetAsInt())
		}
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			reject(1, fmt.Errorf("%s: value %v is not a count", m.Name, v))
			continue
		}
		if len(s.requests)+len(s.durations) >= maxSeries {
			reject(1, fmt.Errorf("more than %d series from one instance", maxSeries))
			continue
		}
		s.setStart(p.StartTimeUnixNano)
		a := p.Attributes
		s.requests[reqKey{direction: attr(a, "direction"), source: attr(a, "source"), destination: attr(a, "destination"),
			code: attr(a, "response_code"), grpc: attr(a, "grpc_status"), method: attr(a, "grpc_method")}] = v
	}
}

// durations reads micromesh_request_duration_seconds: a cumulative
// histogram with explicit bounds.
func (c *Collector) durations(s *export, m *metricsv1.Metric, reject func(int, error)) {
	h := m.GetHistogram()
	if h == nil || h.AggregationTemporality != metricsv1.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE {
		reject(max(1, len(h.GetDataPoints())), fmt.Errorf("%s: want a cumulative histogram", m.Name))
		return
	}
	for _, p := range h.DataPoints {
		if err := checkHistogram(p); err != nil {
			reject(1, fmt.Errorf("%s: %w", m.Name, err))
			continue
		}
		if len(s.requests)+len(s.durations) >= maxSeries {
			reject(1, fmt.Errorf("more than %d series from one instance", maxSeries))
			continue
		}
		s.setStart(p.StartTimeUnixNano)
		s.durations[durKey{direction: attr(p.Attributes, "direction"), destination: attr(p.Attributes, "destination"), method: attr(p.Attributes, "grpc_method")}] =
			&hist{bounds: p.ExplicitBounds, counts: p.BucketCounts, count: p.Count, sum: p.GetSum()}
	}
}

// checkHistogram checks a point's layout: bounds finite and increasing,
// one count more than bounds, the counts adding up to its count.
func checkHistogram(p *metricsv1.HistogramDataPoint) error {
	if len(p.BucketCounts) != len(p.ExplicitBounds)+1 || len(p.ExplicitBounds) > 64 {
		return fmt.Errorf("%d bucket counts for %d bounds: want one more count than bounds (at most 64 bounds)", len(p.BucketCounts), len(p.ExplicitBounds))
	}
	for i, b := range p.ExplicitBounds {
		if math.IsNaN(b) || math.IsInf(b, 0) || (i > 0 && b <= p.ExplicitBounds[i-1]) {
			return fmt.Errorf("bounds %v: want finite and increasing", p.ExplicitBounds)
		}
	}
	var n uint64
	for _, c := range p.BucketCounts {
		n += c
	}
	if n != p.Count {
		return fmt.Errorf("bucket counts add up to %d, count is %d", n, p.Count)
	}
	return nil
}

// setStart notes the points' start (the sidecar's): the latest of them.
func (s *export) setStart(ns uint64) {
	if t := time.Unix(0, int64(ns)); ns != 0 && t.After(s.start) {
		s.start = t
	}
}

// attr is the string value of attribute key, "" if absent.
func attr(kvs []*commonv1.KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value.GetStringValue()
		}
	}
	return ""
}
