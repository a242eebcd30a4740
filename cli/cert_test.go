package cli

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"flag"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/meshtest"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run with -update if the change is intended)\n--- got\n%s--- want\n%s", path, got, want)
	}
}

// fixedChain builds a root, an intermediate and a leaf with fixed names,
// serials and dates, so their rendering is the same on every run.
func fixedChain(t *testing.T) (leaf, inter, root *x509.Certificate) {
	t.Helper()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(tmpl, parent *x509.Certificate, parentKey any) (*x509.Certificate, any) {
		key, err := identity.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c, key
	}
	caTmpl := func(serial int64, cn string, years int) *x509.Certificate {
		return &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn, Organization: []string{"micromesh.local"}},
			NotBefore: start, NotAfter: start.AddDate(years, 0, 0), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign,
		}
	}
	root, rootKey := mk(caTmpl(1, "Micromesh Root CA", 10), nil, nil)
	inter, interKey := mk(caTmpl(2, "Micromesh Intermediate CA", 1), root, rootKey)
	u, _ := url.Parse("spiffe://micromesh.local/ns/default/svc/hello")
	leaf, _ = mk(&x509.Certificate{
		SerialNumber: big.NewInt(3), NotBefore: start, NotAfter: start.Add(24 * time.Hour), URIs: []*url.URL{u},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}, inter, interKey)
	return leaf, inter, root
}

func TestInspectRendering(t *testing.T) {
	leaf, inter, root := fixedChain(t)
	bundle := identity.NewBundle("micromesh.local", []*x509.Certificate{root})
	chain := []*x509.Certificate{leaf, inter}
	during := time.Date(2026, 1, 1, 6, 0, 0, 0, time.UTC)
	after := time.Date(2026, 1, 3, 0, 0, 0, 0, time.UTC)

	valid := inspect("hello/cert.pem", chain, bundle, "hello/bundle.pem", during)
	golden(t, "inspect_valid.txt", renderInspect(valid, during))
	var js bytes.Buffer
	if err := render(&js, outputJSON, valid, nil); err != nil {
		t.Fatal(err)
	}
	golden(t, "inspect_valid.json", js.String())

	expired := inspect("hello/cert.pem", chain, bundle, "hello/bundle.pem", after)
	golden(t, "inspect_expired.txt", renderInspect(expired, after))

	unchecked := inspect("hello/cert.pem", chain, nil, "", during)
	golden(t, "inspect_no_bundle.txt", renderInspect(unchecked, during))
}

// runCLI runs meshctl in-process and returns its stdout.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, _, err := runCLIErr(t, args...)
	return out, err
}

func TestCertCommandsAgainstServer(t *testing.T) {
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	dir := string(env.Home)
	out := filepath.Join(t.TempDir(), "hello")

	got, err := runCLI(t, "--home", dir, "cert", "issue", "--service", "hello", "--out", out)
	if err != nil {
		t.Fatalf("cert issue: %v", err)
	}
	if !strings.Contains(got, "spiffe://micromesh.local/ns/default/svc/hello") {
		t.Errorf("cert issue printed %q", got)
	}
	creds, err := identity.LoadCredentials(out)
	if err != nil {
		t.Fatal(err)
	}
	if creds.ID.String() != "spiffe://micromesh.local/ns/default/svc/hello" {
		t.Errorf("issued %v", creds.ID)
	}
	fi, err := os.Stat(filepath.Join(out, identity.KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key.pem mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}

	// inspect finds bundle.pem next to the certificate and verifies.
	got, err = runCLI(t, "--home", dir, "-o", "json", "cert", "inspect", filepath.Join(out, identity.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	var report certReport
	if err := json.Unmarshal([]byte(got), &report); err != nil {
		t.Fatalf("inspect -o json: %v\n%s", err, got)
	}
	if !report.Verified || report.ID != creds.ID.String() || len(report.Chain) != 2 {
		t.Errorf("inspect report = %+v", report)
	}

	// A token minted by `cert token`, used by `cert issue --token`, once.
	tok, err := runCLI(t, "--home", dir, "cert", "token", "--service", "web", "--namespace", "prod")
	if err != nil {
		t.Fatal(err)
	}
	tok = strings.TrimSpace(tok)
	webDir := filepath.Join(t.TempDir(), "web")
	if _, err := runCLI(t, "--home", dir, "cert", "issue", "--service", "web", "-n", "prod", "--token", tok, "--out", webDir); err != nil {
		t.Fatalf("issue with token: %v", err)
	}
	_, err = runCLI(t, "--home", dir, "cert", "issue", "--service", "web", "-n", "prod", "--token", tok, "--out", webDir)
	if err == nil || !strings.Contains(describe(err), "Unauthenticated") || !strings.Contains(describe(err), "already used") {
		t.Errorf("reusing a token: %v", err)
	}

	// A workload with no local CA joins with the token alone (trust from its fingerprint).
	tok2, _ := runCLI(t, "--home", dir, "cert", "token", "--service", "far")
	farHome := t.TempDir()
	if _, err := runCLI(t, "--home", farHome, "cert", "issue", "--service", "far", "--token", strings.TrimSpace(tok2),
		"--controlplane", cp.Info.Address, "--out", filepath.Join(t.TempDir(), "far")); err != nil {
		t.Fatalf("join from elsewhere: %v", err)
	}

	bundle, err := runCLI(t, "--home", dir, "cert", "bundle")
	if err != nil || !strings.HasPrefix(bundle, "-----BEGIN CERTIFICATE-----") {
		t.Errorf("cert bundle = %q, %v", bundle, err)
	}
}

func TestCommandsRejectBadInput(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		args    []string
		mention string
	}{
		{[]string{"cert", "issue", "--service", "hello"}, "--out"},
		{[]string{"cert", "issue", "--out", "x"}, "--service"},
		{[]string{"cert", "issue", "--service", "Hello", "--out", "x"}, "DNS label"},
		{[]string{"cert", "issue", "--service", "hello", "-n", "a_b", "--out", "x"}, "namespace"},
		{[]string{"cert", "issue", "--service", "hello", "--out", "x"}, "make run"}, // no CA here
		{[]string{"cert", "issue", "--service", "hello", "--token", "junk", "--out", "x"}, "--token"},
		{[]string{"cert", "token", "--service", "hello", "--ttl", "48h"}, "--ttl"},
		{[]string{"cert", "token", "--service", "hello"}, "make run"},
		{[]string{"cert", "inspect", filepath.Join(dir, "missing.pem")}, "missing.pem"},
		{[]string{"cert", "bundle"}, "make run"},
		{[]string{"-o", "yaml", "version"}, "--output"},
		{[]string{"server", "--cert-ttl", "-1h"}, "--cert-ttl"},
		{[]string{"server", "--gateway-addr", "off"}, "say --dashboard-addr off too"},
		{[]string{"server", "--gateway-namespace", "Shop"}, "--gateway-namespace"},
		{[]string{"server", "--gateway-cors-origin", "app.example.com"}, "write scheme://host[:port]"},
		{[]string{"server", "--gateway-timeout", "0s"}, "--gateway-timeout 0s: must be positive"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := runCLI(t, append([]string{"--home", dir}, tc.args...)...)
			if err == nil {
				t.Fatal("succeeded")
			}
			if !strings.Contains(describe(err), tc.mention) {
				t.Errorf("error %q does not mention %q", describe(err), tc.mention)
			}
		})
	}
}
