package identity

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"time"

	"go.step.sm/crypto/jose"
)

// Join tokens are the embedded authority's one-time tokens (OTT): JWTs signed
// by its JWK provisioner (package identity/ca mints and verifies them), bound
// to one SPIFFE ID. A workload reads its token's claims to learn its ID and
// the root to trust before it has any certificate.

// TokenClaims is the payload of a join token, in the authority's format.
type TokenClaims struct {
	jose.Claims
	SANs []string `json:"sans,omitempty"`
	// SHA is the hex SHA-256 of the root certificate, so a holder of the
	// token alone can check the trust bundle it downloads.
	SHA string `json:"sha,omitempty"`
}

// TokenInfo is what a join token says, read without checking its signature.
type TokenInfo struct {
	ID      ID
	Expiry  time.Time
	RootSHA string // hex SHA-256 of the root it was minted under
	TokenID string // the jti: names the token in logs without revealing it
}

// InspectToken reads a token's claims without verifying it: for display and
// for bootstrapping trust (RootSHA), never for authorization.
func InspectToken(tok string) (TokenInfo, error) {
	c, err := unverifiedClaims(tok)
	if err != nil {
		return TokenInfo{}, err
	}
	id, err := ParseID(c.Subject)
	if err != nil {
		return TokenInfo{}, fmt.Errorf("%w: subject: %w", ErrTokenInvalid, err)
	}
	info := TokenInfo{ID: id, RootSHA: c.SHA, TokenID: c.ID}
	if c.Expiry != nil {
		info.Expiry = c.Expiry.Time()
	}
	return info, nil
}

func unverifiedClaims(tok string) (*TokenClaims, error) {
	jwt, err := jose.ParseSigned(tok)
	if err != nil {
		return nil, fmt.Errorf("%w: not a signed JWT: %v", ErrTokenInvalid, err)
	}
	var c TokenClaims
	if err := jwt.UnsafeClaimsWithoutVerification(&c); err != nil {
		return nil, fmt.Errorf("%w: unreadable claims: %v", ErrTokenInvalid, err)
	}
	return &c, nil
}

// Fingerprint returns the hex SHA-256 of a certificate's DER encoding.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}
