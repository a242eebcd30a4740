package stats

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	collectorv1 "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	dpstats "github.com/micromesh/micromesh/dataplane/stats"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/otlpwire"
)

// clock is a store's time, moved by the test.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// sidecar is what a sidecar counts, exported as dataplane/stats does.
type sidecar struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	service  string
	instance string
	version  string // service.version; "" for none
	start    time.Time
}

func newSidecar(service, instance string, start time.Time) *sidecar {
	s := &sidecar{reg: prometheus.NewRegistry(), service: service, instance: instance, start: start,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "micromesh_requests_total"},
			[]string{"direction", "source", "destination", "transport", "response_code", "grpc_status", "grpc_method"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "micromesh_request_duration_seconds",
			Buckets: []float64{.001, .01, .1, 1}}, []string{"direction", "destination", "grpc_method"}),
	}
	s.reg.MustRegister(s.requests, s.duration)
	return s
}

// serve counts n inbound requests from source answered code (and gRPC
// status: a call of method pkg.Api/Get), each taking d; the caller's
// sidecar, if given, counts them outbound.
func (s *sidecar) serve(caller *sidecar, n int, code, grpc string, d time.Duration) {
	method := ""
	if grpc != "" {
		method = "pkg.Api/Get"
	}
	for range n {
		s.requests.WithLabelValues("inbound", callerName(caller), s.service, "quic", code, grpc, method).Inc()
		s.duration.WithLabelValues("inbound", s.service, method).Observe(d.Seconds())
		if caller != nil {
			cluster := s.service // as a caller names it: a version's own under a split
			if s.version != "" {
				cluster += "|" + s.version
			}
			caller.requests.WithLabelValues("outbound", caller.service, cluster, "quic", code, grpc, method).Inc()
			caller.duration.WithLabelValues("outbound", cluster, method).Observe(d.Seconds() + .0005)
		}
	}
}

func callerName(c *sidecar) string {
	if c == nil {
		return "unknown"
	}
	return c.service
}

func (s *sidecar) export(t *testing.T, c *Collector, as identity.ID) (*collectorv1.ExportMetricsServiceResponse, error) {
	t.Helper()
	fams, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var req collectorv1.ExportMetricsServiceRequest
	b := dpstats.AppendExportRequest(nil, s.service, otlpwire.Resource{Instance: s.instance, Version: s.version}, s.start, time.Now(), fams)
	if err := proto.Unmarshal(b, &req); err != nil {
		t.Fatal(err)
	}
	return c.Export(context.Background(), &req)
}

func workload(svc string) identity.ID {
	name, ns, _ := strings.Cut(svc, ".")
	return identity.ID{TrustDomain: "micromesh.local", Namespace: ns, Kind: identity.KindService, Name: name}
}

func newCollector(clk *clock) (*Collector, *Store, *identity.ID) {
	st := NewStore()
	st.now = clk.now
	var as identity.ID
	return NewCollector(st, func(context.Context) (identity.ID, error) { return as, nil }, nil), st, &as
}

// A script: two instances of api, one of web calling it; exports every
// 10 s; what a window shows.
func TestRatesSuccessAndLatencyOverAWindow(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	c, st, as := newCollector(clk)
	web := newSidecar("web.shop", "web-1", clk.t.Add(-time.Hour)) // up for an hour: its first export has no rate
	api1 := newSidecar("api.shop", "api-1", clk.t.Add(-time.Hour))
	api2 := newSidecar("api.shop", "api-2", clk.t.Add(-time.Hour))
	api1.serve(web, 1000, "200", "", time.Millisecond) // before the window: not counted
	exportAll := func() {
		for _, s := range []*sidecar{web, api1, api2} {
			*as = workload(s.service)
			if resp, err := s.export(t, c, *as); err != nil || resp.PartialSuccess != nil {
				t.Fatalf("export %s: %v %v", s.instance, resp, err)
			}
		}
	}
	exportAll()
	if svcs, _ := st.Query(time.Minute); len(svcs) != 2 || svcs[0].Requests != 0 || len(svcs[0].Reporting) != 2 {
		t.Fatalf("after one export: %+v; want both services reporting, no figures yet", svcs)
	}
	// 60 s: api-1 serves 540 in 5 ms (10 of them 503s), api-2 60 gRPC
	// calls in 50 ms (6 UNAVAILABLE, 6 NOT_FOUND: the caller's fault).
	for range 6 {
		clk.t = clk.t.Add(10 * time.Second)
		api1.serve(web, 88, "200", "", 5*time.Millisecond)
		api1.serve(web, 2, "503", "", 5*time.Millisecond)
		api2.serve(web, 8, "200", "0", 50*time.Millisecond)
		api2.serve(web, 1, "200", "14", 50*time.Millisecond)
		api2.serve(web, 1, "200", "5", 50*time.Millisecond)
		exportAll()
	}
	svcs, edges := st.Query(time.Minute)
	if len(svcs) != 2 || svcs[0].Service != "api.shop" || svcs[1].Service != "web.shop" {
		t.Fatalf("services %+v", svcs)
	}
	api := svcs[0]
	if api.Requests != 600 || api.Failures != 18 || strings.Join(api.Reporting, ",") != "api-1,api-2" {
		t.Errorf("api: %d requests, %d failures, %v reporting; want 600, 18, api-1 and api-2", api.Requests, api.Failures, api.Reporting)
	}
	if api.PerSecond < 9.99 || api.PerSecond > 10.01 {
		t.Errorf("api: %v requests/s, want 10", api.PerSecond)
	}
	if got, want := api.SuccessRate(), 1-18.0/600; got != want {
		t.Errorf("api: success %v, want %v", got, want)
	}
	// 540 in (1, 10] ms, 60 in (10, 100] ms: the median and p95 in the
	// first bucket, interpolated; p99 in the second.
	if want := time.Duration((0.001 + 0.009*300/540) * float64(time.Second)); api.P50 != want {
		t.Errorf("api p50 %v, want %v", api.P50, want)
	}
	if want := time.Duration((0.01 + 0.09*(594-540)/60.0) * float64(time.Second)); api.P99 != want {
		t.Errorf("api p99 %v, want %v", api.P99, want)
	}
	// api-2's gRPC calls, by method; api-1's HTTP requests in none.
	if m := api.Methods; len(m) != 1 || m["pkg.Api/Get"].Requests != 60 || m["pkg.Api/Get"].Failures != 6 || m["pkg.Api/Get"].P50 <= 10*time.Millisecond {
		t.Errorf("api's methods: %+v; want pkg.Api/Get: 60 requests, 6 failures, p50 over 10 ms", m["pkg.Api/Get"])
	}
	if len(edges) != 1 || edges[0].Source != "web.shop" || edges[0].Destination != "api.shop" || edges[0].Requests != 600 || edges[0].Failures != 18 {
		t.Fatalf("edges %+v", edges)
	}
	if web := svcs[1]; web.Requests != 0 || len(web.Reporting) != 1 {
		t.Errorf("web: %+v, want reporting with no inbound requests", web)
	}

	// api-2 restarts: its totals begin again, and what it counted since
	// its start is its share.
	clk.t = clk.t.Add(10 * time.Second)
	api2 = newSidecar("api.shop", "api-2", clk.t.Add(-5*time.Second))
	api2.serve(nil, 50, "200", "0", 50*time.Millisecond)
	api1.serve(web, 90, "200", "", 5*time.Millisecond)
	exportAll()
	svcs, _ = st.Query(10 * time.Second)
	if svcs[0].Requests != 90+50 {
		t.Errorf("after api-2's restart: %d requests in the last 10 s, want 140 (api-1's 90, api-2's 50 since its start)", svcs[0].Requests)
	}

	// Silent instances drop out of the window, then out of the store.
	clk.t = clk.t.Add(2 * time.Minute)
	if svcs, _ := st.Query(time.Minute); len(svcs) != 0 {
		t.Errorf("two minutes of silence: %+v", svcs)
	}
	clk.t = clk.t.Add(MaxWindow)
	st.Expire()
	if n := len(st.instances); n != 0 {
		t.Errorf("%d instances kept after %v of silence", n, MaxWindow)
	}
}

// A canary as the rollouts judge it: v2's calls as its callers' sidecars
// saw them (its cluster, "api.shop|v2") and as its own did — those count
// the calls of callers that report nothing (a proxyless client, an Envoy
// sidecar) too.
func TestAVersionSeenFromBothEnds(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	c, st, as := newCollector(clk)
	web := newSidecar("web.shop", "web-1", clk.t.Add(-time.Hour))
	v1 := newSidecar("api.shop", "api-1", clk.t.Add(-time.Hour))
	v1.version = "v1"
	v2 := newSidecar("api.shop", "api-2", clk.t.Add(-time.Hour))
	v2.version = "v2"
	exportAll := func() {
		for _, s := range []*sidecar{web, v1, v2} {
			*as = workload(s.service)
			if resp, err := s.export(t, c, *as); err != nil || resp.PartialSuccess != nil {
				t.Fatalf("export %s: %v %v", s.instance, resp, err)
			}
		}
	}
	exportAll()
	for range 3 {
		clk.t = clk.t.Add(10 * time.Second)
		v1.serve(web, 90, "200", "", time.Millisecond)
		v2.serve(web, 9, "200", "", 5*time.Millisecond)
		v2.serve(web, 1, "503", "", 5*time.Millisecond)
		v2.serve(nil, 20, "503", "", 50*time.Millisecond) // a proxyless client's calls
		exportAll()
	}
	callers, own := st.Destination(time.Minute, "api.shop|v2"), st.Version(time.Minute, "api.shop", "v2")
	if callers.Requests != 30 || callers.Failures != 3 {
		t.Errorf("v2 as its callers saw it: %d requests, %d failed; want 30, 3", callers.Requests, callers.Failures)
	}
	if own.Requests != 90 || own.Failures != 63 || own.P99 <= 10*time.Millisecond {
		t.Errorf("v2 at its own sidecars: %d requests, %d failed, p99 %v; want 90, 63, over 10 ms", own.Requests, own.Failures, own.P99)
	}
	if v := st.Version(time.Minute, "api.shop", "v1"); v.Requests != 270 || v.Failures != 0 {
		t.Errorf("v1 at its own sidecars: %+v", v)
	}
	if v := st.Version(time.Minute, "web.shop", "v2"); v.Requests != 0 {
		t.Errorf("another service's v2: %+v", v)
	}
	svcs, _ := st.Query(time.Minute)
	if len(svcs) != 2 || len(svcs[0].Versions) != 2 || svcs[0].Versions["v2"].Requests != 90 || svcs[0].Versions["v1"].Requests != 270 || svcs[0].Versions["v2"].P50 == 0 {
		t.Errorf("api's versions: %+v", svcs[0].Versions)
	}
	if len(svcs[1].Versions) != 0 {
		t.Errorf("web, of no version: %+v", svcs[1].Versions)
	}
}

// Frequent exports do not grow what is kept: one sample per step.
func TestSamplesKeptPerStep(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	c, st, as := newCollector(clk)
	s := newSidecar("api.shop", "api-1", clk.t)
	*as = workload("api.shop")
	for range 3000 { // 10 minutes of exports every 200 ms
		clk.t = clk.t.Add(200 * time.Millisecond)
		s.serve(nil, 1, "200", "", time.Millisecond)
		if _, err := s.export(t, c, *as); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(st.instances["api.shop\x00api-1"].samples); n > int(MaxWindow/step)+3 {
		t.Errorf("%d samples kept, want at most %d", n, int(MaxWindow/step)+3)
	}
	svcs, _ := st.Query(time.Minute)
	if r := svcs[0].PerSecond; r < 4.9 || r > 5.1 {
		t.Errorf("%v requests/s, want 5", r)
	}
}

// The collector refuses what it cannot keep, saying why.
func TestCollectorRefusals(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	c, _, as := newCollector(clk)
	s := newSidecar("api.shop", "api-1", clk.t)
	s.serve(nil, 1, "200", "", time.Millisecond)

	*as = workload("web.shop")
	if _, err := s.export(t, c, *as); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "its own service only") {
		t.Errorf("another service's metrics: %v", err)
	}
	*as = identity.ID{TrustDomain: "micromesh.local", Namespace: "shop", Kind: identity.KindUser, Name: "ada"}
	if _, err := s.export(t, c, *as); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a user's export: %v", err)
	}
	*as = workload("api.shop")
	s.instance = ""
	if _, err := s.export(t, c, *as); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "service.instance.id") {
		t.Errorf("no instance ID: %v", err)
	}
	s.instance = "api-1"
	s.version = "V 2!"
	if _, err := s.export(t, c, *as); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "service.version") {
		t.Errorf("a malformed version: %v", err)
	}
	s.version = ""

	// A malformed histogram point is refused in a partial success; the
	// rest is kept.
	fams, _ := s.reg.Gather()
	var req collectorv1.ExportMetricsServiceRequest
	if err := proto.Unmarshal(dpstats.AppendExportRequest(nil, "api.shop", otlpwire.Resource{Instance: "api-1"}, clk.t, clk.t, fams), &req); err != nil {
		t.Fatal(err)
	}
	for _, m := range req.ResourceMetrics[0].ScopeMetrics[0].Metrics {
		if h := m.GetHistogram(); h != nil {
			h.DataPoints[0].BucketCounts[0] += 7
		}
	}
	resp, err := c.Export(context.Background(), &req)
	if err != nil || resp.PartialSuccess.GetRejectedDataPoints() != 1 || !strings.Contains(resp.PartialSuccess.GetErrorMessage(), "bucket counts add up to") {
		t.Errorf("a malformed histogram: %v %v", resp, err)
	}

	// Made-up instance IDs cannot fill the control plane's memory: past
	// MaxInstances of one service, new ones are refused until some fall
	// silent.
	for i := range MaxInstances + 1 {
		clk.t = clk.t.Add(time.Millisecond)
		s.instance = fmt.Sprintf("made-up-%d", i)
		_, err = s.export(t, c, *as)
		if i < MaxInstances-1 && err != nil {
			t.Fatalf("instance %d: %v", i, err)
		}
	}
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "more than 1024 instances") {
		t.Errorf("instance %d: %v, want ResourceExhausted", MaxInstances+1, err)
	}
	clk.t = clk.t.Add(MaxWindow + time.Minute)
	c.store.Expire()
	if _, err := s.export(t, c, *as); err != nil {
		t.Errorf("after the others fell silent: %v", err)
	}
}

// Reporting counts the registered instances that reported; a service with
// none registered (an edge proxy), those that reported.
func TestReportingInstances(t *testing.T) {
	for _, c := range []struct {
		reported, registered []string
		want                 uint32
	}{
		{[]string{"a-1", "a-2"}, []string{"a-1", "a-2"}, 2},
		{[]string{"a-1", "a-2"}, []string{"a-1"}, 1}, // a-2 scaled away within the window
		{[]string{"a-1"}, []string{"a-1", "a-3"}, 1}, // a-3 not reporting (yet)
		{[]string{"gateway-1"}, nil, 1},
		{nil, []string{"a-1"}, 0},
	} {
		if got := reporting(c.reported, c.registered); got != c.want {
			t.Errorf("reporting(%v, %v) = %d, want %d", c.reported, c.registered, got, c.want)
		}
	}
}
