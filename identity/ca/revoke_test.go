package ca

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/identity"
)

// renew renews creds with a fresh key.
func renew(t *testing.T, ca *CA, creds *identity.Credentials) error {
	t.Helper()
	_, err := ca.Renew(context.Background(), creds.Chain, mustCSR(t, creds.ID))
	return err
}

// parsed is the X.509 list r holds.
func parsed(t *testing.T, r *identity.Revocations) *x509.RevocationList {
	t.Helper()
	block, _ := pem.Decode(r.PEM())
	list, err := x509.ParseRevocationList(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

func TestRevokeSerialRefusesTheCertificateEverywhere(t *testing.T) {
	ca := openTestCA(t)
	if ca.Revocations() != nil {
		t.Fatal("a new CA has a revocation list")
	}
	a, b := issue(t, ca, "a"), issue(t, ca, "b")
	server := identity.NewSource(b, ca.RenewFunc())
	client := identity.NewSource(a, ca.RenewFunc())
	if cErr, sErr := handshake(t, server.ServerTLSConfig(identity.AuthorizeAny()), client.ClientTLSConfig(identity.AuthorizeAny())); cErr != nil || sErr != nil {
		t.Fatalf("before revocation: client %v, server %v", cErr, sErr)
	}

	serial := a.Chain[0].SerialNumber.String()
	rev, err := ca.RevokeSerial(serial, "key left on a laptop")
	if err != nil {
		t.Fatal(err)
	}
	if rev.Serial != serial || rev.ID != a.ID || rev.Reason != "key left on a laptop" || !rev.ExpiresAt.Equal(a.Chain[0].NotAfter) {
		t.Errorf("revoked = %+v", rev)
	}

	// The list: signed by the intermediate, naming the serial.
	crl := ca.Revocations()
	if crl.Len() != 1 {
		t.Fatalf("revocation list has %d entries, want 1", crl.Len())
	}
	if err := parsed(t, crl).CheckSignatureFrom(a.Chain[1]); err != nil {
		t.Fatalf("the list is not the intermediate's: %v", err)
	}
	if err := crl.Check(a.ID, a.Chain); !errors.Is(err, identity.ErrRevoked) || !strings.Contains(err.Error(), serial) {
		t.Errorf("Check(a) = %v, want ErrRevoked naming the serial", err)
	}
	if err := crl.Check(b.ID, b.Chain); err != nil {
		t.Errorf("Check(b) = %v", err)
	}
	if _, _, err := ca.Bundle().VerifyCertificates(a.Chain, time.Now()); !errors.Is(err, identity.ErrRevoked) {
		t.Errorf("the CA's bundle verifies a: %v", err)
	}

	// The CA renews it no more.
	if err := renew(t, ca, a); err == nil {
		t.Error("a revoked certificate was renewed")
	} else if !errors.Is(err, identity.ErrUnauthenticated) {
		t.Errorf("renewing a revoked certificate: %v, want an ErrUnauthenticated", err)
	}
	if err := renew(t, ca, b); err != nil {
		t.Errorf("renewing b: %v", err)
	}

	// Peers holding the list refuse it; without it they would not.
	server.SetRevocations(ca.Revocations())
	_, sErr := handshake(t, server.ServerTLSConfig(identity.AuthorizeAny()), client.ClientTLSConfig(identity.AuthorizeAny()))
	if !errors.Is(sErr, identity.ErrRevoked) {
		t.Errorf("server accepted a revoked client: %v", sErr)
	}
	client.SetRevocations(ca.Revocations())
	c := identity.NewSource(issue(t, ca, "c"), ca.RenewFunc())
	c.SetRevocations(ca.Revocations())
	aServer := identity.NewSource(a, ca.RenewFunc())
	cErr, _ := handshake(t, aServer.ServerTLSConfig(identity.AuthorizeAny()), c.ClientTLSConfig(identity.AuthorizeAny()))
	if !errors.Is(cErr, identity.ErrRevoked) {
		t.Errorf("client accepted a revoked server: %v", cErr)
	}

	// Revoking it again answers with the first revocation.
	again, err := ca.RevokeSerial(serial, "again")
	if err != nil || again.Reason != "key left on a laptop" {
		t.Errorf("second revocation = %+v, %v", again, err)
	}
	if ca.Revocations().Len() != 1 {
		t.Errorf("list has %d entries after a second revocation of one", ca.Revocations().Len())
	}
}

func TestRevokeIDRevokesRenewedCertificatesToo(t *testing.T) {
	ca := openTestCA(t)
	a := issue(t, ca, "a")
	// Whoever holds a's key can renew it: the renewed certificate must go
	// with the first.
	renewed, err := ca.Renew(context.Background(), a.Chain, mustCSR(t, a.ID))
	if err != nil {
		t.Fatal(err)
	}
	other := issue(t, ca, "other")

	revs, err := ca.RevokeID(a.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(revs) != 2 {
		t.Fatalf("revoked %d certificates of %s, want 2", len(revs), a.ID)
	}
	if err := ca.Bundle().CheckRevoked(a.ID, a.Chain); !errors.Is(err, identity.ErrRevoked) {
		t.Errorf("first certificate: %v", err)
	}
	if err := ca.Bundle().CheckRevoked(a.ID, renewed); !errors.Is(err, identity.ErrRevoked) {
		t.Errorf("renewed certificate: %v", err)
	}
	if err := ca.Bundle().CheckRevoked(other.ID, other.Chain); err != nil {
		t.Errorf("another identity's certificate: %v", err)
	}
	// A new join token gives the workload a certificate that works.
	fresh := issue(t, ca, "a")
	if err := ca.Bundle().CheckRevoked(fresh.ID, fresh.Chain); err != nil {
		t.Errorf("a certificate issued after the revocation: %v", err)
	}
	if err := renew(t, ca, fresh); err != nil {
		t.Errorf("renewing it: %v", err)
	}
	list, err := ca.Revoked()
	if err != nil || len(list) != 2 {
		t.Fatalf("Revoked() = %v, %v", list, err)
	}
}

func TestRevokeRefusesBadInput(t *testing.T) {
	ca := openTestCA(t)
	a := issue(t, ca, "a")
	nobody := mustID(t, ca.TrustDomain(), "default", "nobody")
	foreign := mustID(t, "other.example", "default", "a")
	for _, tc := range []struct {
		name   string
		revoke func() error
		want   error
		says   string
	}{
		{"serial not a number", func() error { _, err := ca.RevokeSerial("12ab", ""); return err }, identity.ErrInvalid, "decimal"},
		{"serial zero", func() error { _, err := ca.RevokeSerial("0", ""); return err }, identity.ErrInvalid, "decimal"},
		{"serial never issued", func() error { _, err := ca.RevokeSerial("123456789", ""); return err }, identity.ErrNotFound, "123456789"},
		{"identity never issued", func() error { _, err := ca.RevokeID(nobody, ""); return err }, identity.ErrNotFound, nobody.String()},
		{"identity of another trust domain", func() error { _, err := ca.RevokeID(foreign, ""); return err }, identity.ErrInvalid, "other.example"},
		{"the control plane", func() error { _, err := ca.RevokeID(identity.ControlPlaneID(ca.TrustDomain()), ""); return err }, identity.ErrPermissionDenied, "restart"},
		{"a platform service", func() error {
			_, err := ca.RevokeID(mustID(t, ca.TrustDomain(), identity.SystemNamespace, "store"), "")
			return err
		}, identity.ErrPermissionDenied, "the mesh's own identities"},
		{"reason of two lines", func() error { _, err := ca.RevokeID(a.ID, "one\ntwo"); return err }, identity.ErrInvalid, "one line"},
		{"reason too long", func() error { _, err := ca.RevokeID(a.ID, strings.Repeat("x", MaxReasonLen+1)); return err }, identity.ErrInvalid, "one line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.revoke()
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("err = %v, want %v saying %q", err, tc.want, tc.says)
			}
		})
	}
	// Nothing was revoked by the refusals.
	if ca.Revocations() != nil {
		t.Errorf("refused revocations left a list of %d", ca.Revocations().Len())
	}
	if err := renew(t, ca, a); err != nil {
		t.Errorf("renewing a after refused revocations: %v", err)
	}
}

func TestRevocationsSurviveRestartAndLeaveWhenExpired(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	a := issue(t, ca, "a")
	serial := a.Chain[0].SerialNumber.String()
	// openssl's spelling of the serial works as well.
	hex := fmt.Sprintf("%x", a.Chain[0].SerialNumber.Bytes())
	var colons []string
	for i := 0; i < len(hex); i += 2 {
		colons = append(colons, hex[i:i+2])
	}
	if _, err := ca.RevokeSerial(strings.Join(colons, ":"), "test"); err != nil {
		t.Fatal(err)
	}
	first := ca.Revocations()
	if err := ca.Close(); err != nil {
		t.Fatal(err)
	}

	ca2, err := Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ca2.Close()
	crl := ca2.Revocations()
	if crl.Len() != 1 || crl.Check(a.ID, a.Chain) == nil {
		t.Fatalf("after a restart: list of %d, Check(a) = %v", crl.Len(), crl.Check(a.ID, a.Chain))
	}
	if before, after := parsed(t, first).Number, parsed(t, crl).Number; after.Cmp(before) < 0 {
		t.Errorf("the list's number went down across a restart: %v → %v", before, after)
	}
	if err := renew(t, ca2, a); err == nil {
		t.Error("a certificate revoked before a restart was renewed after it")
	}

	// Once the certificate has expired, the list lets it go: no peer
	// would accept it anyway.
	later := a.Chain[0].NotAfter.Add(time.Minute)
	if _, revoked, err := ca2.ledger.purge(later); err != nil || revoked != 1 {
		t.Fatalf("purge: %d revocations, %v", revoked, err)
	}
	ca2.crlMu.Lock()
	err = ca2.refreshCRL(later)
	ca2.crlMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if ca2.Revocations() != nil {
		t.Errorf("the list keeps %d expired entries", ca2.Revocations().Len())
	}
	select {
	case <-ca2.RevocationsChanged():
	default:
		t.Error("no signal for the emptied list")
	}
	if _, err := ca2.RevokeSerial(serial, ""); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("revoking an expired certificate: %v, want ErrNotFound", err)
	}
}

func TestRevocationListIsRenewedHalfWay(t *testing.T) {
	// Certificates outliving the list: it is renewed while they last.
	ca := openTestCA(t, WithCertificateTTL(4*crlLifetime))
	a := issue(t, ca, "a")
	if _, err := ca.RevokeID(a.ID, ""); err != nil {
		t.Fatal(err)
	}
	first := ca.Revocations()
	<-ca.RevocationsChanged()
	ca.crlMu.Lock()
	defer ca.crlMu.Unlock()
	if err := ca.refreshCRL(time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if ca.Revocations() != first {
		t.Error("a fresh list was replaced")
	}
	halfway := first.ThisUpdate().Add(crlLifetime/2 + time.Minute)
	if err := ca.refreshCRL(halfway); err != nil {
		t.Fatal(err)
	}
	next := ca.Revocations()
	if next == first || next.Len() != 1 || !next.NextUpdate().After(first.NextUpdate()) {
		t.Errorf("half-way: list %p (was %p), %d entries, next update %v (was %v)", next, first, next.Len(), next.NextUpdate(), first.NextUpdate())
	}
}
