// Package tokentest signs access tokens as the auth service does — ES256
// JWTs with a kid — with a key of a test's own, and gives the key's JWK
// set, for tests of what verifies them (the sidecars' jwt_authn filter,
// the platform's tenancy).
package tokentest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"testing"
	"time"

	"go.step.sm/crypto/jose"
)

// Issuer signs tokens with one P-256 key.
type Issuer struct {
	key *ecdsa.PrivateKey
	kid string
	// JWKS is the key's JWK set (JSON), as the auth service publishes it.
	JWKS []byte
}

// New makes an issuer with a fresh key named kid.
func New(t testing.TB, kid string) *Issuer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	set, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: kid, Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	return &Issuer{key: k, kid: kid, JWKS: set}
}

// Sign signs claims (a map, or a struct with JSON tags) as a compact JWT.
func (is *Issuer) Sign(t testing.TB, claims any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: is.key}, new(jose.SignerOptions).WithType("JWT").WithHeader("kid", is.kid))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jose.Signed(signer).Claims(claims).CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Account is the claims of an account's access token as the auth service
// gives them (issuer micromesh-auth, audience micromesh), valid for an
// hour from now.
func Account(now time.Time, td, ns, name string, scopes ...string) map[string]any {
	c := map[string]any{"iss": "micromesh-auth", "aud": "micromesh", "sub": "spiffe://" + td + "/ns/" + ns + "/user/" + name,
		"ns": ns, "name": name, "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	if len(scopes) > 0 {
		c["scopes"] = scopes
	}
	return c
}
