package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/micromesh/micromesh/identity"
)

// openTestCA opens a fresh CA in a temporary directory.
func openTestCA(t testing.TB, opts ...Option) *CA {
	t.Helper()
	ca, err := Open(context.Background(), filepath.Join(t.TempDir(), "ca"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ca.Close() })
	return ca
}

// issue runs the join flow for service name in namespace default.
func issue(t testing.TB, ca *CA, name string) *identity.Credentials {
	t.Helper()
	id, err := identity.ServiceID(ca.TrustDomain(), identity.DefaultNamespace, name)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ca.Tokens().Mint(id, DefaultTokenTTL)
	if err != nil {
		t.Fatal(err)
	}
	key, err := identity.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := identity.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.Sign(context.Background(), csr, tok)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return &identity.Credentials{ID: id, Chain: chain, Key: key, Bundle: ca.Bundle()}
}

func TestSignIssuesWorkloadCertificate(t *testing.T) {
	ca := openTestCA(t)
	creds := issue(t, ca, "hello")
	leaf := creds.Leaf()

	if len(creds.Chain) != 2 {
		t.Fatalf("chain has %d certificates, want leaf + intermediate", len(creds.Chain))
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://micromesh.local/ns/default/svc/hello" {
		t.Errorf("URI SANs = %v, want exactly spiffe://micromesh.local/ns/default/svc/hello", leaf.URIs)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("leaf carries other SANs: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses)
	}
	if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("leaf key is %T, want ECDSA P-256", leaf.PublicKey)
	}
	if life := time.Until(leaf.NotAfter); life < 23*time.Hour || life > 24*time.Hour+time.Minute {
		t.Errorf("leaf expires in %v, want about 24h", life)
	}
	if leaf.IsCA {
		t.Error("leaf is a CA")
	}
	if creds.Chain[1].Subject.CommonName != "Micromesh Intermediate CA" {
		t.Errorf("second certificate is %q, want the intermediate", creds.Chain[1].Subject)
	}
	// The standard library accepts the chain against the bundle, as client and as server.
	inter := x509.NewCertPool()
	inter.AddCert(creds.Chain[1])
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Bundle().Pool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("stdlib verify (usage %v): %v", usage, err)
		}
	}
	id, _, err := ca.Bundle().VerifyCertificates(creds.Chain, time.Now())
	if err != nil || id != creds.ID {
		t.Errorf("Bundle.Verify = %v, %v; want %v", id, err, creds.ID)
	}
}

func TestCertificateTTLIsConfigurable(t *testing.T) {
	ca := openTestCA(t, WithCertificateTTL(2*time.Hour))
	leaf := issue(t, ca, "hello").Leaf()
	if life := time.Until(leaf.NotAfter); life < 119*time.Minute || life > 2*time.Hour+time.Minute {
		t.Errorf("leaf expires in %v, want about 2h", life)
	}
}

func TestRestartKeepsRootAndKeysAre0600(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	root := identity.Fingerprint(ca.Bundle().Roots()[0])
	id, _ := identity.ServiceID(ca.TrustDomain(), "default", "hello")
	tok, _ := ca.Tokens().Mint(id, time.Minute)
	key, _ := identity.NewKey()
	csr, _ := identity.NewCSR(key, id)
	if _, err := ca.Sign(context.Background(), csr, tok); err != nil {
		t.Fatal(err)
	}
	if err := ca.Close(); err != nil {
		t.Fatal(err)
	}

	ca2, err := Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ca2.Close()
	if got := identity.Fingerprint(ca2.Bundle().Roots()[0]); got != root {
		t.Errorf("root changed across restart: %s → %s", root, got)
	}
	// A token used before the restart stays used after it.
	if _, err := ca2.Sign(context.Background(), csr, tok); err == nil {
		t.Error("a token used before the restart was accepted after it")
	}
	for _, f := range []string{rootKeyFile, intermediateKeyFile, provisionerKeyFile, ledgerFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", f, fi.Mode().Perm())
		}
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("CA directory has mode %04o, want 0700", fi.Mode().Perm())
	}
}

func TestOpenRefusesOtherTrustDomain(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := Open(context.Background(), dir, WithTrustDomain("one.example"))
	if err != nil {
		t.Fatal(err)
	}
	_ = ca.Close()
	if _, err := Open(context.Background(), dir, WithTrustDomain("two.example")); err == nil {
		t.Fatal("reopening with another trust domain succeeded")
	}
}

func TestOpenRefusesReadableKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	_ = ca.Close()
	if err := os.Chmod(filepath.Join(dir, rootKeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), dir); err == nil {
		t.Fatal("opened a CA whose root key is world-readable")
	}
}
