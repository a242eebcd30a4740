// Package ca is the mesh's embedded certificate authority (smallstep's
// authority, in-process): it keeps the root and intermediate, mints and
// verifies join tokens, signs workload certificates and renews them. Only
// the control plane and the admin CLI link it; workloads use package
// identity, which holds what both sides share (IDs, bundles, credentials,
// rotation, the client calls).
package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/config"
	"github.com/smallstep/certificates/authority/provisioner"
	"github.com/smallstep/certificates/errs"
	"go.step.sm/crypto/jose"
	"go.step.sm/crypto/x509util"

	"github.com/micromesh/micromesh/identity"
)

// DefaultCertificateTTL is the lifetime of a workload certificate.
const DefaultCertificateTTL = 24 * time.Hour

// leafTemplate renders workload certificates: no subject, the SANs of the
// token (exactly one SPIFFE ID for workloads), usable by TLS servers and
// clients. With an empty subject the SAN extension is marked critical, as
// RFC 5280 requires.
const leafTemplate = `{
	"sans": {{ toJson .SANs }},
	"keyUsage": ["digitalSignature"],
	"extKeyUsage": ["serverAuth", "clientAuth"]
}`

// CA is the mesh's embedded certificate authority: a smallstep authority
// running in-process over a root and intermediate kept in one directory.
type CA struct {
	dir         string
	trustDomain string
	certTTL     time.Duration
	log         *slog.Logger

	bundle          *identity.Bundle
	intermediate    *x509.Certificate
	intermediateKey crypto.Signer
	tokens          *TokenSigner
	tokenKey        *jose.JSONWebKey // public half, to verify tokens
	auth            *authority.Authority
	ledger          *ledger

	crlMu      sync.Mutex // one new revocation list at a time
	crl        atomic.Pointer[identity.Revocations]
	crlChanged chan struct{}
}

type caOptions struct {
	trustDomain string
	certTTL     time.Duration
	log         *slog.Logger
}

// Option configures Open.
type Option func(*caOptions)

// WithTrustDomain sets the trust domain of a new CA (default micromesh.local).
// An existing CA keeps the trust domain it was created with; asking for
// another is an error.
func WithTrustDomain(td string) Option { return func(o *caOptions) { o.trustDomain = td } }

// WithCertificateTTL sets the lifetime of workload certificates (default 24h).
func WithCertificateTTL(d time.Duration) Option { return func(o *caOptions) { o.certTTL = d } }

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(o *caOptions) { o.log = l } }

// Open opens the CA kept in dir, creating it on first start: a root (10
// years) and an intermediate (1 year), ECDSA P-256, keys 0600. Later starts
// reuse them; an intermediate near the end of its life is replaced.
func Open(ctx context.Context, dir string, opts ...Option) (*CA, error) {
	o := caOptions{certTTL: DefaultCertificateTTL, log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		opt(&o)
	}
	if o.certTTL < time.Minute || o.certTTL > IntermediateLifetime/intermediateRenewFraction {
		return nil, fmt.Errorf("%w: certificate lifetime %v must be between 1m and %v", identity.ErrInvalid, o.certTTL, IntermediateLifetime/intermediateRenewFraction)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create CA directory: %w", err)
	}
	cfg, exists, err := readCAConfig(dir)
	if err != nil {
		return nil, err
	}
	switch {
	case !exists:
		if o.trustDomain == "" {
			o.trustDomain = identity.DefaultTrustDomain
		}
		if err := identity.ValidateTrustDomain(o.trustDomain); err != nil {
			return nil, err
		}
		cfg = caConfig{TrustDomain: o.trustDomain, Created: time.Now().UTC()}
	case o.trustDomain != "" && o.trustDomain != cfg.TrustDomain:
		return nil, fmt.Errorf("the CA in %s belongs to trust domain %q, not %q: use another MESH_HOME for another trust domain", dir, cfg.TrustDomain, o.trustDomain)
	}
	td := cfg.TrustDomain
	now := time.Now()

	root, err := loadOrCreateRoot(dir, td, now)
	if err != nil {
		return nil, err
	}
	inter, replaced, err := loadOrCreateIntermediate(dir, td, root, now)
	if err != nil {
		return nil, err
	}
	if replaced {
		o.log.Info("replaced the intermediate certificate", "not_after", inter.cert.NotAfter)
	}
	tokenKey, err := loadOrCreateProvisionerKey(dir)
	if err != nil {
		return nil, err
	}
	if !exists {
		// Written last: its presence means the CA is complete.
		if err := writeCAConfig(dir, cfg); err != nil {
			return nil, err
		}
		o.log.Info("created a new CA", "dir", dir, "trust_domain", td, "root_sha256", identity.Fingerprint(root.cert))
	}
	led, err := openLedger(filepath.Join(dir, ledgerFile))
	if err != nil {
		return nil, err
	}
	pub := tokenKey.Public()
	auth, err := newAuthority(td, o.certTTL, &pub, root, inter, led)
	if err != nil {
		_ = led.close()
		return nil, err
	}
	c := &CA{
		dir:             dir,
		trustDomain:     td,
		certTTL:         o.certTTL,
		log:             o.log,
		bundle:          identity.NewBundle(td, []*x509.Certificate{root.cert}),
		intermediate:    inter.cert,
		intermediateKey: inter.key,
		tokens:          &TokenSigner{key: tokenKey, trustDomain: td, rootSHA: identity.Fingerprint(root.cert)},
		tokenKey:        &pub,
		auth:            auth,
		ledger:          led,
		crlChanged:      make(chan struct{}, 1),
	}
	// Whatever verifies with the CA's bundle checks its revocations too.
	c.bundle = c.bundle.WithRevocations(c.Revocations)
	// The revocations recorded before a restart are in force at once.
	if err := c.refreshCRL(time.Now()); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
}

// newAuthority builds the embedded smallstep authority: one JWK provisioner
// whose one-time tokens are the mesh's join tokens.
func newAuthority(td string, certTTL time.Duration, tokenKey *jose.JSONWebKey, root, inter keyPair, led *ledger) (*authority.Authority, error) {
	disable := false
	prov := &provisioner.JWK{
		Name: provisionerName,
		Type: provisioner.TypeJWK.String(),
		Key:  tokenKey,
		Claims: &provisioner.Claims{
			MinTLSDur:               &provisioner.Duration{Duration: time.Minute},
			MaxTLSDur:               &provisioner.Duration{Duration: certTTL},
			DefaultTLSDur:           &provisioner.Duration{Duration: certTTL},
			DisableRenewal:          &disable,
			AllowRenewalAfterExpiry: &disable,
			EnableSSHCA:             &disable,
		},
		Options: &provisioner.Options{X509: &provisioner.X509Options{Template: leafTemplate}},
	}
	cfg := &config.Config{
		DNSNames: []string{td}, // the audience of join tokens: https://<td>/1.0/sign
		AuthorityConfig: &config.AuthConfig{
			Provisioners: provisioner.List{prov},
			// Used tokens are persisted in the ledger, so tokens minted
			// before a restart stay valid (and single-use) after it.
			DisableIssuedAtCheck: true,
		},
	}
	a, err := authority.NewEmbedded(
		authority.WithConfig(cfg),
		authority.WithX509RootCerts(root.cert),
		authority.WithX509Signer(inter.cert, inter.key),
		authority.WithDatabase(led),
		authority.WithQuietInit(),
	)
	if err != nil {
		return nil, fmt.Errorf("start the embedded authority: %w", err)
	}
	return a, nil
}

// TrustDomain returns the CA's trust domain.
func (ca *CA) TrustDomain() string { return ca.trustDomain }

// Bundle returns the trust bundle: the root.
func (ca *CA) Bundle() *identity.Bundle { return ca.bundle }

// Tokens returns the CA's join-token signer.
func (ca *CA) Tokens() *TokenSigner { return ca.tokens }

// CertificateTTL returns the lifetime of workload certificates.
func (ca *CA) CertificateTTL() time.Duration { return ca.certTTL }

// IntermediateNotAfter returns when the current intermediate expires.
func (ca *CA) IntermediateNotAfter() time.Time { return ca.intermediate.NotAfter }

// Sign issues a first certificate: csr must ask for exactly the SPIFFE ID
// that token is bound to, and token must be valid and unused. It returns the
// chain, leaf first.
func (ca *CA) Sign(ctx context.Context, csr []byte, token string) ([]*x509.Certificate, error) {
	req, id, err := identity.ParseCSR(csr)
	if err != nil {
		return nil, err
	}
	if id.TrustDomain != ca.trustDomain {
		return nil, fmt.Errorf("%w: the CSR asks for %s, but this CA signs only trust domain %q", identity.ErrIDMismatch, id, ca.trustDomain)
	}
	claims, err := verifyToken(token, ca.tokenKey, ca.trustDomain, time.Now())
	if err != nil {
		return nil, err
	}
	if claims.Subject != id.String() || len(claims.SANs) != 1 || claims.SANs[0] != id.String() {
		return nil, fmt.Errorf("%w: the token is for %s, but the CSR asks for %s", identity.ErrIDMismatch, claims.Subject, id)
	}
	return ca.signWithToken(ctx, req, token, claims.ID)
}

// signWithToken hands an already verified request to the authority, which
// checks the token again and records it as used.
func (ca *CA) signWithToken(ctx context.Context, csr *x509.CertificateRequest, token, tokenID string) ([]*x509.Certificate, error) {
	actx := provisioner.NewContextWithMethod(authority.NewContext(ctx, ca.auth), provisioner.SignMethod)
	signOpts, err := ca.auth.Authorize(actx, token)
	if err != nil {
		if used, uerr := ca.ledger.used(tokenID); uerr == nil && used {
			return nil, fmt.Errorf("%w: each join token gets one certificate; mint a new one with `meshctl cert token`", identity.ErrTokenReused)
		}
		return nil, fmt.Errorf("%w: %s", identity.ErrTokenInvalid, authorityMessage(err))
	}
	chain, err := ca.auth.SignWithContext(actx, csr, provisioner.SignOptions{}, signOpts...)
	if err != nil {
		return nil, classifyAuthorityError(err)
	}
	return chain, nil
}

// Renew issues a new certificate for the holder of peer, a chain presented
// over mTLS (leaf first), for the new key in csr. The peer certificate must be
// current and of this trust domain; the new certificate keeps its ID and
// lifetime.
func (ca *CA) Renew(ctx context.Context, peer []*x509.Certificate, csr []byte) ([]*x509.Certificate, error) {
	id, chain, err := ca.bundle.VerifyCertificates(peer, time.Now())
	if err != nil {
		return nil, err
	}
	req, csrID, err := identity.ParseCSR(csr)
	if err != nil {
		return nil, err
	}
	if csrID != id {
		return nil, fmt.Errorf("%w: renewal keeps the identity: the certificate is for %s, but the CSR asks for %s", identity.ErrIDMismatch, id, csrID)
	}
	out, err := ca.auth.RenewContext(ctx, chain[0], req.PublicKey)
	if err != nil {
		return nil, classifyAuthorityError(err)
	}
	return out, nil
}

// IssueServing issues credentials for one of the mesh's own servers (the
// control plane): the SPIFFE ID id plus DNS names and IP addresses in hosts,
// so that clients checking host names (gRPC's xDS client) accept it too.
func (ca *CA) IssueServing(ctx context.Context, id identity.ID, hosts []string) (*identity.Credentials, error) {
	key, err := identity.NewKey()
	if err != nil {
		return nil, err
	}
	sans := append([]string{id.String()}, hosts...)
	cr, err := x509util.CreateCertificateRequest("", sans, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate request: %w", err)
	}
	token, err := ca.tokens.mint(id, time.Minute, hosts, time.Now())
	if err != nil {
		return nil, err
	}
	claims, err := verifyToken(token, ca.tokenKey, ca.trustDomain, time.Now())
	if err != nil {
		return nil, err
	}
	chain, err := ca.signWithToken(ctx, cr, token, claims.ID)
	if err != nil {
		return nil, err
	}
	return &identity.Credentials{ID: id, Chain: chain, Key: key, Bundle: ca.bundle}, nil
}

// RenewFunc returns a renewal function for credentials issued by this CA
// in-process, for use with a Source.
func (ca *CA) RenewFunc() identity.RenewFunc {
	return func(ctx context.Context, cur *identity.Credentials, csr []byte) ([]*x509.Certificate, *identity.Bundle, error) {
		chain, err := ca.Renew(ctx, cur.Chain, csr)
		return chain, ca.bundle, err
	}
}

// Run does the CA's housekeeping until ctx ends: it forgets used tokens and
// issued and revoked certificates once they have expired, and keeps the
// revocation list fresh.
func (ca *CA) Run(ctx context.Context) error {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		now := time.Now()
		if tokens, revoked, err := ca.ledger.purge(now); err != nil {
			ca.log.Warn("purge the ledger", "err", err)
		} else if tokens > 0 || revoked > 0 {
			ca.log.Debug("purged the ledger", "used_tokens", tokens, "expired_revocations", revoked)
		}
		ca.crlMu.Lock()
		if err := ca.refreshCRL(now); err != nil {
			ca.log.Warn("renew the revocation list", "err", err)
		}
		ca.crlMu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Close stops the authority and closes the ledger.
func (ca *CA) Close() error {
	return errors.Join(ca.auth.Shutdown(), ca.ledger.close())
}

// authorityMessage extracts the human message from an authority error.
func authorityMessage(err error) string {
	var e *errs.Error
	if errors.As(err, &e) && e.Err != nil {
		return e.Err.Error()
	}
	return err.Error()
}

// classifyAuthorityError maps an authority refusal to this package's classes.
func classifyAuthorityError(err error) error {
	var e *errs.Error
	if errors.As(err, &e) {
		switch code := e.StatusCode(); {
		case code == http.StatusUnauthorized:
			return fmt.Errorf("%w: %s", identity.ErrUnauthenticated, authorityMessage(err))
		case code == http.StatusForbidden:
			return fmt.Errorf("%w: %s", identity.ErrPermissionDenied, authorityMessage(err))
		case code >= 400 && code < 500:
			return fmt.Errorf("%w: %s", identity.ErrInvalid, authorityMessage(err))
		}
	}
	return fmt.Errorf("the authority failed: %w", err)
}
