package cli

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/micromesh/micromesh/internal/meshtest"
)

// An operator revokes a service's certificates and one by serial, lists
// them, and reads the revocation list with openssl; bad input is refused
// before anything is sent.
func TestCertRevokeCommands(t *testing.T) {
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	home := string(env.Home)
	cli := func(args ...string) (string, error) { return runCLI(t, append([]string{"--home", home}, args...)...) }

	out, err := cli("cert", "revoked")
	if err != nil || out != "no certificate is revoked\n" {
		t.Fatalf("cert revoked on a new mesh: %q, %v", out, err)
	}
	orders := cp.Join("shop", "orders")
	cp.Join("shop", "orders") // a second instance's
	hello := cp.Join("default", "hello")

	out, err = cli("-o", "json", "cert", "revoke", "--service", "orders", "-n", "shop", "--reason", "key on a lost laptop")
	if err != nil {
		t.Fatal(err)
	}
	var revoked []revokedJSON
	if err := json.Unmarshal([]byte(out), &revoked); err != nil || len(revoked) != 2 {
		t.Fatalf("revoke --service: %s (%v)", out, err)
	}
	for _, r := range revoked {
		if r.ID != orders.ID.String() || r.Reason != "key on a lost laptop" || r.ExpiresAt.IsZero() {
			t.Errorf("revoked: %+v", r)
		}
	}
	serial := hello.Chain[0].SerialNumber.String()
	if out, err = cli("cert", "revoke", serial); err != nil || !strings.Contains(out, serial) || !strings.Contains(out, hello.ID.String()) || !strings.Contains(out, "every proxy refuse these certificates now") {
		t.Fatalf("revoke SERIAL: %q, %v", out, err)
	}
	out, err = cli("cert", "revoked")
	if err != nil || strings.Count(out, "\n") != 4 || !strings.HasPrefix(out, "SERIAL") || !strings.Contains(out, "key on a lost laptop") {
		t.Errorf("cert revoked:\n%s(%v)", out, err)
	}
	crl, err := cli("cert", "revoked", "--crl")
	if err != nil || !strings.HasPrefix(crl, "-----BEGIN X509 CRL-----") {
		t.Fatalf("cert revoked --crl: %q, %v", crl, err)
	}
	if openssl, err := exec.LookPath("openssl"); err == nil {
		cmd := exec.Command(openssl, "crl", "-noout", "-text")
		cmd.Stdin = strings.NewReader(crl)
		text, err := cmd.CombinedOutput()
		if err != nil || strings.Count(string(text), "Serial Number:") != 3 || !strings.Contains(string(text), "Micromesh Intermediate CA") {
			t.Errorf("openssl crl:\n%s(%v)", text, err)
		}
	}

	for args, mention := range map[string]string{
		"cert revoke":                                     "name what to revoke, once",
		"cert revoke 12 --service orders":                 "name what to revoke, once",
		"cert revoke twelve":                              "neither a decimal number",
		"cert revoke --service Orders":                    "DNS label",
		"cert revoke --id http://x":                       "spiffe",
		"cert revoke 424242":                              "this CA has no unexpired certificate with serial 424242",
		"cert revoke --service nobody":                    "this CA has no unexpired certificate for spiffe://micromesh.local/ns/default/svc/nobody",
		"cert revoke --service controlplane -n micromesh": "PermissionDenied",
	} {
		_, err := cli(strings.Fields(args)...)
		if err == nil || !strings.Contains(describe(err), mention) {
			t.Errorf("%s: %v; want an error mentioning %q", args, err, mention)
		}
	}
	if _, err := cli("cert", "revoke", "--service", "hello", "--reason", "two\nlines"); err == nil || !strings.Contains(err.Error(), "one line") {
		t.Errorf("a reason of two lines: %v", err)
	}
}
