package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A canary as a user runs one: helloworld v1 and v2 side by side, pingpong
// calling helloworld; a split sends v2 every call, then the old version
// goes and the split is cleared — no call fails throughout. Real
// processes, sidecars, QUIC and the control plane's weighted clusters.
func TestCanaryBetweenVersions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	srv := startServer(ctx, t)
	examples, _ := filepath.Abs("../../examples")
	for _, v := range []string{"v1", "v2"} {
		srv.run(ctx, t, meshctl, "run", filepath.Join(examples, "helloworld"), "--version", v)
	}
	if out, err := srv.try(ctx, meshctl, "run", filepath.Join(examples, "helloworld"), "--version", "v2"); err == nil || !strings.Contains(out, "helloworld v2 runs") {
		t.Errorf("running v2 twice: %v\n%s", err, out)
	}
	srv.run(ctx, t, meshctl, "run", filepath.Join(examples, "pingpong"))

	// Which instance is which version.
	var svcs []runtimeStatus
	if err := json.Unmarshal([]byte(srv.run(ctx, t, meshctl, "status", "helloworld", "-o", "json")), &svcs); err != nil || len(svcs) != 2 {
		t.Fatalf("status: %v %+v", err, svcs)
	}
	instanceOf := map[string]string{}
	for _, s := range svcs {
		instanceOf[s.Version] = s.Instances[0].ID
	}
	// served counts the calls each version's app logged, read with
	// `logs --version` (which must show that version's instance alone).
	served := func() map[string]int {
		out := map[string]int{}
		for v, id := range instanceOf {
			for _, l := range strings.Split(srv.run(ctx, t, meshctl, "logs", "helloworld", "--version", v, "-n", "1000"), "\n") {
				if l == "" {
					continue
				}
				if !strings.Contains(l, " "+id+" ") {
					t.Fatalf("logs --version %s shows a line of another instance:\n%s", v, l)
				}
				if strings.Contains(l, "method=/examples.helloworld.v1.Helloworld/Call") {
					out[v]++
				}
			}
		}
		return out
	}
	ping := func() {
		t.Helper()
		if out := srv.run(ctx, t, meshctl, "call", "pingpong", "Pingpong.Ping", `{"name":"Bob"}`); out != `{"msg":"Hello Bob"}`+"\n" {
			t.Fatalf("call pingpong: %q", out)
		}
	}

	out := srv.run(ctx, t, meshctl, "split", "set", "helloworld", "v1=0", "v2=100")
	if out != "split helloworld.default: v1=0 v2=100\n" {
		t.Errorf("split set: %q", out)
	}
	// The split reaches pingpong's sidecar within moments; then every call
	// goes to v2.
	deadline := time.Now().Add(10 * time.Second)
	for before := served(); ; {
		ping()
		if now := served(); now["v2"] > before["v2"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no call reached v2 within 10 s of the split: %v", served())
		}
	}
	before := served()
	for range 5 {
		ping()
	}
	after := served()
	if after["v1"] != before["v1"] || after["v2"] != before["v2"]+5 {
		t.Errorf("5 calls under v1=0 v2=100: v1 %d → %d, v2 %d → %d", before["v1"], after["v1"], before["v2"], after["v2"])
	}
	if out := srv.run(ctx, t, meshctl, "services"); !strings.Contains(out, "default/helloworld  v1=0 v2=100") {
		t.Errorf("services does not show the split:\n%s", out)
	}

	// Two versions run: kill says which.
	if out, err := srv.try(ctx, meshctl, "kill", "helloworld"); err == nil || !strings.Contains(out, "several versions") {
		t.Errorf("kill helloworld with two versions running: %v\n%s", err, out)
	}
	srv.run(ctx, t, meshctl, "kill", "helloworld", "--version", "v1")
	srv.run(ctx, t, meshctl, "split", "clear", "helloworld")
	for range 3 {
		ping()
	}

	// Chaos at run time: an operator's fault on helloworld reaches
	// pingpong's sidecar, whose calls to helloworld then fail there (the
	// status comes back through pingpong); cleared, they work again.
	if out := srv.run(ctx, t, meshctl, "policy", "set", "helloworld", "fault_abort_grpc=9"); out != "operator policy of helloworld.default: fault_abort_grpc=9\n" {
		t.Errorf("policy set: %q", out)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		out, err := srv.try(ctx, meshctl, "call", "pingpong", "Pingpong.Ping", `{"name":"Bob"}`)
		if err != nil && strings.Contains(out, "FailedPrecondition") && strings.Contains(out, "fault filter abort") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the operator's fault did not reach pingpong's calls within 10 s: %v\n%s", err, out)
		}
	}
	if out := srv.run(ctx, t, meshctl, "services"); !strings.Contains(out, "operator: fault_abort_grpc=9") {
		t.Errorf("services does not show the operator's policy:\n%s", out)
	}
	srv.run(ctx, t, meshctl, "policy", "clear", "helloworld")
	deadline = time.Now().Add(10 * time.Second)
	for {
		if out, err := srv.try(ctx, meshctl, "call", "pingpong", "Pingpong.Ping", `{"name":"Bob"}`); err == nil && out == `{"msg":"Hello Bob"}`+"\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("calls still fail 10 s after the operator's policy was cleared")
		}
	}
	// The next version by `run --rollout`: it starts beside v2 without
	// traffic, then takes it (here in one step, judged for 30 s on the
	// calls that reach it), and v2 is stopped 30 s after it succeeded.
	out = srv.run(ctx, t, meshctl, "run", filepath.Join(examples, "helloworld"), "--version", "v3", "--rollout", "--rollout-steps", "100", "--rollout-interval", "30s", "--rollout-deadline", "10m")
	if !strings.Contains(out, "helloworld is running: 1 instance(s), version v3") || !strings.Contains(out, "rollout of helloworld.default started: v2=0 v3=100") ||
		!strings.Contains(out, "(rolled back if a step lacks them 10m0s past its interval)") ||
		!strings.Contains(out, "retires: the version that loses is stopped 30s after the end") {
		t.Errorf("run --rollout:\n%s", out)
	}
	// Four callers at once: a step is judged on 20 calls in 30 s, and a
	// meshctl process per call takes its time on this machine.
	pinging, stopPinging := context.WithCancel(ctx)
	var pinged atomic.Int64
	var pingers sync.WaitGroup
	for range 4 {
		pingers.Go(func() {
			for pinging.Err() == nil && pinged.Add(1) < 2000 {
				_, _ = srv.try(pinging, meshctl, "call", "pingpong", "Pingpong.Ping", `{"name":"Bob"}`)
			}
		})
	}
	started := time.Now()
	watched, err := srv.try(ctx, meshctl, "rollout", "status", "helloworld", "--watch")
	stopPinging()
	pingers.Wait()
	t.Logf("%d calls in the %v the rollout ran", pinged.Load(), time.Since(started).Round(time.Second))
	if err != nil || !strings.Contains(watched, "helloworld.default: succeeded (v2=0 v3=100)") {
		t.Fatalf("rollout status --watch: %v\n%s", err, watched)
	}
	deadline = time.Now().Add(45 * time.Second)
	for {
		var svcs []runtimeStatus
		if err := json.Unmarshal([]byte(srv.run(ctx, t, meshctl, "status", "helloworld", "-o", "json")), &svcs); err == nil && len(svcs) == 1 && svcs[0].Version == "v3" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("v2 still runs 45 s after the rollout to v3 succeeded: %v", svcs)
		}
		time.Sleep(time.Second)
	}
	if out := srv.run(ctx, t, meshctl, "rollout", "status", "helloworld"); !strings.Contains(out, "v2's instances stopped") || !strings.Contains(out, "retired: the version that lost stopped at") {
		t.Errorf("rollout status after v2 was stopped:\n%s", out)
	}
	ping()

	for _, name := range []string{"pingpong", "helloworld"} {
		srv.run(ctx, t, meshctl, "kill", name)
	}
	// Versions coming and going move clusters between QUIC and TCP and
	// add and drop clusters: no sidecar refused a config on the way.
	if logs := srv.logs.String(); strings.Contains(logs, "proxy rejected config") {
		t.Errorf("a sidecar NACKed a config:\n%s", logs)
	}
}
