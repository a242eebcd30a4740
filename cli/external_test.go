package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/outsidetest"
)

// An operator declares services outside the mesh, lists them (also in
// meshctl services), changes one and removes them; what is not a server
// the sidecar can check over TLS is refused, saying why.
func TestExternalCommands(t *testing.T) {
	env := meshtest.NewEnv(t)
	env.StartControlPlane()
	home := string(env.Home)
	cli := func(args ...string) (string, error) { return runCLI(t, append([]string{"--home", home}, args...)...) }
	ca := outsidetest.NewCA(t).WritePEM(t, t.TempDir())

	out, err := cli("external", "set", "payments", "--host", "api.payments.example")
	if err != nil || out != "external service payments.default → https://api.payments.example (system roots): the apps of default call http://payments/ through their sidecar\n" {
		t.Fatalf("external set: %q, %v", out, err)
	}
	out, err = cli("external", "set", "ledger", "-n", "finance", "--host", "https://Ledger.Corp.Example:8443/", "--ca", ca, "--protocol", "grpc")
	if err != nil || out != "external service ledger.finance → https://ledger.corp.example:8443 (gRPC, own roots): the apps of finance dial ledger through their sidecar\n" {
		t.Fatalf("external set with --ca: %q, %v", out, err)
	}
	out, err = cli("external", "list")
	want := "NAMESPACE  NAME      REACHES                           PROTOCOL  ROOTS\n" +
		"default    payments  https://api.payments.example      http      system\n" +
		"finance    ledger    https://ledger.corp.example:8443  grpc      own\n"
	if err != nil || out != want {
		t.Errorf("external list:\n%s(%v)\nwant:\n%s", out, err, want)
	}
	js, err := cli("-o", "json", "external", "list", "-n", "finance")
	var listed []externalJSON
	if err != nil || json.Unmarshal([]byte(js), &listed) != nil || len(listed) != 1 || listed[0] != (externalJSON{Name: "ledger", Namespace: "finance", Host: "ledger.corp.example", Port: 8443, Roots: "own", Protocol: "grpc"}) {
		t.Errorf("external list -n finance -o json: %s (%v)", js, err)
	}
	if out, _ := cli("services"); !strings.Contains(out, "outside the mesh") || !strings.Contains(out, "https://api.payments.example") {
		t.Errorf("services does not show the external services:\n%s", out)
	}
	// A mesh service registered later under its name hides it: check says so.
	if _, err := cli("registry", "register", "--service", "payments", "--address", "127.0.0.1:7001", "--id", "payments-1"); err != nil {
		t.Fatal(err)
	}
	if out, _ := cli("check"); !strings.Contains(out, "a mesh service has that name, so callers reach it, not api.payments.example") || !strings.Contains(out, "reaches ledger.corp.example") {
		t.Errorf("check does not warn of the hidden external service:\n%s", out)
	}
	if _, err := cli("registry", "deregister", "--id", "payments-1"); err != nil {
		t.Fatal(err)
	}

	for args, mention := range map[string]string{
		"external set pay --host http://api.example":       "over TLS only",
		"external set pay --host 192.0.2.7":                "is an IP address",
		"external set pay --host api.example:0":            "is not a TCP port",
		"external set pay --host api_example.com":          "is not a DNS name",
		"external set Pay --host api.example":              "DNS label",
		"external set pay --host a.example --protocol tcp": `protocol "tcp" is not "http" (HTTP/1.1) or "grpc" (HTTP/2)`,
		"external set pay":                                 `required flag(s) "host" not set`,
		"external set pay --host a.example --ca " + home:   "--ca",
		"external remove nothing":                          "NotFound",
	} {
		if _, err := cli(strings.Fields(args)...); err == nil || !strings.Contains(describe(err), mention) {
			t.Errorf("%s: %v; want an error mentioning %q", args, err, mention)
		}
	}

	for _, args := range [][]string{{"external", "remove", "payments"}, {"external", "remove", "ledger", "-n", "finance"}} {
		if _, err := cli(args...); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	if out, err := cli("external", "list"); err != nil || !strings.HasPrefix(out, "no external services") {
		t.Errorf("external list after removing both: %q, %v", out, err)
	}
}
