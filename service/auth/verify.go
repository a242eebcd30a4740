// Package auth tells a service which user a call is for: the access token
// the call carries (authorization metadata: the API gateway passes a
// verified one on), checked with the auth service's public keys — fetched
// through the service's sidecar from auth.micromesh, then kept. User is
// what a handler calls; Verifier and Claims are the token's format, which
// the auth service (platform/auth) signs and the gateway checks.
//
//	u, err := auth.User(ctx)
//	if err != nil {
//		return nil, errors.Unauthorized("orders.list", "%v", err)
//	}
//	// u.Namespace, u.Name, u.Scopes
package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.step.sm/crypto/jose"
)

// The issuer and audience of every token.
const (
	Issuer   = "micromesh-auth"
	Audience = "micromesh"
)

// Claims are an access token's claims.
type Claims struct {
	jose.Claims
	Namespace string   `json:"ns"`
	Name      string   `json:"name"`
	Scopes    []string `json:"scopes,omitempty"`
}

// ErrInvalidToken is wrapped by every reason Verify refuses a token.
var ErrInvalidToken = errors.New("invalid access token")

// leeway is the clock skew tolerated on a token's times.
const leeway = 30 * time.Second

// Verifier checks access tokens with the auth service's public keys,
// fetched once and again when a token names a key it does not have (at
// most every few seconds).
type Verifier struct {
	fetch func(ctx context.Context) (string, error)
	now   func() time.Time

	mu      sync.Mutex
	keys    *jose.JSONWebKeySet
	fetched time.Time
}

// NewVerifier returns a verifier that gets the keys (a JWK set, JSON)
// from fetch: the Auth API's PublicKeys.
func NewVerifier(fetch func(ctx context.Context) (string, error)) *Verifier {
	return &Verifier{fetch: fetch, now: time.Now}
}

// Verify checks token's signature, issuer, audience and times, and
// returns its claims.
func (v *Verifier) Verify(ctx context.Context, token string) (*Claims, error) {
	tok, err := jose.ParseSigned(token)
	if err != nil {
		return nil, fmt.Errorf("%w: not a signed JWT", ErrInvalidToken)
	}
	if len(tok.Headers) != 1 || tok.Headers[0].Algorithm != string(jose.ES256) {
		return nil, fmt.Errorf("%w: not signed with ES256", ErrInvalidToken)
	}
	key, err := v.key(ctx, tok.Headers[0].KeyID)
	if err != nil {
		return nil, err
	}
	var c Claims
	if err := tok.Claims(key.Key, &c); err != nil {
		return nil, fmt.Errorf("%w: the signature does not verify", ErrInvalidToken)
	}
	err = c.ValidateWithLeeway(jose.Expected{Issuer: Issuer, Audience: jose.Audience{Audience}, Time: v.now()}, leeway)
	switch {
	case errors.Is(err, jose.ErrExpired):
		return nil, fmt.Errorf("%w: expired at %v (get another: meshctl auth token)", ErrInvalidToken, c.Expiry.Time().UTC().Format(time.RFC3339))
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	case c.Subject == "" || c.Namespace == "" || c.Name == "":
		return nil, fmt.Errorf("%w: no subject", ErrInvalidToken)
	}
	return &c, nil
}

// key returns the public key kid, fetching the set when it lacks it.
func (v *Verifier) key(ctx context.Context, kid string) (*jose.JSONWebKey, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.keys != nil {
		if ks := v.keys.Key(kid); len(ks) > 0 {
			return &ks[0], nil
		}
		if v.now().Sub(v.fetched) < 5*time.Second {
			return nil, fmt.Errorf("%w: signed with an unknown key %q", ErrInvalidToken, kid)
		}
	}
	raw, err := v.fetch(ctx)
	if err != nil {
		return nil, fmt.Errorf("the auth service's public keys: %w", err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(raw), &set); err != nil {
		return nil, fmt.Errorf("the auth service's public keys: %w", err)
	}
	v.keys, v.fetched = &set, v.now()
	if ks := set.Key(kid); len(ks) > 0 {
		return &ks[0], nil
	}
	return nil, fmt.Errorf("%w: signed with an unknown key %q", ErrInvalidToken, kid)
}
