package dataplane_test

import (
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/micromesh/micromesh/dataplane"
	"github.com/micromesh/micromesh/internal/meshtest"
)

// A service sets the traffic policy its callers apply by registering it
// with its instances (--policy on the sidecar): here each try gets 100 ms,
// one retry, against an app that takes 5 s — the default policy (5 s per
// try, two retries, 15 s) would wait for the app's answer.
func TestCallersApplyTheServicesPolicy(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hits := make(chan struct{}, 64)
	slow := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})}
	go func() { _ = slow.Serve(ln) }()
	t.Cleanup(func() { _ = slow.Close() })

	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
	cp.StartSidecar("default", "b", meshtest.WithApp(ln.Addr().String(), "http"),
		meshtest.WithOptions(func(o *dataplane.Options) {
			// consecutive_5xx: no ejection of the only endpoint mid-test.
			o.Policy = map[string]string{"timeout": "3s", "per_try_timeout": "100ms", "retries": "1", "consecutive_5xx": "1000",
				// A path of its own: one try, 1 s in all.
				"/patient/*:timeout": "1s", "/patient/*:retries": "0"}
		}))

	waitFor(t, "a's calls to b time out per b's policy", func() bool {
		resp, _ := call(t, a.Info.Outbound, "b", "/", nil)
		return resp.StatusCode == http.StatusGatewayTimeout
	})
	for len(hits) > 0 {
		<-hits
	}
	start := time.Now()
	resp, e := call(t, a.Info.Outbound, "b", "/", nil)
	took := time.Since(start)
	// Both tries reached the app before the answer: no wait needed.
	if resp.StatusCode != http.StatusGatewayTimeout || len(hits) != 2 || took > 2*time.Second {
		t.Errorf("answer %d %q after %v and %d tries of the app; want 504 after 2 tries of 100 ms", resp.StatusCode, e.Body, took, len(hits))
	}

	// The path's policy: its own timeout and retries, not the service's
	// 3 s and one retry.
	for len(hits) > 0 {
		<-hits
	}
	start = time.Now()
	resp, e = call(t, a.Info.Outbound, "b", "/patient/report", nil)
	took = time.Since(start)
	if resp.StatusCode != http.StatusGatewayTimeout || len(hits) != 1 || took < 900*time.Millisecond || took > 2500*time.Millisecond {
		t.Errorf("/patient/report: answer %d %q after %v and %d tries of the app; want 504 after one try of 1 s", resp.StatusCode, e.Body, took, len(hits))
	}
}
