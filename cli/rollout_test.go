package cli

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/dataplane"
	hellohandler "github.com/micromesh/micromesh/examples/helloworld/handler"
	hellopb "github.com/micromesh/micromesh/examples/helloworld/proto"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/poll"
	"github.com/micromesh/micromesh/internal/proxylesstest"
	"github.com/micromesh/micromesh/service"
)

// broken is a helloworld whose every call fails (the server's fault).
type broken struct {
	hellopb.UnimplementedHelloworldServer
}

func (broken) Call(context.Context, *hellopb.CallRequest) (*hellopb.CallResponse, error) {
	return nil, status.Error(codes.Internal, "v2 is broken")
}

// helloworldInThreeVersions starts a mesh with helloworld v1 (healthy), v2
// (broken) and v3 (healthy), whose sidecars report every 200 ms; cli
// runs meshctl on it.
func helloworldInThreeVersions(t *testing.T) (cp *meshtest.ControlPlane, home string, cli func(args ...string) (string, error)) {
	env := meshtest.NewEnv(t)
	cp = env.StartControlPlane()
	often := func(version string) meshtest.SidecarOption {
		return meshtest.WithOptions(func(o *dataplane.Options) { o.Version = version; o.StatsInterval = 200 * time.Millisecond })
	}
	cp.StartService("default", "helloworld", func(s *service.Service) { hellopb.RegisterHelloworldServer(s.Server(), hellohandler.Helloworld{}) }, often("v1"))
	cp.StartService("default", "helloworld", func(s *service.Service) { hellopb.RegisterHelloworldServer(s.Server(), broken{}) }, often("v2"))
	cp.StartService("default", "helloworld", func(s *service.Service) { hellopb.RegisterHelloworldServer(s.Server(), hellohandler.Helloworld{}) }, often("v3"))
	home = string(env.Home)
	return cp, home, func(args ...string) (string, error) { return runCLI(t, append([]string{"--home", home}, args...)...) }
}

// A progressive rollout as an operator runs one, with callers busy: to a
// broken version it is rolled back on its own within seconds (callers get
// v1 alone again); one aborted goes back at once; to a healthy version it
// goes step by step to all the traffic.
func TestRolloutCommands(t *testing.T) {
	cp, home, cli := helloworldInThreeVersions(t)
	status := func() rolloutOutput {
		t.Helper()
		out, err := cli("-o", "json", "rollout", "status")
		var rs []rolloutOutput
		if err != nil || json.Unmarshal([]byte(out), &rs) != nil || len(rs) != 1 {
			t.Fatalf("rollout status: %q, %v", out, err)
		}
		return rs[0]
	}

	// Callers: a caller's sidecar calling helloworld every 10 ms (at most
	// 12,000 calls), counting failures since the last reset.
	caller := cp.StartSidecar("default", "caller", meshtest.WithOptions(func(o *dataplane.Options) { o.StatsInterval = 200 * time.Millisecond }))
	client := hellopb.NewHelloworldClient(meshtest.DialThrough(t, caller.Info.Outbound, "helloworld"))
	if _, err := cli("split", "set", "helloworld", "v1=100"); err != nil {
		t.Fatal(err)
	}
	var failed, calls atomic.Int64
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; i < 12000 && ctx.Err() == nil; i++ {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if _, err := client.Call(cctx, &hellopb.CallRequest{Name: "r"}); err != nil && ctx.Err() == nil {
				failed.Add(1)
			}
			cancel()
			calls.Add(1)
			time.Sleep(10 * time.Millisecond)
		}
	})
	t.Cleanup(func() { stop(); wg.Wait() })
	waitFor(t, func() bool { return calls.Load() > 20 })

	// Refusals first: each says what to do, and changes nothing.
	for args, mention := range map[string]string{
		"rollout start helloworld":                           "--to",
		"rollout start helloworld --to v9":                   "no instance of version v9 registered",
		"rollout start helloworld --to v2 --steps 10,5,100":  "each above the one before",
		"rollout start helloworld --to v2 --steps 10,50":     "the last gives the new version 100 %",
		"rollout start helloworld --to v2 --interval 1s":     "interval 1s: between 30s",
		"rollout start helloworld --to v2 --deadline 1s":     "deadline 1s: 0 (a step waits for traffic as long as it takes) or between 30s and 24h0m0s",
		"rollout start helloworld --to v2 --min-success 120": "want a percentage",
		"rollout start helloworld --from v1 --to v1":         "from v1 to itself",
		"rollout start helloworld --to v1":                   "name the one traffic moves from with --from",
		"rollout abort helloworld":                           "no rollout in progress",
		"rollout status helloworld":                          "has no rollout",
		"rollout status --watch":                             "name the service",
	} {
		if _, err := cli(strings.Fields(args)...); err == nil || !strings.Contains(describe(err), mention) {
			t.Errorf("%s: %v; want an error mentioning %q", args, err, mention)
		}
	}

	// To the broken v2: rolled back by the control plane.
	out, err := cli("rollout", "start", "helloworld", "--to", "v2", "--steps", "20,100", "--interval", "30s", "--min-requests", "5", "--deadline", "10m")
	if err != nil || !strings.Contains(out, "rollout of helloworld.default started: v1=80 v2=20") || !strings.Contains(out, "step 1 of 2 (v2 at 20 %)") ||
		!strings.Contains(out, "judged on ≥ 5 requests (rolled back if a step lacks them 10m0s past its interval)") {
		t.Fatalf("rollout start: %q, %v", out, err)
	}
	// Followed until it ends: it fails, saying how.
	if _, err := cli("rollout", "status", "helloworld", "--watch"); err == nil || !strings.Contains(err.Error(), "the rollout of helloworld.default rolled back: v2's success rate") {
		t.Fatalf("rollout status --watch of the broken version: %v", err)
	}
	r := status()
	if r.Shares != "v1=100 v2=0" || !strings.Contains(r.Message, "v2's success rate") || !strings.Contains(r.Message, "all traffic back to v1") {
		t.Errorf("rolled back: %+v", r)
	}
	if failed.Load() == 0 {
		t.Error("no call failed while v2 had a share: the test did not exercise the rollback")
	}
	// Once callers' sidecars have the split back (a push away), no call
	// fails: 50 calls in a row succeed.
	poll.Until(t, "50 calls in a row without a failure after the rollback", 15*time.Second, 10*time.Millisecond, func() bool {
		failed.Store(0)
		n := calls.Load()
		for calls.Load() < n+50 {
			time.Sleep(10 * time.Millisecond)
		}
		return failed.Load() == 0
	})

	// Aborted: back to v1 at once.
	// (Zero thresholds are kept as given, not taken for defaults.)
	if _, err := cli("rollout", "start", "helloworld", "--to", "v3", "--interval", "30s", "--min-success", "0", "--min-requests", "0"); err != nil {
		t.Fatal(err)
	}
	if r := status(); r.MinSuccess != 0 || r.MinRequests != 0 {
		t.Errorf("zero thresholds read back as %v and %d", r.MinSuccess, r.MinRequests)
	}
	if out, err := cli("rollout", "abort", "helloworld"); err != nil || out != "rollout of helloworld.default aborted: v1=100 v3=0\n" {
		t.Errorf("abort: %q, %v", out, err)
	}
	if r := status(); r.State != "aborted" || !strings.Contains(r.Message, "aborted by spiffe://") {
		t.Errorf("aborted: %+v", r)
	}

	// To the healthy v3, from v1 (the version with the traffic): step by
	// step to all of it.
	out, err = cli("rollout", "start", "helloworld", "--to", "v3", "--steps", "50,100", "--interval", "30s", "--min-requests", "5", "--max-p99", "2s")
	if err != nil || !strings.Contains(out, "v1=50 v3=50") {
		t.Fatalf("rollout start v3: %q, %v", out, err)
	}
	// Followed until it ends, each step as it comes with what the control
	// plane judged (v3's calls): it succeeds.
	watched, _, err := runCLIWithin(t, 2*time.Minute, "--home", home, "rollout", "status", "helloworld", "--watch")
	if err != nil || !strings.Contains(watched, "step 2 of 2 (v3 at 100 %)") || !strings.Contains(watched, "calls to v3 in the last 30s, 100.0 % success, p99 ") ||
		!strings.Contains(watched, "helloworld.default: succeeded (v1=0 v3=100)") {
		t.Fatalf("rollout status --watch: %v\n%s", err, watched)
	}
	if r := status(); r.Shares != "v1=0 v3=100" || !strings.Contains(r.Message, "v3 took all traffic and stayed healthy") {
		t.Errorf("succeeded: %+v", r)
	}
	if text, err := cli("services"); err != nil || !strings.Contains(text, "v1=0 v3=100  rollout v1 → v3: succeeded") {
		t.Errorf("services does not show the rollout: %q, %v", text, err)
	}
	text, err := cli("rollout", "status")
	if err != nil || !strings.Contains(text, "helloworld.default: succeeded (v1=0 v3=100)") || !strings.Contains(text, "asks of v3: success ≥ 99 %, p99 ≤ 2s, judged on ≥ 5 requests") {
		t.Errorf("rollout status: %q, %v", text, err)
	}
}

// A rollout of a service whose callers report nothing — proxyless gRPC
// clients here, Envoy sidecars alike — is judged on what the new
// version's own sidecars count: a broken version is rolled back, a
// healthy one takes all the traffic.
func TestRolloutJudgedWhereItsCallersReportNothing(t *testing.T) {
	cp, home, cli := helloworldInThreeVersions(t)
	if _, err := cli("split", "set", "helloworld", "v1=100"); err != nil {
		t.Fatal(err)
	}

	// A proxyless client (grpc-go's xDS client, no sidecar) calls
	// helloworld every 10 ms, at most 12,000 times.
	client := hellopb.NewHelloworldClient(proxylesstest.Dial(t, cp, "default", "caller", "helloworld"))
	var calls atomic.Int64
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; i < 12000 && ctx.Err() == nil; i++ {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, _ = client.Call(cctx, &hellopb.CallRequest{Name: "r"})
			cancel()
			calls.Add(1)
			time.Sleep(10 * time.Millisecond)
		}
	})
	t.Cleanup(func() { stop(); wg.Wait() })
	waitFor(t, func() bool { return calls.Load() > 20 })

	if _, err := cli("rollout", "start", "helloworld", "--to", "v2", "--steps", "20,100", "--interval", "30s", "--min-requests", "5"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli("rollout", "status", "helloworld", "--watch"); err == nil || !strings.Contains(err.Error(), "rolled back: v2's success rate at its own sidecars") {
		t.Fatalf("rollout status --watch of the broken version: %v", err)
	}

	if _, err := cli("rollout", "start", "helloworld", "--to", "v3", "--steps", "100", "--interval", "30s", "--min-requests", "5"); err != nil {
		t.Fatal(err)
	}
	// While it runs, status shows v3's own figures (its callers report none).
	poll.Until(t, "rollout status to show v3's own sidecars' figures", 20*time.Second, 200*time.Millisecond, func() bool {
		out, err := cli("rollout", "status", "helloworld")
		return err == nil && strings.Contains(out, "no calls to v3 reported by its callers") && strings.Contains(out, "at v3's own sidecars: ")
	})
	watched, _, err := runCLIWithin(t, 2*time.Minute, "--home", home, "rollout", "status", "helloworld", "--watch")
	if err != nil || !strings.Contains(watched, "helloworld.default: succeeded (v1=0 v3=100)") {
		t.Fatalf("rollout status --watch: %v\n%s", err, watched)
	}
	if text, err := cli("rollout", "status"); err != nil || !strings.Contains(text, "v3 took all traffic and stayed healthy (success rate at its own sidecars 100.0 %") {
		t.Errorf("rollout status: %q, %v", text, err)
	}
	// meshctl stat shows the versions side by side.
	if text, err := cli("stat", "helloworld", "--window", "1m"); err != nil || !strings.Contains(text, "VERSION (helloworld.default)") || !strings.Contains(text, "\nv2 ") || !strings.Contains(text, "\nv3 ") {
		t.Errorf("stat: %q, %v", text, err)
	}
}

// A rollout judges requests: for a TCP service (connections in tunnels)
// it is refused, pointing at the split it can use instead.
func TestRolloutRefusedForATCPService(t *testing.T) {
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	for _, v := range []string{"v1", "v2"} {
		cp.StartSidecar("default", "db", meshtest.WithApp("127.0.0.1:1", "tcp"), meshtest.WithInstance("db-"+v),
			meshtest.WithOptions(func(o *dataplane.Options) { o.Version = v }))
	}
	_, err := runCLI(t, "--home", string(env.Home), "rollout", "start", "db", "--from", "v1", "--to", "v2")
	if err == nil || !strings.Contains(err.Error(), "db.default is a TCP service") || !strings.Contains(err.Error(), "meshctl split set db v1=90 v2=10") {
		t.Fatalf("rollout start on a TCP service: %v", err)
	}
}
