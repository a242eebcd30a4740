package stats

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	collectorv1 "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	"google.golang.org/protobuf/proto"

	dpstats "github.com/micromesh/micromesh/dataplane/stats"
	"github.com/micromesh/micromesh/internal/otlpwire"
)

// A mesh of 1,000 sidecars, each with 20 request series (callers ×
// codes) and 2 histograms, exporting every 10 s: what one export costs
// the control plane, what a query over all of them costs, and what the
// store holds once every instance has a full window of samples. The
// baseline is decoding the same export (what any collector pays).
// heapOf is how much the live heap shrinks when drop runs.
func heapOf(drop func()) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	drop()
	runtime.GC()
	runtime.ReadMemStats(&after)
	return float64(before.HeapAlloc) - float64(after.HeapAlloc)
}

func BenchmarkStatsAt1000Sidecars(b *testing.B) {
	const sidecars, callers = 1000, 5
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	c, st, as := newCollector(clk)
	reqs := make([]*collectorv1.ExportMetricsServiceRequest, sidecars)
	raw := make([][]byte, sidecars)
	for i := range sidecars {
		svc := fmt.Sprintf("svc%d.default", i%100)
		s := newSidecar(svc, fmt.Sprintf("inst-%d", i), clk.t)
		for j := range callers {
			caller := newSidecar(fmt.Sprintf("caller%d.default", j), "x", clk.t)
			s.serve(caller, 100, "200", "0", time.Millisecond)
			s.serve(caller, 1, "200", "14", time.Millisecond)
			s.serve(caller, 1, "503", "", time.Millisecond)
			s.serve(caller, 1, "200", "5", time.Millisecond)
			s.requests.WithLabelValues("outbound", svc, caller.service, "quic", "200", "0", "pkg.Api/Get").Add(50)
		}
		fams, _ := s.reg.Gather()
		raw[i] = dpstats.AppendExportRequest(nil, svc, otlpwire.Resource{Instance: s.instance}, s.start, clk.t, fams)
		reqs[i] = &collectorv1.ExportMetricsServiceRequest{}
		if err := proto.Unmarshal(raw[i], reqs[i]); err != nil {
			b.Fatal(err)
		}
	}
	ctx := b.Context()
	// A full window: every instance 61 times, 10 s apart.
	for range int(MaxWindow/step) + 1 {
		clk.t = clk.t.Add(step)
		for i, r := range reqs {
			*as = workload(fmt.Sprintf("svc%d.default", i%100))
			if _, err := c.Export(ctx, r); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("export", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			clk.t = clk.t.Add(10 * time.Millisecond)
			*as = workload(fmt.Sprintf("svc%d.default", i%sidecars%100))
			var req collectorv1.ExportMetricsServiceRequest
			if err := proto.Unmarshal(raw[i%sidecars], &req); err != nil {
				b.Fatal(err)
			}
			if _, err := c.Export(ctx, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode-baseline", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			var req collectorv1.ExportMetricsServiceRequest
			if err := proto.Unmarshal(raw[i%sidecars], &req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("query-1m", func(b *testing.B) {
		for b.Loop() {
			if svcs, _ := st.Query(time.Minute); len(svcs) != 100 {
				b.Fatalf("%d services", len(svcs))
			}
		}
	})
	// What the store holds once every instance has a full window of
	// samples (measured by dropping them).
	kept := heapOf(func() { st.mu.Lock(); defer st.mu.Unlock(); clear(st.instances); clear(st.counts) }) / (1 << 20)
	b.Run("window-kept", func(b *testing.B) {
		for b.Loop() {
		}
		b.ReportMetric(kept, "MB")
		b.ReportMetric(float64(len(raw[0])), "B/export")
	})

}
