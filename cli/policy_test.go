package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/internal/meshtest"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
)

// An operator changes a running service's policy: keys set over what its
// instances registered (merged with the operator's earlier ones), shown
// by meshctl services, removed one by one or all; what the control plane
// could not apply is refused with the reason and changes nothing.
func TestPolicyCommands(t *testing.T) {
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	home := string(env.Home)
	cli := func(args ...string) (string, error) { return runCLI(t, append([]string{"--home", home}, args...)...) }
	if _, err := cli("registry", "register", "--service", "greeter", "--address", "127.0.0.1:7001", "--id", "greeter-1", "--policy", "timeout=2s"); err != nil {
		t.Fatal(err)
	}

	out, err := cli("policy", "set", "greeter", "fault_abort=503", "fault_abort_percent=20")
	if err != nil || out != "operator policy of greeter.default: fault_abort=503 fault_abort_percent=20\n" {
		t.Fatalf("policy set: %q, %v", out, err)
	}
	out, err = cli("policy", "set", "greeter", "timeout=5s")
	if err != nil || out != "operator policy of greeter.default: fault_abort=503 fault_abort_percent=20 timeout=5s\n" {
		t.Fatalf("policy set, a key more: %q, %v", out, err)
	}
	waitFor(t, func() bool {
		text, _ := cli("services")
		return strings.Contains(text, "default/greeter  timeout=2s  operator: fault_abort=503 fault_abort_percent=20 timeout=5s")
	})
	// A mirror with no instances is set, with a note saying so; one that
	// runs, without.
	out, err = cli("policy", "set", "greeter", "mirror=greeter-nxt", "/x:mirror=greeter.default")
	if err != nil || !strings.Contains(out, "note: the mirror greeter-nxt.default has no instances") || strings.Contains(out, "the mirror greeter.default") {
		t.Fatalf("policy set mirror: %q, %v", out, err)
	}
	if out, err = cli("policy", "clear", "greeter", "mirror", "/x:mirror"); err != nil {
		t.Fatalf("policy clear mirror: %q, %v", out, err)
	}
	js, err := cli("-o", "json", "services")
	if err != nil {
		t.Fatal(err)
	}
	var services []serviceJSON
	if err := json.Unmarshal([]byte(js), &services); err != nil || len(services) != 1 || services[0].OperatorPolicy["timeout"] != "5s" || services[0].Policy["timeout"] != "2s" {
		t.Errorf("services JSON: %s (%v)", js, err)
	}

	for args, mention := range map[string]string{
		"policy set greeter fault_delay_percent=5": "needs policy_fault_delay",
		"policy set greeter timeout=soon":          `"soon" is not a duration`,
		"policy set greeter colour=blue":           `policy key "policy_colour" is not one of`,
		"policy set greeter timeout":               "want KEY=VALUE",
		"policy set Greeter timeout=1s":            "DNS label",
		"policy set greeter":                       "requires at least 2 arg(s)",
		"policy clear greeter retries":             "retries is not in the operator policy of greeter.default (it has: fault_abort, fault_abort_percent, timeout)",
		"policy clear nothing":                     "NotFound",
		"policy clear nothing timeout":             "nothing.default has no operator policy",
	} {
		_, err := cli(strings.Fields(args)...)
		if err == nil || !strings.Contains(describe(err), mention) {
			t.Errorf("%s: %v; want an error mentioning %q", args, err, mention)
		}
	}

	// A workload may change only its own service's policy.
	client := cp.RegistryClient(cp.Join("default", "web"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = client.SetPolicy(ctx, &registryv1.SetPolicyRequest{Policy: &registryv1.Policy{Service: "greeter", Keys: map[string]string{"timeout": "1s"}}})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("web setting greeter's policy: %v; want PermissionDenied", err)
	}
	if _, err := client.DeletePolicy(ctx, &registryv1.DeletePolicyRequest{Service: "greeter"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("web removing greeter's policy: %v; want PermissionDenied", err)
	}

	if out, err := cli("policy", "clear", "greeter", "fault_abort", "fault_abort_percent"); err != nil || out != "operator policy of greeter.default: timeout=5s\n" {
		t.Errorf("policy clear of two keys: %q, %v", out, err)
	}
	if out, err := cli("policy", "clear", "greeter"); err != nil || out != "operator policy of greeter.default removed: its instances' own applies\n" {
		t.Errorf("policy clear: %q, %v", out, err)
	}
	waitFor(t, func() bool {
		text, _ := cli("services")
		return strings.Contains(text, "default/greeter  timeout=2s\n")
	})
}
