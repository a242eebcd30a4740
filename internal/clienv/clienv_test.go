package clienv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/internal/home"
)

func TestEnvironmentsAndTokens(t *testing.T) {
	h := home.Dir(t.TempDir())
	c, err := Load(h)
	if err != nil || len(c.Envs) != 0 || c.Current != "" {
		t.Fatalf("a fresh home: %+v, %v", c, err)
	}
	if e, err := c.Resolve(""); e != nil || err != nil {
		t.Errorf("the default environment: %+v, %v, want local (nil)", e, err)
	}
	c.Envs["staging"] = Env{Proxy: "example.com:8081", TrustDomain: "micromesh.local", Roots: "x"}
	c.Current = "staging"
	if err := c.Save(h); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(string(h), "cli", "envs.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("envs.json: %v %v", fi, err)
	}
	c, err = Load(h)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := c.Resolve(""); err != nil || e.Name != "staging" || e.Proxy != "example.com:8081" {
		t.Errorf("current: %+v, %v", e, err)
	}
	if e, err := c.Resolve(Local); e != nil || err != nil {
		t.Errorf("local over the current one: %+v, %v", e, err)
	}
	if _, err := c.Resolve("prod"); err == nil || !strings.Contains(err.Error(), "meshctl env add prod") {
		t.Errorf("an unknown environment: %v", err)
	}
	if names := c.Names(); len(names) != 2 || names[0] != Local || names[1] != "staging" {
		t.Errorf("names %v", names)
	}

	if tok, err := LoadToken(h, "staging"); tok != nil || err != nil {
		t.Errorf("no token yet: %+v, %v", tok, err)
	}
	want := Token{AccessToken: "t", Subject: "spiffe://micromesh.local/ns/default/user/alice", Expires: time.Now().Add(time.Hour).UTC().Truncate(time.Second)}
	if err := SaveToken(h, "staging", want); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(string(h), "cli", "tokens", "staging.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the token file: %v %v", fi, err)
	}
	if tok, err := LoadToken(h, "staging"); err != nil || *tok != want {
		t.Errorf("token %+v, %v, want %+v", tok, err, want)
	}
	if had, err := RemoveToken(h, "staging"); !had || err != nil {
		t.Errorf("remove: %v %v", had, err)
	}
	if had, err := RemoveToken(h, "staging"); had || err != nil {
		t.Errorf("remove again: %v %v", had, err)
	}
}

// selfSigned makes a PEM certificate, a CA's or not.
func selfSigned(t *testing.T, isCA bool) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		BasicConstraintsValid: true, IsCA: isCA, KeyUsage: x509.KeyUsageDigitalSignature}
	if isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestValidateEnv(t *testing.T) {
	root := selfSigned(t, true)
	good := Env{Name: "staging", Proxy: "server.example.com:8081", TrustDomain: "micromesh.local", Roots: root}
	if err := good.Validate(); err != nil {
		t.Fatalf("a good environment: %v", err)
	}
	for _, tc := range []struct {
		edit func(*Env)
		want string
	}{
		{func(e *Env) { e.Name = "Staging!" }, "environment"},
		{func(e *Env) { e.Name = Local }, "always there"},
		{func(e *Env) { e.Proxy = "server.example.com" }, "want HOST:PORT"},
		{func(e *Env) { e.Proxy = ":8081" }, "want HOST:PORT"},
		{func(e *Env) { e.Proxy = "h:99999" }, "1–65535"},
		{func(e *Env) { e.TrustDomain = "Not A Domain" }, "--trust-domain"},
		{func(e *Env) { e.Roots = "not PEM" }, "--bundle"},
		{func(e *Env) { e.Roots = selfSigned(t, false) }, "not a CA certificate"},
	} {
		e := good
		tc.edit(&e)
		if err := e.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", e.Name+" "+e.Proxy, err, tc.want)
		}
	}
}
