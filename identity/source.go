package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// RenewFunc obtains a new chain for the key behind csr, authenticating as
// cur, and the current trust bundle. Over the network it is the Identity
// API's Renew; in the control plane it is CA.RenewFunc.
type RenewFunc func(ctx context.Context, cur *Credentials, csr []byte) ([]*x509.Certificate, *Bundle, error)

// Authorizer decides whether a verified peer may connect.
type Authorizer func(ID) error

// AuthorizeID accepts only want.
func AuthorizeID(want ID) Authorizer {
	return func(got ID) error {
		if got != want {
			return fmt.Errorf("%w: expected %s, the peer is %s", ErrIDMismatch, want, got)
		}
		return nil
	}
}

// AuthorizeAny accepts every identity of the trust domain.
func AuthorizeAny() Authorizer { return func(ID) error { return nil } }

// Source holds a workload's current credentials and renews them at
// half-life (with jitter), swapping them into the TLS configs it hands out
// without touching established connections. Safe for concurrent use.
type Source struct {
	cur      atomic.Pointer[sourceState]
	revoked  atomic.Pointer[Revocations]
	renew    RenewFunc
	log      *slog.Logger
	onRotate func(*Credentials) error
	mu       sync.Mutex // one rotation at a time
}

type sourceState struct {
	creds *Credentials
	cert  *tls.Certificate
}

// SourceOption configures a Source.
type SourceOption func(*Source)

// WithSourceLogger sets the logger (default: discard).
func WithSourceLogger(l *slog.Logger) SourceOption { return func(s *Source) { s.log = l } }

// OnRotate calls fn with each new set of credentials, after the swap (to
// write them to files, say). An error is logged; the rotation stands.
func OnRotate(fn func(*Credentials) error) SourceOption {
	return func(s *Source) { s.onRotate = fn }
}

// NewSource returns a source serving initial until its first renewal.
func NewSource(initial *Credentials, renew RenewFunc, opts ...SourceOption) *Source {
	s := &Source{renew: renew, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(s)
	}
	s.store(initial)
	return s
}

func (s *Source) store(c *Credentials) {
	s.cur.Store(&sourceState{creds: c, cert: c.TLSCertificate()})
}

// Current returns the credentials in force.
func (s *Source) Current() *Credentials { return s.cur.Load().creds }

// Rotate renews now: a new key, a CSR for the same ID, the renewal, the swap.
func (s *Source) Rotate(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.Current()
	key, err := NewKey()
	if err != nil {
		return err
	}
	csr, err := NewCSR(key, cur.ID)
	if err != nil {
		return err
	}
	chain, bundle, err := s.renew(ctx, cur, csr)
	if err != nil {
		return fmt.Errorf("renew %s: %w", cur.ID, err)
	}
	if len(chain) == 0 {
		return fmt.Errorf("renew %s: the CA returned no certificate", cur.ID)
	}
	if bundle == nil {
		bundle = cur.Bundle
	}
	next := &Credentials{ID: cur.ID, Chain: chain, Key: key, Bundle: bundle}
	if _, _, err := bundle.VerifyCertificates(chain, time.Now()); err != nil {
		return fmt.Errorf("renew %s: the new certificate does not verify: %w", cur.ID, err)
	}
	s.store(next)
	s.log.Info("rotated certificate", "id", cur.ID.String(), "not_after", next.Leaf().NotAfter)
	if s.onRotate != nil {
		if err := s.onRotate(next); err != nil {
			s.log.Warn("after rotation", "err", err)
		}
	}
	return nil
}

// Run renews the credentials at half-life until ctx ends. A failed renewal
// is retried with backoff; the old certificate serves until it expires.
func (s *Source) Run(ctx context.Context) error {
	backoff := time.Second
	for {
		wait := time.Until(RenewalTime(s.Current().Leaf(), rand.Float64()))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		for {
			err := s.Rotate(ctx)
			if err == nil || ctx.Err() != nil {
				backoff = time.Second
				break
			}
			left := time.Until(s.Current().Leaf().NotAfter)
			s.log.Error("certificate renewal failed; retrying", "err", err, "retry_in", backoff, "expires_in", left.Round(time.Second))
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			backoff = min(backoff*2, time.Minute)
		}
	}
}

// RenewalTime returns when to renew leaf: at half its life, brought forward
// by up to a tenth of its life (u in [0,1) picks where), so a fleet issued
// together does not renew together.
func RenewalTime(leaf *x509.Certificate, u float64) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotBefore.Add(life/2 - time.Duration(u*float64(life/10)))
}

func (s *Source) bundle() *Bundle               { return s.Current().Bundle }
func (s *Source) certificate() *tls.Certificate { return s.cur.Load().cert }

// ServerTLSConfig returns a TLS 1.3 server config presenting the current
// certificate and requiring a client certificate that verifies against the
// current bundle and that authorize accepts.
func (s *Source) ServerTLSConfig(authorize Authorizer) *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		GetCertificate:        func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.certificate(), nil },
		ClientAuth:            tls.RequireAnyClientCert, // verified below, against the live bundle
		VerifyPeerCertificate: verifyPeer(s.bundle, s.Revocations, authorize),
	}
}

// ServerTLSConfigOptionalClient is ServerTLSConfig for a server that also
// takes callers without a certificate (the Identity API's Sign, called with a
// join token): a certificate, if presented, is not checked here, and each
// handler that needs one verifies it with Bundle.Verify.
func (s *Source) ServerTLSConfigOptionalClient() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.certificate(), nil },
		ClientAuth:     tls.RequestClientCert,
	}
}

// ClientTLSConfig returns a TLS 1.3 client config presenting the current
// certificate and accepting a server that verifies against the current bundle
// and that authorize accepts.
func (s *Source) ClientTLSConfig(authorize Authorizer) *tls.Config {
	return clientTLSConfig(s.bundle, s.Revocations, s.certificate, authorize)
}

// SetRevocations makes r the revocation list peers are checked against at
// each handshake from now on (nil: none). Established connections are the
// caller's to judge (the proxy checks each request's caller).
func (s *Source) SetRevocations(r *Revocations) { s.revoked.Store(r) }

// Revocations returns the revocation list in force, or nil.
func (s *Source) Revocations() *Revocations { return s.revoked.Load() }

// ClientTLSConfig returns a TLS 1.3 client config that verifies the server
// against bundle() and authorize, and presents cert() when it is not nil.
// The functions are called at each handshake, so rotations take effect.
func ClientTLSConfig(bundle func() *Bundle, cert func() *tls.Certificate, authorize Authorizer) *tls.Config {
	return clientTLSConfig(bundle, nil, cert, authorize)
}

// clientTLSConfig is ClientTLSConfig checking the server against revoked's
// list too (revoked may be nil).
func clientTLSConfig(bundle func() *Bundle, revoked func() *Revocations, cert func() *tls.Certificate, authorize Authorizer) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Go's own verification checks host names, which SPIFFE identities
		// do not use; VerifyPeerCertificate does the full chain check
		// against the live bundle instead.
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: verifyPeer(bundle, revoked, authorize),
	}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c := cert(); c != nil {
				return c, nil
			}
			return &tls.Certificate{}, nil
		}
	}
	return cfg
}

// verifyPeer checks a peer's chain against the bundle, the revocation list
// (revoked may be nil) and authorize.
func verifyPeer(bundle func() *Bundle, revoked func() *Revocations, authorize Authorizer) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		id, chain, err := bundle().Verify(raw, time.Now())
		if err != nil {
			return err
		}
		if revoked != nil {
			if err := revoked().Check(id, chain); err != nil {
				return err
			}
		}
		if authorize == nil {
			return errors.New("no authorizer: refusing every peer")
		}
		return authorize(id)
	}
}
