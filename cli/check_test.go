package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/internal/consultest"
	"github.com/micromesh/micromesh/internal/meshcheck"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/poll"
)

// An operator checks the mesh: all is well; then a service's only
// instance stops heartbeating, and the check fails naming it and what to
// look at.
func TestCheck(t *testing.T) {
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	startExamples(t, cp)
	home := string(env.Home)
	cli := func(args ...string) (string, error) { return runCLI(t, append([]string{"--home", home}, args...)...) }

	out, err := cli("check")
	if err != nil {
		t.Fatalf("check on a healthy mesh: %v\n%s", err, out)
	}
	for _, want := range []string{"control plane\n  √ reachable: at ", "√ version: dev, up ", "√ registry: embedded at " + home, "√ its certificate: valid for", "√ the CA's intermediate: valid for 3", "√ revocations: no certificate revoked", "proxies\n  √ in sync: 2 connected",
		"services\n  √ healthy: ", "traffic\n  √ success", "all checks passed"} {
		if !strings.Contains(out, want) {
			t.Errorf("check lacks %q:\n%s", want, out)
		}
	}

	// A revoked certificate is reported, with whose it is.
	victim := cp.Join("shop", "victim")
	if _, err := cli("cert", "revoke", "--service", "victim", "-n", "shop"); err != nil {
		t.Fatal(err)
	}
	if out, err := cli("check"); err != nil || !strings.Contains(out, "√ revocations: 1 certificate(s) revoked ("+victim.ID.String()+" ×1)") {
		t.Errorf("check after a revocation: %v\n%s", err, out)
	}

	// An instance whose heartbeats stopped: critical, and its service has
	// no other.
	if err := cp.Registry().Register(context.Background(), registry.Instance{ID: "billing-1", Service: "billing", Namespace: "default",
		Address: "127.0.0.1", Port: 9, Protocol: "grpc", Kind: registry.KindBuiltin, TTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	var results []meshcheck.Result
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		out, err = cli("check", "-o", "json")
		if jerr := json.Unmarshal([]byte(out), &results); jerr != nil {
			t.Fatalf("%q: %v", out, jerr)
		}
		if err != nil || time.Now().After(deadline) {
			break
		}
	}
	if err == nil || !strings.Contains(err.Error(), "1 check(s) failed") {
		t.Fatalf("check with a dead service: %v\n%s", err, out)
	}
	var found bool
	for _, r := range results {
		if r.Section == "services" && r.Check == "billing.default" {
			found = r.Status == meshcheck.Fail && strings.Contains(r.Detail, "no instance passing (1 registered)") && strings.Contains(r.Detail, "meshctl logs billing")
		}
	}
	if !found {
		t.Errorf("no failed check of billing.default saying what to do: %+v", results)
	}

	// A split that sends calls to a version with no instance fails; a
	// rollout rolled back within the hour is a warning.
	if err := cp.Registry().SetSplit(context.Background(), registry.Split{Service: "helloworld", Namespace: "default",
		Versions: []registry.VersionWeight{{Version: "v1", Weight: 90}, {Version: "v9", Weight: 10}}}); err != nil {
		t.Fatal(err)
	}
	back := &registry.Rollout{From: "v1", To: "v2", Steps: []uint32{50, 100}, Since: time.Now(), Interval: time.Minute, State: registry.RolloutRolledBack,
		Message: "v2's success rate 50.0 % is under 99.0 %"}
	if err := cp.Registry().SetSplit(context.Background(), registry.Split{Service: "pingpong", Namespace: "default", Versions: back.Shares(), Rollout: back}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"splits/helloworld.default": "fail its split gives v1 90 % of the calls, but no instance of it is registered: those calls fail — meshctl run --version v1",
		"splits/pingpong.default":   "fail its split gives v1 100 % of the calls",
		"rollouts/pingpong.default": "warn v1 → v2 rolled back at ",
	}
	poll.Until(t, "check to see the splits", 10*time.Second, 100*time.Millisecond, func() bool {
		out, _ := cli("check", "-o", "json")
		if json.Unmarshal([]byte(out), &results) != nil {
			return false
		}
		seen := 0
		for _, r := range results {
			if w, ok := want[r.Section+"/"+r.Check]; ok && strings.HasPrefix(r.Status+" "+r.Detail, w) {
				seen++
			}
		}
		return seen == len(want)
	})
}

// With Consul as the registry, a stopped agent fails the check, saying
// what still works and what does not.
func TestCheckSaysTheRegistryIsDown(t *testing.T) {
	agent := consultest.Start(t)
	env := meshtest.NewEnv(t)
	env.StartControlPlane(meshtest.WithConsul(agent.Addr))
	home := string(env.Home)
	out, err := runCLI(t, "--home", home, "check")
	if err != nil || !strings.Contains(out, "√ registry: consul at "+agent.Addr) {
		t.Fatalf("check with Consul up: %v\n%s", err, out)
	}
	agent.Stop()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		out, err = runCLI(t, "--home", home, "check")
		if err != nil || time.Now().After(deadline) {
			break
		}
	}
	if err == nil || !strings.Contains(out, "× registry: consul at "+agent.Addr+" unreachable for") || !strings.Contains(out, "proxies keep their last configuration") {
		t.Errorf("check with Consul down: %v\n%s", err, out)
	}
}
