package identity

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
)

// Join tokens are the embedded authority's one-time tokens (OTT): JWTs signed
// by its JWK provisioner (package identity/ca mints and verifies them), bound
// to one SPIFFE ID. A workload reads its token's claims to learn its ID and
// the root to trust before it has any certificate.

// tokenPayload is what a workload reads of a join token's claims (package
// identity/ca has the whole set). It is parsed with the standard library
// alone, so programs that only join (the sidecar) link no JOSE code.
type tokenPayload struct {
	Subject string   `json:"sub"`
	ID      string   `json:"jti"`
	Expiry  *float64 `json:"exp"` // a JWT NumericDate: seconds since the epoch
	// SHA is the hex SHA-256 of the root certificate, so a holder of the
	// token alone can check the trust bundle it downloads.
	SHA string `json:"sha"`
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
		sec, frac := math.Modf(*c.Expiry)
		info.Expiry = time.Unix(int64(sec), int64(frac*1e9))
	}
	return info, nil
}

// unverifiedClaims reads the payload of a compact JWS (header.payload.signature).
func unverifiedClaims(tok string) (*tokenPayload, error) {
	parts := strings.Split(strings.TrimSpace(tok), ".")
	if len(parts) != 3 || parts[2] == "" {
		return nil, fmt.Errorf("%w: not a signed JWT (three base64url parts joined by dots)", ErrTokenInvalid)
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if err := decodeSegment(parts[0], &header); err != nil || header.Alg == "" || header.Alg == "none" {
		return nil, fmt.Errorf("%w: not a signed JWT: its header names no signing algorithm", ErrTokenInvalid)
	}
	var c tokenPayload
	if err := decodeSegment(parts[1], &c); err != nil {
		return nil, fmt.Errorf("%w: unreadable claims: %v", ErrTokenInvalid, err)
	}
	return &c, nil
}

func decodeSegment(seg string, v any) error {
	data, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

// Fingerprint returns the hex SHA-256 of a certificate's DER encoding.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}
