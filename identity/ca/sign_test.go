package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/jose"

	"github.com/micromesh/micromesh/identity"
)

func mustID(t testing.TB, td, ns, name string) identity.ID {
	t.Helper()
	id, err := identity.ServiceID(td, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func mustCSR(t testing.TB, id identity.ID) []byte {
	t.Helper()
	key, err := identity.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := identity.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// rawCSR builds a CSR from a template, for requests NewCSR refuses to make.
func rawCSR(t testing.TB, tmpl *x509.CertificateRequest, key any) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestSignRejectsBadInput(t *testing.T) {
	ca := openTestCA(t)
	other := openTestCA(t, WithTrustDomain("other.example"))
	hello := mustID(t, ca.TrustDomain(), "default", "hello")
	mint := func(id identity.ID) string {
		tok, err := ca.Tokens().Mint(id, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384Key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	helloURL := hello.URL()

	// A token signed by a key that is not the CA's, with the CA's claims.
	forged := func() string {
		k, _ := jose.GenerateJWK("EC", "P-256", "ES256", "sig", "", 0)
		s := &TokenSigner{key: k, trustDomain: ca.TrustDomain()}
		k.KeyID = ca.tokens.key.KeyID
		tok, err := s.Mint(hello, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	expired, err := ca.tokens.mint(hello, time.Minute, nil, time.Now().Add(-10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	used := mint(hello)
	if _, err := ca.Sign(context.Background(), mustCSR(t, hello), used); err != nil {
		t.Fatal(err)
	}
	otherTok, err := other.Tokens().Mint(mustID(t, "other.example", "default", "hello"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		csr     []byte
		token   string
		want    error
		mention string // the message must say this, so a person can act on it
	}{
		{"empty CSR", nil, mint(hello), identity.ErrInvalidCSR, "empty"},
		{"garbage CSR", []byte("not a csr"), mint(hello), identity.ErrInvalidCSR, "PKCS#10"},
		{"PEM of a certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), mint(hello), identity.ErrInvalidCSR, "CERTIFICATE REQUEST"},
		{"CSR with a bad signature", corrupt(rawCSR(t, &x509.CertificateRequest{URIs: []*url.URL{helloURL}}, ecKey)), mint(hello), identity.ErrInvalidCSR, ""},
		{"RSA key", rawCSR(t, &x509.CertificateRequest{URIs: []*url.URL{helloURL}}, rsaKey), mint(hello), identity.ErrInvalidCSR, "P-256"},
		{"P-384 key", rawCSR(t, &x509.CertificateRequest{URIs: []*url.URL{helloURL}}, p384Key), mint(hello), identity.ErrInvalidCSR, "P-256"},
		{"no SPIFFE ID", rawCSR(t, &x509.CertificateRequest{}, ecKey), mint(hello), identity.ErrInvalidCSR, "URI"},
		{"two SPIFFE IDs", rawCSR(t, &x509.CertificateRequest{URIs: []*url.URL{helloURL, mustID(t, ca.TrustDomain(), "default", "b").URL()}}, ecKey), mint(hello), identity.ErrInvalidCSR, "exactly one"},
		{"extra DNS name", rawCSR(t, &x509.CertificateRequest{URIs: []*url.URL{helloURL}, DNSNames: []string{"evil.example"}}, ecKey), mint(hello), identity.ErrInvalidCSR, "DNS"},
		{"invalid service name", rawCSR(t, &x509.CertificateRequest{URIs: []*url.URL{mustURL("spiffe://micromesh.local/ns/default/svc/Hello_World")}}, ecKey), mint(hello), identity.ErrInvalidName, "DNS label"},
		{"invalid namespace", rawCSR(t, &x509.CertificateRequest{URIs: []*url.URL{mustURL("spiffe://micromesh.local/ns/-bad/svc/hello")}}, ecKey), mint(hello), identity.ErrInvalidName, "namespace"},
		{"CSR for another service", mustCSR(t, mustID(t, ca.TrustDomain(), "default", "admin")), mint(hello), identity.ErrIDMismatch, "token is for"},
		{"CSR for another namespace", mustCSR(t, mustID(t, ca.TrustDomain(), "prod", "hello")), mint(hello), identity.ErrIDMismatch, "token is for"},
		{"CSR for another trust domain", mustCSR(t, mustID(t, "other.example", "default", "hello")), mint(hello), identity.ErrIDMismatch, "trust domain"},
		{"empty token", mustCSR(t, hello), "", identity.ErrTokenInvalid, "meshctl cert token"},
		{"garbage token", mustCSR(t, hello), "a.b.c", identity.ErrTokenInvalid, ""},
		{"forged token", mustCSR(t, hello), forged(), identity.ErrTokenInvalid, "not minted by this mesh's CA"},
		{"token of another CA", mustCSR(t, hello), otherTok, identity.ErrTokenInvalid, ""},
		{"expired token", mustCSR(t, hello), expired, identity.ErrTokenExpired, "mint a new one"},
		{"reused token", mustCSR(t, hello), used, identity.ErrTokenReused, "mint a new one"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			chain, err := ca.Sign(context.Background(), tc.csr, tc.token)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Sign error = %v, want %v", err, tc.want)
			}
			if chain != nil {
				t.Fatal("Sign returned a chain along with an error")
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("message %q does not mention %q", err, tc.mention)
			}
			if tc.token != "" && strings.Contains(err.Error(), tc.token) {
				t.Errorf("message %q reveals the token", err)
			}
		})
	}
}

// A refused request changes nothing: the token it carried still works.
func TestRefusedSignDoesNotUseToken(t *testing.T) {
	ca := openTestCA(t)
	hello := mustID(t, ca.TrustDomain(), "default", "hello")
	tok, _ := ca.Tokens().Mint(hello, time.Minute)
	if _, err := ca.Sign(context.Background(), mustCSR(t, mustID(t, ca.TrustDomain(), "default", "admin")), tok); !errors.Is(err, identity.ErrIDMismatch) {
		t.Fatalf("mismatched CSR: %v", err)
	}
	// A forged token carrying the real token's ID must not burn it either.
	info, _ := identity.InspectToken(tok)
	k, _ := jose.GenerateJWK("EC", "P-256", "ES256", "sig", ca.tokens.key.KeyID, 0)
	forger := &TokenSigner{key: k, trustDomain: ca.TrustDomain()}
	forged := forgeWithID(t, forger, hello, info.TokenID)
	if _, err := ca.Sign(context.Background(), mustCSR(t, hello), forged); !errors.Is(err, identity.ErrTokenInvalid) {
		t.Fatalf("forged token: %v", err)
	}
	if _, err := ca.Sign(context.Background(), mustCSR(t, hello), tok); err != nil {
		t.Fatalf("the token was burned by refused requests: %v", err)
	}
}

func forgeWithID(t *testing.T, s *TokenSigner, id identity.ID, jti string) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: s.key.Key}, new(jose.SignerOptions).WithType("JWT").WithHeader("kid", s.key.KeyID))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, err := jose.Signed(signer).Claims(TokenClaims{
		Claims: jose.Claims{ID: jti, Issuer: provisionerName, Subject: id.String(), Audience: jose.Audience{signAudience(id.TrustDomain)},
			IssuedAt: jose.NewNumericDate(now), NotBefore: jose.NewNumericDate(now), Expiry: jose.NewNumericDate(now.Add(time.Minute))},
		SANs: []string{id.String()},
	}).CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestTokenIsSingleUseUnderConcurrency(t *testing.T) {
	ca := openTestCA(t)
	hello := mustID(t, ca.TrustDomain(), "default", "hello")
	tok, _ := ca.Tokens().Mint(hello, time.Minute)
	const n = 16
	errs := make(chan error, n)
	for range n {
		csr := mustCSR(t, hello)
		go func() {
			_, err := ca.Sign(context.Background(), csr, tok)
			errs <- err
		}()
	}
	ok := 0
	for range n {
		err := <-errs
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, identity.ErrTokenReused):
			t.Errorf("loser got %v, want ErrTokenReused", err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent uses of one token succeeded, want exactly 1", ok, n)
	}
}

func TestMintValidatesInput(t *testing.T) {
	ca := openTestCA(t)
	hello := mustID(t, ca.TrustDomain(), "default", "hello")
	for _, ttl := range []time.Duration{0, -time.Second, MaxTokenTTL + time.Second} {
		if _, err := ca.Tokens().Mint(hello, ttl); !errors.Is(err, identity.ErrInvalid) {
			t.Errorf("Mint(ttl %v) = %v, want ErrInvalid", ttl, err)
		}
	}
	if _, err := ca.Tokens().Mint(mustID(t, "other.example", "default", "hello"), time.Minute); !errors.Is(err, identity.ErrInvalidID) {
		t.Errorf("Mint for another trust domain = %v, want ErrInvalidID", err)
	}
	tok, err := ca.Tokens().Mint(hello, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	info, err := identity.InspectToken(tok)
	if err != nil || info.ID != hello || info.RootSHA != identity.Fingerprint(ca.Bundle().Roots()[0]) {
		t.Errorf("InspectToken = %+v, %v", info, err)
	}
}

func TestRenewKeepsIDAndLifetime(t *testing.T) {
	ca := openTestCA(t)
	creds := issue(t, ca, "hello")
	key, _ := identity.NewKey()
	csr, _ := identity.NewCSR(key, creds.ID)
	chain, err := ca.Renew(context.Background(), creds.Chain, csr)
	if err != nil {
		t.Fatal(err)
	}
	id, err := identity.IDFromCertificate(chain[0])
	if err != nil || id != creds.ID {
		t.Fatalf("renewed ID = %v, %v; want %v", id, err, creds.ID)
	}
	if !chain[0].PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
		t.Error("renewed certificate is not for the CSR's key")
	}
	if chain[0].SerialNumber.Cmp(creds.Leaf().SerialNumber) == 0 {
		t.Error("renewal returned the old certificate")
	}
	oldLife := creds.Leaf().NotAfter.Sub(creds.Leaf().NotBefore)
	newLife := chain[0].NotAfter.Sub(chain[0].NotBefore)
	if d := newLife - oldLife; d < -2*time.Minute || d > 2*time.Minute {
		t.Errorf("lifetime changed from %v to %v", oldLife, newLife)
	}
}

func TestRenewRejectsBadInput(t *testing.T) {
	ca := openTestCA(t)
	creds := issue(t, ca, "hello")
	sameDomainOtherCA := issue(t, openTestCA(t), "hello")
	foreign := issue(t, openTestCA(t, WithTrustDomain("other.example")), "hello")
	expired := signLeaf(t, ca, creds.ID, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))

	tests := []struct {
		name    string
		peer    []*x509.Certificate
		csr     []byte
		want    error
		mention string
	}{
		{"no certificate", nil, mustCSR(t, creds.ID), identity.ErrNoCertificate, "present a certificate"},
		{"expired certificate", expired, mustCSR(t, creds.ID), identity.ErrCertExpired, "expired at"},
		{"foreign trust domain", foreign.Chain, mustCSR(t, foreign.ID), identity.ErrForeignTrustDomain, "other.example"},
		{"same name, other CA", sameDomainOtherCA.Chain, mustCSR(t, creds.ID), identity.ErrUntrusted, "does not chain"},
		{"CSR for another ID", creds.Chain, mustCSR(t, mustID(t, ca.TrustDomain(), "default", "admin")), identity.ErrIDMismatch, "keeps the identity"},
		{"malformed CSR", creds.Chain, []byte("junk"), identity.ErrInvalidCSR, "PKCS#10"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			chain, err := ca.Renew(context.Background(), tc.peer, tc.csr)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Renew error = %v, want %v", err, tc.want)
			}
			if chain != nil {
				t.Fatal("Renew returned a chain along with an error")
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("message %q does not mention %q", err, tc.mention)
			}
		})
	}
}

func TestIssueServingCarriesHostNames(t *testing.T) {
	ca := openTestCA(t)
	id := mustID(t, ca.TrustDomain(), identity.SystemNamespace, "controlplane")
	creds, err := ca.IssueServing(context.Background(), id, []string{"localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	leaf := creds.Leaf()
	if err := leaf.VerifyHostname("localhost"); err != nil {
		t.Error(err)
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	if got, err := identity.IDFromCertificate(leaf); err != nil || got != id {
		t.Errorf("ID = %v, %v; want %v", got, err, id)
	}
}

// signLeaf signs a certificate for id with the CA's intermediate, with any
// validity: for certificates the CA itself would never issue.
func signLeaf(t testing.TB, ca *CA, id identity.ID, notBefore, notAfter time.Time) []*x509.Certificate {
	t.Helper()
	key, err := identity.ReadKey(filepath.Join(ca.dir, intermediateKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	leafKey, _ := identity.NewKey()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		URIs:         []*url.URL{id.URL()},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.intermediate, leafKey.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return []*x509.Certificate{leaf, ca.intermediate}
}

func corrupt(der []byte) []byte {
	out := append([]byte(nil), der...)
	out[len(out)-5] ^= 0xff
	return out
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
