package stats

import (
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	collectorv1 "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	metricsv1 "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/protobuf/proto"

	"github.com/micromesh/micromesh/internal/otlpwire"
)

// The hand encoding reads back with OpenTelemetry's own types, field by
// field: what any OTLP collector would make of it.
func TestExportRequestAgreesWithOTLP(t *testing.T) {
	reg := prometheus.NewRegistry()
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "micromesh_requests_total", Help: "Requests."},
		[]string{"direction", "grpc_status", "response_code"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "micromesh_request_duration_seconds", Help: "Durations.",
		Buckets: []float64{.001, .01, .1}}, []string{"direction"})
	other := prometheus.NewCounter(prometheus.CounterOpts{Name: "micromesh_other_total", Help: "Not exported."})
	reg.MustRegister(requests, duration, other)
	requests.WithLabelValues("inbound", "", "200").Add(7)
	requests.WithLabelValues("inbound", "14", "200").Add(2)
	for _, v := range []float64{.0005, .0005, .005, .05, 3} {
		duration.WithLabelValues("inbound").Observe(v)
	}
	other.Inc()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	start, now := time.Unix(1700000000, 5), time.Unix(1700000010, 7)
	b := AppendExportRequest(nil, "api.default", otlpwire.Resource{Instance: "api-1", SDK: "micromesh-sidecar"}, start, now, fams)

	var req collectorv1.ExportMetricsServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		t.Fatalf("OTLP cannot read the request: %v", err)
	}
	if len(req.ResourceMetrics) != 1 {
		t.Fatalf("%d resources, want 1", len(req.ResourceMetrics))
	}
	rm := req.ResourceMetrics[0]
	attrs := map[string]string{}
	for _, kv := range rm.GetResource().GetAttributes() {
		attrs[kv.Key] = kv.Value.GetStringValue()
	}
	if attrs["service.name"] != "api.default" || attrs["service.instance.id"] != "api-1" || attrs["telemetry.sdk.name"] != "micromesh-sidecar" {
		t.Errorf("resource = %v", attrs)
	}
	if len(rm.ScopeMetrics) != 1 || rm.ScopeMetrics[0].GetScope().GetName() != Scope {
		t.Fatalf("scope metrics = %v", rm.ScopeMetrics)
	}
	byName := map[string]*metricsv1.Metric{}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		byName[m.Name] = m
	}
	if len(byName) != 2 || byName["micromesh_other_total"] != nil {
		t.Errorf("metrics = %v, want the two exported ones", byName)
	}

	sum := byName["micromesh_requests_total"].GetSum()
	if sum == nil || !sum.IsMonotonic || sum.AggregationTemporality != metricsv1.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE {
		t.Fatalf("requests: %v", byName["micromesh_requests_total"])
	}
	got := map[string]float64{}
	for _, p := range sum.DataPoints {
		if p.StartTimeUnixNano != uint64(start.UnixNano()) || p.TimeUnixNano != uint64(now.UnixNano()) {
			t.Errorf("point times %d, %d", p.StartTimeUnixNano, p.TimeUnixNano)
		}
		key := ""
		for _, kv := range p.Attributes {
			key += kv.Key + "=" + kv.Value.GetStringValue() + " "
		}
		got[key] = p.GetAsDouble()
	}
	want := map[string]float64{
		"direction=inbound response_code=200 ":                7, // no empty grpc_status attribute
		"direction=inbound grpc_status=14 response_code=200 ": 2,
	}
	if len(got) != len(want) || got["direction=inbound response_code=200 "] != 7 || got["direction=inbound grpc_status=14 response_code=200 "] != 2 {
		t.Errorf("request points = %v, want %v", got, want)
	}

	m := byName["micromesh_request_duration_seconds"]
	h := m.GetHistogram()
	if h == nil || m.Unit != "s" || h.AggregationTemporality != metricsv1.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE || len(h.DataPoints) != 1 {
		t.Fatalf("durations: %v", m)
	}
	p := h.DataPoints[0]
	if p.Count != 5 || p.GetSum() < 3.056 || p.GetSum() > 3.057 {
		t.Errorf("count %d sum %v, want 5 and 3.0565", p.Count, p.GetSum())
	}
	if want := []float64{.001, .01, .1}; !slices.Equal(p.ExplicitBounds, want) {
		t.Errorf("bounds %v, want %v", p.ExplicitBounds, want)
	}
	// Per bucket, not cumulative; the last one is past every bound.
	if want := []uint64{2, 1, 1, 1}; !slices.Equal(p.BucketCounts, want) {
		t.Errorf("bucket counts %v, want %v", p.BucketCounts, want)
	}
}
