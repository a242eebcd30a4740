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

// meshctl tap's path: with b's policy access_log=on, b's sidecar sends
// each request it takes to the control plane (Envoy's OpenTelemetry access
// logger), which hands it to whoever watches b; cleared, they stop.
func TestTapOfAService(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	a, b := echoPair(t, cp)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	watch, err := cp.TapClient().Watch(ctx, &tapv1.WatchRequest{Service: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Header(); err != nil { // watching from here on
		t.Fatal(err)
	}
	if err := cp.Registry().SetPolicy(ctx, registry.Policy{Service: "b", Keys: map[string]string{"access_log": "on"}}); err != nil {
		t.Fatal(err)
	}
	got := make(chan *tapv1.WatchResponse, 100)
	go func() {
		for {
			r, err := watch.Recv()
			if err != nil {
				close(got)
				return
			}
			got <- r
		}
	}()
	// Calls until one arrives (the policy reaches b's sidecar within the
	// debounce).
	var r *tapv1.WatchResponse
	for r == nil {
		path := fmt.Sprintf("/tapped-%d?x=1", time.Now().UnixNano())
		call(t, a.Info.Outbound, "b", path, nil)
		select {
		case r = <-got:
		case <-time.After(300 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("no request arrived at the watcher")
		}
	}
	if r.GetSource() != "spiffe://micromesh.local/ns/default/svc/a" || r.GetMethod() != "POST" || !strings.HasPrefix(r.GetPath(), "/tapped-") ||
		!strings.HasSuffix(r.GetPath(), "?x=1") || r.GetCode() != 200 || r.GetGrpcStatus() != -1 || r.GetProtocol() != "HTTP/3" ||
		r.GetRequestId() == "" || r.GetInstance() == "" || r.GetDuration() == nil || r.GetTime().AsTime().Before(time.Now().Add(-time.Minute)) {
		t.Errorf("tapped request %v", r)
	}

	// Cleared: b's sidecar drops the logger and sends nothing more.
	if !strings.Contains(adminText(t, b.Info.Admin, "/config_dump"), "envoy.access_loggers.open_telemetry") {
		t.Fatal("b's /config_dump does not show the OpenTelemetry access logger it is using")
	}
	if err := cp.Registry().DeletePolicy(ctx, "default", "b"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b's sidecar to drop the logger", func() bool {
		return !strings.Contains(adminText(t, b.Info.Admin, "/config_dump"), "open_telemetry")
	})
	// Records of the calls before may still be on their way; /after's
	// must never come (three flush intervals: a record made would be here).
	call(t, a.Info.Outbound, "b", "/after", nil)
	deadline := time.After(3 * time.Second / 2)
	for waiting := true; waiting; {
		select {
		case r := <-got:
			if r.GetPath() == "/after" {
				t.Errorf("after the policy was cleared, the watcher got %v", r)
			}
		case <-deadline:
			waiting = false
		}
	}

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
