package ca

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.step.sm/crypto/jose"
	"go.step.sm/crypto/randutil"

	"github.com/micromesh/micromesh/internal/atomicfile"
	"github.com/micromesh/micromesh/internal/keyfile"

	"github.com/micromesh/micromesh/identity"
)

// Join tokens are the embedded authority's one-time tokens (OTT): JWTs signed
// by its JWK provisioner, bound to one SPIFFE ID, refused on second use.
const (
	provisionerName = "micromesh"
	// DefaultTokenTTL is how long a join token is valid by default.
	DefaultTokenTTL = 5 * time.Minute
	// MaxTokenTTL bounds a join token's life: a token is a bearer credential.
	MaxTokenTTL = 24 * time.Hour
	// tokenLeeway is the clock skew the authority accepts on token times.
	tokenLeeway = time.Minute
)

// TokenSigner mints join tokens. The CA holds one; so does the CLI on the
// server's machine, read from the CA directory (the admin credential).
type TokenSigner struct {
	key         *jose.JSONWebKey // private
	trustDomain string
	rootSHA     string
}

// TokenClaims is the payload of a join token, in the authority's format:
// the standard claims, the SANs the certificate may carry, and the hex
// SHA-256 of the root (so a holder of the token alone can check the trust
// bundle it downloads; identity.InspectToken reads it).
type TokenClaims struct {
	jose.Claims
	SANs []string `json:"sans,omitempty"`
	SHA  string   `json:"sha,omitempty"`
}

// LoadTokenSigner reads the token-signing key of the CA in dir.
func LoadTokenSigner(dir string) (*TokenSigner, error) {
	cfg, ok, err := readCAConfig(dir)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("no CA in %s: start the server first (make run), or point --home at its state", dir)
	}
	roots, err := identity.ReadCertificates(filepath.Join(dir, rootCertFile))
	if err != nil {
		return nil, err
	}
	key, err := readProvisionerKey(filepath.Join(dir, provisionerKeyFile))
	if err != nil {
		return nil, err
	}
	return &TokenSigner{key: key, trustDomain: cfg.TrustDomain, rootSHA: identity.Fingerprint(roots[0])}, nil
}

// loadOrCreateProvisionerKey returns the JWK in dir, creating it on first start.
func loadOrCreateProvisionerKey(dir string) (*jose.JSONWebKey, error) {
	path := filepath.Join(dir, provisionerKeyFile)
	exists, err := fileExists(path)
	if err != nil {
		return nil, err
	}
	if exists {
		return readProvisionerKey(path)
	}
	key, err := jose.GenerateJWK("EC", "P-256", "ES256", "sig", "", 0)
	if err != nil {
		return nil, fmt.Errorf("generate provisioner key: %w", err)
	}
	if key.KeyID, err = jose.Thumbprint(key); err != nil {
		return nil, fmt.Errorf("provisioner key id: %w", err)
	}
	data, err := json.Marshal(key)
	if err != nil {
		return nil, fmt.Errorf("encode provisioner key: %w", err)
	}
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return nil, err
	}
	return key, nil
}

func readProvisionerKey(path string) (*jose.JSONWebKey, error) {
	if err := keyfile.CheckPrivate(path, "the CA's token-signing key"); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var key jose.JSONWebKey
	if err := json.Unmarshal(data, &key); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if key.IsPublic() {
		return nil, fmt.Errorf("%s holds a public key; the token signer needs the private key", path)
	}
	return &key, nil
}

// TrustDomain is the trust domain the signer mints tokens for.
func (s *TokenSigner) TrustDomain() string { return s.trustDomain }

// audience is what the authority expects in a sign token's aud claim.
func (s *TokenSigner) audience() string { return signAudience(s.trustDomain) }

func signAudience(td string) string { return "https://" + td + "/1.0/sign" }

// Mint returns a join token for id, valid for ttl from now.
func (s *TokenSigner) Mint(id identity.ID, ttl time.Duration) (string, error) {
	if id.TrustDomain != s.trustDomain {
		return "", fmt.Errorf("%w: %s is not in trust domain %s", identity.ErrInvalidID, id, s.trustDomain)
	}
	if id.Kind != identity.KindService {
		return "", fmt.Errorf("%w: join tokens are for services, not %s", identity.ErrInvalidID, id)
	}
	return s.mint(id, ttl, nil, time.Now())
}

// mint signs a token for id whose certificate may also carry extraSANs
// (the control plane's own DNS names and addresses).
func (s *TokenSigner) mint(id identity.ID, ttl time.Duration, extraSANs []string, now time.Time) (string, error) {
	if ttl <= 0 || ttl > MaxTokenTTL {
		return "", fmt.Errorf("%w: token lifetime %v must be more than 0 and at most %v", identity.ErrInvalid, ttl, MaxTokenTTL)
	}
	jti, err := randutil.Hex(64) // 256 bits
	if err != nil {
		return "", fmt.Errorf("token id: %w", err)
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: s.key.Key},
		new(jose.SignerOptions).WithType("JWT").WithHeader("kid", s.key.KeyID),
	)
	if err != nil {
		return "", fmt.Errorf("token signer: %w", err)
	}
	claims := TokenClaims{
		Claims: jose.Claims{
			ID:        jti,
			Issuer:    provisionerName,
			Subject:   id.String(),
			Audience:  jose.Audience{s.audience()},
			IssuedAt:  jose.NewNumericDate(now),
			NotBefore: jose.NewNumericDate(now),
			Expiry:    jose.NewNumericDate(now.Add(ttl)),
		},
		SANs: append([]string{id.String()}, extraSANs...),
		SHA:  s.rootSHA,
	}
	tok, err := jose.Signed(signer).Claims(claims).CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return tok, nil
}

// verifyToken checks a token's signature against the provisioner's public key
// and its times against now. It runs before the authority's own checks so a
// forged token can never burn the ID of a real one in the used-token ledger,
// and so each failure gets its own error.
func verifyToken(tok string, pub *jose.JSONWebKey, td string, now time.Time) (*TokenClaims, error) {
	jwt, err := jose.ParseSigned(tok)
	if err != nil {
		return nil, fmt.Errorf("%w: not a signed JWT (mint one with `meshctl cert token`): %v", identity.ErrTokenInvalid, err)
	}
	var c TokenClaims
	if err := jwt.Claims(pub.Key, &c); err != nil {
		return nil, fmt.Errorf("%w: its signature does not verify: it was not minted by this mesh's CA", identity.ErrTokenInvalid)
	}
	err = c.ValidateWithLeeway(jose.Expected{Issuer: provisionerName, Audience: jose.Audience{signAudience(td)}, Time: now}, tokenLeeway)
	switch {
	case errors.Is(err, jose.ErrExpired):
		return nil, fmt.Errorf("%w at %s; mint a new one with `meshctl cert token`", identity.ErrTokenExpired, c.Expiry.Time().UTC().Format(time.RFC3339))
	case err != nil:
		return nil, fmt.Errorf("%w: %v", identity.ErrTokenInvalid, err)
	case c.ID == "":
		return nil, fmt.Errorf("%w: it has no token id (jti)", identity.ErrTokenInvalid)
	}
	return &c, nil
}
