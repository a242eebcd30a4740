package dataplane_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/internal/meshtest"
	tapv1 "github.com/micromesh/micromesh/proto/tap/v1"
)

// meshctl tap's path: while anyone watches b, b's sidecar sends each
// request it takes to the control plane (Envoy's OpenTelemetry access
// logger, and not the stdout one: the service's log is not touched),
// which hands it to the watchers; when the last one goes, the sidecar
// stops. The policy's access_log=on has both loggers, watched or not.
func TestTapOfAService(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	a, b := echoPair(t, cp)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// watch watches b until its context ends; its records arrive on the
	// channel it returns.
	watch := func(ctx context.Context) <-chan *tapv1.WatchResponse {
		t.Helper()
		w, err := cp.TapClient().Watch(ctx, &tapv1.WatchRequest{Service: "b"})
		if err == nil {
			_, err = w.Header() // watching from here on
		}
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan *tapv1.WatchResponse, 100)
		go func() {
			defer close(got)
			for {
				r, err := w.Recv()
				if err != nil {
					return
				}
				got <- r
			}
		}()
		return got
	}
	// firstCall calls b until a record of one of the calls arrives on got
	// (the watch reaches b's sidecar within a push).
	firstCall := func(got <-chan *tapv1.WatchResponse) *tapv1.WatchResponse {
		t.Helper()
		for {
			path := fmt.Sprintf("/tapped-%d?x=1", time.Now().UnixNano())
			call(t, a.Info.Outbound, "b", path, nil)
			select {
			case r := <-got:
				return r
			case <-time.After(300 * time.Millisecond):
			case <-ctx.Done():
				t.Fatal("no request arrived at the watcher")
			}
		}
	}
	loggers := func() (otel, stdout bool) {
		dump := adminText(t, b.Info.Admin, "/config_dump")
		return strings.Contains(dump, "envoy.access_loggers.open_telemetry"), strings.Contains(dump, "envoy.access_loggers.stdout")
	}
	if otel, stdout := loggers(); otel || stdout {
		t.Fatalf("b's sidecar logs before anyone watches (OpenTelemetry %v, stdout %v)", otel, stdout)
	}

	first, stopFirst := context.WithCancel(ctx)
	r := firstCall(watch(first))
	if r.GetSource() != "spiffe://micromesh.local/ns/default/svc/a" || r.GetMethod() != "POST" || !strings.HasPrefix(r.GetPath(), "/tapped-") ||
		!strings.HasSuffix(r.GetPath(), "?x=1") || r.GetCode() != 200 || r.GetGrpcStatus() != -1 || r.GetProtocol() != "HTTP/3" ||
		r.GetRequestId() == "" || r.GetInstance() == "" || r.GetDuration() == nil || r.GetTime().AsTime().Before(time.Now().Add(-time.Minute)) {
		t.Errorf("tapped request %v", r)
	}
	if otel, stdout := loggers(); !otel || stdout {
		t.Errorf("b's sidecar while tapped: OpenTelemetry logger %v (want it), stdout logger %v (want none)", otel, stdout)
	}

	// A second watcher; the first goes: b's sidecar keeps sending.
	second, stopSecond := context.WithCancel(ctx)
	got := watch(second)
	stopFirst()
	time.Sleep(300 * time.Millisecond) // a push would have gone by now
	if otel, _ := loggers(); !otel {
		t.Fatal("b's sidecar stopped sending with a watcher left")
	}
	since := time.Now()
	for r := firstCall(got); r.GetTime().AsTime().Before(since); r = firstCall(got) {
		// a record of a call before the first watcher went
	}

	// The last goes: the sidecar drops the logger.
	stopSecond()
	waitFor(t, "b's sidecar to drop the logger once nobody watches", func() bool {
		otel, _ := loggers()
		return !otel
	})

	// The policy's access log: both loggers, with nobody watching.
	if err := cp.Registry().SetPolicy(ctx, registry.Policy{Service: "b", Keys: map[string]string{"access_log": "on"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b's sidecar to log as its policy says", func() bool {
		otel, stdout := loggers()
		return otel && stdout
	})

	// A workload may not watch; a malformed name is refused.
	for _, c := range []struct {
		client tapv1.TapServiceClient
		req    *tapv1.WatchRequest
		want   codes.Code
	}{
		{tapv1.NewTapServiceClient(cp.Dial(a.Creds)), &tapv1.WatchRequest{Service: "b"}, codes.PermissionDenied},
		{cp.TapClient(), &tapv1.WatchRequest{Service: "No_Such"}, codes.InvalidArgument},
		{cp.TapClient(), &tapv1.WatchRequest{Service: "b", Namespace: "x.y"}, codes.InvalidArgument},
	} {
		s, err := c.client.Watch(ctx, c.req)
		if err == nil {
			_, err = s.Recv() // a server stream's refusal comes with its first message
		}
		if status.Code(err) != c.want {
			t.Errorf("%v: %v, want %v", c.req, err, c.want)
		}
	}
}
