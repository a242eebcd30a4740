package dataplane_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/micromesh/micromesh/dataplane"
	"github.com/micromesh/micromesh/internal/meshtest"
	statsv1 "github.com/micromesh/micromesh/proto/stats/v1"
)

// The sidecars send their request counts to the control plane, which
// answers with each service's rate, success and latency, and each call's.
func TestStatsOfTheMesh(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	often := meshtest.WithOptions(func(o *dataplane.Options) { o.StatsInterval = 200 * time.Millisecond })
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"), often)
	cp.StartSidecar("default", "b", meshtest.WithApp(startEcho(t, "b"), "http"), often)
	waitFor(t, "a can reach b", func() bool {
		resp, _ := call(t, a.Info.Outbound, "b", "/warm", nil)
		return resp.StatusCode == 200
	})
	// 12 answers and 4 failures (500s from b's app; one in four, so that
	// outlier detection's five in a row never eject b).
	for i := range 16 {
		var h http.Header
		if i%4 == 3 {
			h = http.Header{"X-Echo-Status": {"500"}}
		}
		_, _ = call(t, a.Info.Outbound, "b", "/work", h)
	}

	sc := cp.StatsClient()
	var resp *statsv1.GetStatsResponse
	waitFor(t, "b's failures in its stats", func() bool {
		r, err := sc.GetStats(context.Background(), &statsv1.GetStatsRequest{Namespace: "default"})
		if err != nil {
			t.Fatal(err)
		}
		resp = r
		for _, s := range r.Services {
			if s.Service == "b.default" && s.Traffic.Failures == 4 && s.Traffic.Requests >= 17 {
				return true
			}
		}
		return false
	})
	services := map[string]*statsv1.ServiceStats{}
	for _, s := range resp.Services {
		services[s.Service] = s
	}
	b := services["b.default"]
	if b.Instances != 1 || b.Reporting != 1 {
		t.Errorf("b: %d of %d instances reporting, want 1 of 1", b.Reporting, b.Instances)
	}
	tr := b.Traffic
	if want := 1 - 4/float64(tr.Requests); tr.SuccessRate != want || tr.RequestsPerSecond <= 0 {
		t.Errorf("b: success %v (want %v), %v requests/s", tr.SuccessRate, want, tr.RequestsPerSecond)
	}
	if tr.P50 == nil || tr.P99 == nil || tr.P50.AsDuration() <= 0 || tr.P99.AsDuration() < tr.P50.AsDuration() || tr.P99.AsDuration() > 10*time.Second {
		t.Errorf("b: latency p50 %v p99 %v", tr.P50.AsDuration(), tr.P99.AsDuration())
	}
	// a is in the mesh and reports, but nobody called it.
	if s := services["a.default"]; s == nil || s.Reporting != 1 || s.Traffic.Requests != 0 || s.Traffic.P50 != nil {
		t.Errorf("a: %v, want reporting, no requests", s)
	}
	// The call from a to b, as a's sidecar saw it.
	var edge *statsv1.EdgeStats
	for _, e := range resp.Edges {
		if e.Source == "a.default" && e.Destination == "b.default" {
			edge = e
		}
	}
	if edge == nil || edge.Traffic.Failures < 4 || edge.Traffic.Requests < 17 || edge.Traffic.P99 == nil { // (a warm-up 503 may count too)
		t.Fatalf("edges %v: want a.default → b.default with the 4 failures", resp.Edges)
	}

	// Another namespace's view has none of them; one service's, only it
	// and its calls.
	if r, err := sc.GetStats(context.Background(), &statsv1.GetStatsRequest{Namespace: "shop"}); err != nil || len(r.Services) != 0 || len(r.Edges) != 0 {
		t.Errorf("namespace shop: %v %v", r, err)
	}
	// (a's calls while b was not yet routable count as calls to "b", the
	// name a asked for: failures too.)
	r, err := sc.GetStats(context.Background(), &statsv1.GetStatsRequest{Service: "a"})
	if err != nil || len(r.Services) != 1 || r.Services[0].Service != "a.default" || len(r.Edges) == 0 {
		t.Fatalf("service a: %v %v", r, err)
	}
	for _, e := range r.Edges {
		if e.Source != "a.default" {
			t.Errorf("service a's calls include %s → %s", e.Source, e.Destination)
		}
	}

	// Bad input is refused, saying what would do.
	for _, c := range []struct {
		req  *statsv1.GetStatsRequest
		want string
	}{
		{&statsv1.GetStatsRequest{Window: durationpb.New(time.Second)}, "want 10s to 10m0s"},
		{&statsv1.GetStatsRequest{Namespace: "Not_A_Label"}, "namespace"},
		{&statsv1.GetStatsRequest{Service: "b.default", Namespace: "shop"}, "not in namespace"},
	} {
		_, err := sc.GetStats(context.Background(), c.req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want InvalidArgument saying %q", c.req, err, c.want)
		}
	}
	// The figures are for the platform's identities, not for workloads.
	_, err = statsv1.NewStatsServiceClient(cp.Dial(a.Creds)).GetStats(context.Background(), &statsv1.GetStatsRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("a workload asking for stats: %v", err)
	}
}
