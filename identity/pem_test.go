package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// selfSigned is a certificate for id, signed by its own key.
func selfSigned(t *testing.T, id ID) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(id.String())
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), URIs: []*url.URL{u}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

func mustID(t *testing.T, name string) ID {
	t.Helper()
	id, err := ServiceID("micromesh.local", "default", name)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestKeysRoundTripInEveryPEMForm(t *testing.T) {
	ec, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := EncodeKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	sec1DER, _ := x509.MarshalECPrivateKey(ec.(*ecdsa.PrivateKey))
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	for name, c := range map[string]struct {
		pem  []byte
		want any
	}{
		"PKCS#8 as written": {pkcs8, ec.Public()},
		"SEC 1":             {pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1DER}), ec.Public()},
		"PKCS#1":            {pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}), rsaKey.Public()},
	} {
		k, err := ParseKey(c.pem)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !k.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(c.want) {
			t.Fatalf("%s: parsed a different key", name)
		}
	}
	for name, bad := range map[string][]byte{
		"not PEM":     []byte("hello"),
		"certificate": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}),
		"encrypted":   pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}),
		"bad DER":     pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}),
	} {
		if _, err := ParseKey(bad); err == nil {
			t.Fatalf("%s: parsed", name)
		}
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := EncodeKey(edKey); err != nil {
		t.Fatalf("ed25519 keys encode as PKCS#8 too: %v", err)
	}
}

func TestParseCertificatesTakesBundlesAndDER(t *testing.T) {
	a, _ := selfSigned(t, mustID(t, "a"))
	b, _ := selfSigned(t, mustID(t, "b"))
	bundle := append(EncodeCertificates([]*x509.Certificate{a}), pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{6, 8}})...)
	bundle = append(bundle, EncodeCertificates([]*x509.Certificate{b})...)
	got, err := ParseCertificates(bundle)
	if err != nil || len(got) != 2 || !got[0].Equal(a) || !got[1].Equal(b) {
		t.Fatalf("bundle: %v, %d certificates", err, len(got))
	}
	if got, err := ParseCertificates(a.Raw); err != nil || len(got) != 1 || !got[0].Equal(a) {
		t.Fatalf("DER: %v", err)
	}
	for name, bad := range map[string][]byte{
		"garbage":             []byte("not a certificate"),
		"PEM with no certs":   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}),
		"broken certificate":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2}}),
		"empty":               nil,
		"second cert garbled": append(EncodeCertificates([]*x509.Certificate{a}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{9}})...),
	} {
		if _, err := ParseCertificates(bad); err == nil {
			t.Fatalf("%s: parsed", name)
		}
	}
}

func TestCSRCarriesExactlyTheID(t *testing.T) {
	id := mustID(t, "hello")
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	_, got, err := ParseCSR(der)
	if err != nil || got != id {
		t.Fatalf("ParseCSR = %v, %v; want %v", got, err, id)
	}
}

func TestLoadCredentialsRefusesAKeyOfAnotherCertificate(t *testing.T) {
	id := mustID(t, "hello")
	cert, key := selfSigned(t, id)
	_, other := selfSigned(t, id)
	dir := t.TempDir()
	creds := &Credentials{ID: id, Chain: []*x509.Certificate{cert}, Key: key, Bundle: NewBundle(id.TrustDomain, []*x509.Certificate{cert})}
	if err := creds.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi.Mode(), err)
	}
	if _, err := LoadCredentials(dir); err != nil {
		t.Fatalf("matching key: %v", err)
	}
	if err := WriteKeyFile(filepath.Join(dir, KeyFile), other); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCredentials(dir); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("a key of another certificate: %v", err)
	}
}

func TestInspectTokenReadsClaimsAndRefusesJunk(t *testing.T) {
	seg := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	good := seg(`{"alg":"ES256","typ":"JWT"}`) + "." + seg(`{"sub":"spiffe://micromesh.local/ns/default/svc/hello","jti":"abc","exp":1800000000.5,"sha":"f00d","aud":["x"]}`) + "." + seg("sig")
	info, err := InspectToken(good)
	if err != nil {
		t.Fatal(err)
	}
	if info.ID != mustID(t, "hello") || info.TokenID != "abc" || info.RootSHA != "f00d" || !info.Expiry.Equal(time.Unix(1800000000, 5e8)) {
		t.Fatalf("InspectToken = %+v", info)
	}
	for name, tok := range map[string]string{
		"empty":         "",
		"two parts":     seg(`{"alg":"ES256"}`) + "." + seg(`{}`),
		"no signature":  seg(`{"alg":"ES256"}`) + "." + seg(`{}`) + ".",
		"alg none":      seg(`{"alg":"none"}`) + "." + seg(`{"sub":"spiffe://micromesh.local/ns/default/svc/hello"}`) + "." + seg("x"),
		"payload junk":  seg(`{"alg":"ES256"}`) + ".%%%." + seg("x"),
		"not an ID":     seg(`{"alg":"ES256"}`) + "." + seg(`{"sub":"hello"}`) + "." + seg("x"),
		"header not JS": seg(`alg`) + "." + seg(`{}`) + "." + seg("x"),
	} {
		if _, err := InspectToken(tok); err == nil {
			t.Fatalf("%s: accepted", name)
		}
	}
}
