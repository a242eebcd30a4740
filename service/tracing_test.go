package service_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/micromesh/micromesh/dataplane/tracing"
	"github.com/micromesh/micromesh/examples/helloworld/handler"
	hello "github.com/micromesh/micromesh/examples/helloworld/proto"
	pphandler "github.com/micromesh/micromesh/examples/pingpong/handler"
	pb "github.com/micromesh/micromesh/examples/pingpong/proto"
	"github.com/micromesh/micromesh/internal/envconfig"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/poll"
	tracev1 "github.com/micromesh/micromesh/proto/trace/v1"
	"github.com/micromesh/micromesh/runtime"
	"github.com/micromesh/micromesh/service"
)

// A service's own spans join the mesh's trace: pingpong, started as the
// runtime starts it (OpenTelemetry's variables pointing at its sidecar),
// records a span around its call to helloworld with OpenTelemetry's API;
// the span reaches the control plane through the sidecar, under the
// sidecar's SERVER span, and the call to helloworld hangs under it. A
// request the mesh does not record gets no span of the app's either.
func TestAppSpansJoinTheMeshTrace(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane(meshtest.WithTracing(0))
	cp.StartService("default", "helloworld", func(s *service.Service) {
		hello.RegisterHelloworldServer(s.Server(), handler.Helloworld{})
	})

	// pingpong as `meshctl run` starts it: its sidecar first, then the app
	// with the runtime's environment.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pp := cp.StartSidecar("default", "pingpong", meshtest.WithApp(lis.Addr().String(), "grpc"))
	for _, kv := range runtime.AppTraceEnv("pingpong.default", pp.Info.Admin) {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	t.Setenv(envconfig.Proxy, pp.Info.Outbound)
	t.Setenv(envconfig.Namespace, "default")
	svc := service.New(service.Name("pingpong"), service.GracePeriod(time.Second))
	conn, err := service.Dial(t.Context(), "helloworld")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pb.RegisterPingpongServer(svc.Server(), &pphandler.Pingpong{Hello: hello.NewHelloworldClient(conn)})
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- svc.Serve(ctx, lis) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Error(err)
		}
	})

	caller := cp.StartSidecar("default", "caller")
	client := pb.NewPingpongClient(meshtest.DialThrough(t, caller.Info.Outbound, "pingpong"))
	ping := func(sampled bool) tracing.Context {
		tc := tracing.Context{TraceID: tracing.NewTraceID(), SpanID: tracing.NewSpanID(), Sampled: sampled}
		ctx := metadata.AppendToOutgoingContext(t.Context(), "traceparent", tc.String())
		if _, err := client.Ping(ctx, &pb.PingRequest{Name: "Ann"}, grpc.WaitForReady(true)); err != nil {
			t.Fatalf("Ping: %v", err)
		}
		return tc
	}
	poll.Until(t, "pingpong reaches helloworld", 20*time.Second, 100*time.Millisecond, func() bool {
		_, err := client.Ping(t.Context(), &pb.PingRequest{Name: "warm"})
		return err == nil
	})

	unrecorded := ping(false)
	recorded := ping(true)
	var spans []*tracev1.Span
	poll.Until(t, "the recorded call's five spans", 20*time.Second, 100*time.Millisecond, func() bool {
		r, err := cp.TraceClient().GetTrace(t.Context(), &tracev1.GetTraceRequest{TraceId: recorded.TraceIDString()})
		if err != nil {
			return false
		}
		spans = r.Spans
		return len(spans) == 5
	})
	want := []struct{ service, kind string }{
		{"caller.default", "KIND_CLIENT"}, {"pingpong.default", "KIND_SERVER"}, {"pingpong.default", "KIND_INTERNAL"},
		{"pingpong.default", "KIND_CLIENT"}, {"helloworld.default", "KIND_SERVER"},
	}
	for i, s := range spans {
		if s.Service != want[i].service || s.Kind.String() != want[i].kind {
			t.Errorf("span %d: %s %s %q, want %s %s", i, s.Service, s.Kind, s.Name, want[i].service, want[i].kind)
		}
		if i > 0 && s.ParentSpanId != spans[i-1].SpanId {
			t.Errorf("span %d (%s %s) has parent %s, want %s", i, s.Service, s.Kind, s.ParentSpanId, spans[i-1].SpanId)
		}
	}
	app := spans[2]
	if app.Name != "ask helloworld" || app.Attributes["pingpong.name_length"] != "3" {
		t.Errorf("pingpong's own span: %q %v", app.Name, app.Attributes)
	}
	if !app.Start.AsTime().After(spans[1].Start.AsTime()) || app.Duration.AsDuration() > spans[1].Duration.AsDuration() {
		t.Errorf("pingpong's span (%v, %v) is not within its sidecar's (%v, %v)", app.Start.AsTime(), app.Duration.AsDuration(), spans[1].Start.AsTime(), spans[1].Duration.AsDuration())
	}

	// The unrecorded call (made first, so its span would have gone first)
	// left nothing: the sidecar sent one span of the app's in all.
	if r, err := cp.TraceClient().GetTrace(t.Context(), &tracev1.GetTraceRequest{TraceId: unrecorded.TraceIDString()}); err == nil && len(r.Spans) > 0 {
		t.Errorf("the unrecorded call left %d span(s)", len(r.Spans))
	}
	if n := appSpansExported(t, pp.Info.Admin); n != 1 {
		t.Errorf("pingpong's sidecar exported %v spans of its app's, want 1", n)
	}
}

// appSpansExported reads micromesh_app_spans_exported_total off a
// sidecar's admin listener.
func appSpansExported(t *testing.T, admin string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(line, "micromesh_app_spans_exported_total "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no micromesh_app_spans_exported_total on the sidecar's /metrics")
	return 0
}
