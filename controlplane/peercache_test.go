package controlplane

import (
	"errors"
	"testing"
	"time"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/identity/ca"
)

func issue(t testing.TB, td string) (*identity.Credentials, *identity.Bundle) {
	t.Helper()
	c, err := ca.Open(t.Context(), t.TempDir(), ca.WithTrustDomain(td), ca.WithCertificateTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	id, err := identity.ServiceID(td, "default", "api")
	if err != nil {
		t.Fatal(err)
	}
	creds, err := c.IssueServing(t.Context(), id, nil)
	if err != nil {
		t.Fatal(err)
	}
	return creds, c.Bundle()
}

// A connection's verified identity is kept for it, but never past its
// chain's expiry, and never for another trust bundle.
func TestPeerCache(t *testing.T) {
	creds, bundle := issue(t, "one.test")
	_, other := issue(t, "two.test")
	c := &peerCache{m: map[peerKey]peerEntry{}}
	now := time.Now()
	id, err := c.verify(creds.Chain, bundle, now)
	if err != nil || id != creds.ID {
		t.Fatalf("verify = %v, %v; want %v", id, err, creds.ID)
	}
	if len(c.m) != 1 {
		t.Fatalf("%d entries kept, want 1", len(c.m))
	}
	// Kept: the same answer, however the bundle would judge it now.
	if id, err := c.verify(creds.Chain, bundle, now.Add(30*time.Second)); err != nil || id != creds.ID {
		t.Errorf("a kept verification: %v, %v", id, err)
	}
	// Another bundle (another CA, a rotated root) verifies afresh.
	if _, err := c.verify(creds.Chain, other, now); !errors.Is(err, identity.ErrForeignTrustDomain) {
		t.Errorf("another trust domain's bundle: %v; want ErrForeignTrustDomain", err)
	}
	// Past the leaf's expiry nothing kept answers.
	if _, err := c.verify(creds.Chain, bundle, creds.Leaf().NotAfter.Add(time.Second)); !errors.Is(err, identity.ErrCertExpired) {
		t.Errorf("after the certificate's expiry: %v; want ErrCertExpired", err)
	}
	// No certificate: the bundle's own refusal.
	if _, err := c.verify(nil, bundle, now); !errors.Is(err, identity.ErrNoCertificate) {
		t.Errorf("no certificate: %v", err)
	}
}

// BenchmarkVerifiedPeer is one API call's check of its caller, kept
// (peerCache) against the full chain verification each call made before.
func BenchmarkVerifiedPeer(b *testing.B) {
	creds, bundle := issue(b, "one.test")
	b.Run("verify", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := bundle.VerifyCertificates(creds.Chain, time.Now()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("kept", func(b *testing.B) {
		c := &peerCache{m: map[peerKey]peerEntry{}}
		for b.Loop() {
			if _, err := c.verify(creds.Chain, bundle, time.Now()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
