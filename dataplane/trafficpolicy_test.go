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
// with its instances (--policy on the sidecar): here a 300 ms timeout and
// no retries, against an app that takes 5 s.
func TestCallersApplyTheServicesPolicy(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hits := make(chan struct{}, 16)
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
		meshtest.WithOptions(func(o *dataplane.Options) { o.Policy = map[string]string{"timeout": "300ms", "retries": "0"} }))

	var took time.Duration
	waitFor(t, "a's call to b times out after b's policy timeout", func() bool {
		start := time.Now()
		resp, _ := call(t, a.Info.Outbound, "b", "/", nil)
		took = time.Since(start)
		return resp.StatusCode == http.StatusGatewayTimeout
	})
	if took > 2*time.Second {
		t.Errorf("the timed-out call took %v; the policy says 300ms", took)
	}
	// No retries: the app saw the last call once.
	for len(hits) > 0 {
		<-hits
	}
	resp, _ := call(t, a.Info.Outbound, "b", "/", nil)
	time.Sleep(100 * time.Millisecond) // a retry would have arrived by now
	if resp.StatusCode != http.StatusGatewayTimeout || len(hits) != 1 {
		t.Errorf("answer %d after %d tries of the app; want 504 after one (retries 0)", resp.StatusCode, len(hits))
	}
}
