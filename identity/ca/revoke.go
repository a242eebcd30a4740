package ca

import (
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/micromesh/micromesh/identity"
)

// Revoked is a revoked certificate.
type Revoked struct {
	Serial    string // decimal
	ID        identity.ID
	Reason    string
	RevokedAt time.Time
	// ExpiresAt is when the certificate expires: the revocation is kept
	// (and listed) until then.
	ExpiresAt time.Time
}

// MaxReasonLen bounds a revocation's reason.
const MaxReasonLen = 256

// crlLifetime is how long a revocation list is valid; the CA issues a new
// one when half of it is gone (and whenever a certificate is revoked or a
// revoked one expires). Envoy refuses every peer once the list it has is
// past its NextUpdate, so it is far longer than a certificate lives: a
// control plane away for longer has let every certificate expire anyway.
const crlLifetime = 7 * 24 * time.Hour

// ParseSerial reads a certificate serial number as `meshctl cert inspect`
// prints it (decimal) or as openssl does (hex, colon-separated).
func ParseSerial(s string) (*big.Int, error) {
	s = strings.TrimSpace(s)
	n, ok := new(big.Int).SetString(s, 10)
	if !ok && strings.Contains(s, ":") {
		n, ok = new(big.Int).SetString(strings.ReplaceAll(s, ":", ""), 16)
	}
	if !ok || n.Sign() <= 0 {
		return nil, fmt.Errorf("%w: serial %q is neither a decimal number (meshctl cert inspect) nor colon-separated hex (openssl)", identity.ErrInvalid, s)
	}
	return n, nil
}

// RevokeSerial revokes one certificate this CA issued and has not seen
// expire. Revoking a certificate already revoked is not an error: its
// first revocation is returned.
func (ca *CA) RevokeSerial(serial, reason string) (Revoked, error) {
	n, err := ParseSerial(serial)
	if err != nil {
		return Revoked{}, err
	}
	if err := checkReason(reason); err != nil {
		return Revoked{}, err
	}
	sn := n.String()
	rec, found, err := ca.ledger.issued(sn)
	if err != nil {
		return Revoked{}, fmt.Errorf("look up certificate %s: %w", sn, err)
	}
	if !found || !rec.NotAfter.After(time.Now()) {
		return Revoked{}, fmt.Errorf("%w: this CA has no unexpired certificate with serial %s (list a workload's with `meshctl cert inspect`, or revoke its identity with --service)", identity.ErrNotFound, sn)
	}
	id, err := identity.ParseID(rec.ID)
	if err != nil {
		return Revoked{}, fmt.Errorf("certificate %s was issued to %q: %w", sn, rec.ID, err)
	}
	if err := ca.revocable(id); err != nil {
		return Revoked{}, err
	}
	out, err := ca.revoke(map[string]issuedRecord{sn: rec}, reason)
	if err != nil {
		return Revoked{}, err
	}
	return out[0], nil
}

// RevokeID revokes every unexpired certificate this CA issued to id: what
// to do when a workload's key may have leaked, since whoever holds a
// certificate can renew it. The workload then needs a new join token.
func (ca *CA) RevokeID(id identity.ID, reason string) ([]Revoked, error) {
	if id.TrustDomain != ca.trustDomain {
		return nil, fmt.Errorf("%w: %s is not of this CA's trust domain %q", identity.ErrInvalid, id, ca.trustDomain)
	}
	if err := checkReason(reason); err != nil {
		return nil, err
	}
	if err := ca.revocable(id); err != nil {
		return nil, err
	}
	recs, err := ca.ledger.issuedTo(id.String(), time.Now())
	if err != nil {
		return nil, fmt.Errorf("look up certificates of %s: %w", id, err)
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("%w: this CA has no unexpired certificate for %s", identity.ErrNotFound, id)
	}
	return ca.revoke(recs, reason)
}

// revocable refuses to revoke the mesh's own identities, those of
// namespace micromesh: the control plane, the platform services and edge
// servers running in its process, the CLI's admin identity. Revoked, they
// would be refused by every proxy with nothing to issue them anew.
func (ca *CA) revocable(id identity.ID) error {
	if id.Namespace == identity.SystemNamespace {
		return fmt.Errorf("%w: %s is one of the mesh's own identities (namespace %s: the server and what runs in it); restart `meshctl server` to give them new certificates instead", identity.ErrPermissionDenied, id, identity.SystemNamespace)
	}
	return nil
}

func checkReason(reason string) error {
	if len(reason) > MaxReasonLen || strings.ContainsAny(reason, "\r\n") {
		return fmt.Errorf("%w: a reason is one line of at most %d bytes", identity.ErrInvalid, MaxReasonLen)
	}
	return nil
}

// revoke records the revocation of recs (by serial) and issues a new
// revocation list with them. It returns them sorted by serial, with the
// first revocation of any revoked before.
func (ca *CA) revoke(recs map[string]issuedRecord, reason string) ([]Revoked, error) {
	now := time.Now().UTC().Truncate(time.Second)
	var in []revokedRecord
	for sn, rec := range recs {
		in = append(in, revokedRecord{Serial: sn, ID: rec.ID, Reason: reason, RevokedAt: now, ExpiresAt: rec.NotAfter})
	}
	ca.crlMu.Lock()
	defer ca.crlMu.Unlock()
	fresh, err := ca.ledger.revoke(in)
	if err != nil {
		return nil, fmt.Errorf("record the revocation: %w", err)
	}
	all, err := ca.ledger.revoked()
	if err != nil {
		return nil, fmt.Errorf("read revocations: %w", err)
	}
	if len(fresh) > 0 {
		if err := ca.issueCRL(all, time.Now()); err != nil {
			return nil, err
		}
		for _, r := range fresh {
			ca.log.Warn("revoked certificate", "id", r.ID, "serial", r.Serial, "reason", r.Reason, "expires_at", r.ExpiresAt)
		}
	}
	var out []Revoked
	for _, r := range all {
		if _, ok := recs[r.Serial]; ok {
			out = append(out, toRevoked(r))
		}
	}
	sortRevoked(out)
	return out, nil
}

// Revoked lists the revoked certificates that have not expired yet.
func (ca *CA) Revoked() ([]Revoked, error) {
	all, err := ca.ledger.revoked()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	out := make([]Revoked, 0, len(all))
	for _, r := range all {
		if r.ExpiresAt.After(now) {
			out = append(out, toRevoked(r))
		}
	}
	sortRevoked(out)
	return out, nil
}

func toRevoked(r revokedRecord) Revoked {
	id, _ := identity.ParseID(r.ID)
	return Revoked{Serial: r.Serial, ID: id, Reason: r.Reason, RevokedAt: r.RevokedAt, ExpiresAt: r.ExpiresAt}
}

func sortRevoked(rs []Revoked) {
	slices.SortFunc(rs, func(a, b Revoked) int {
		if c := a.RevokedAt.Compare(b.RevokedAt); c != 0 {
			return c
		}
		return strings.Compare(a.Serial, b.Serial)
	})
}

// Revocations returns the revocation list in force: nil while no unexpired
// certificate is revoked.
func (ca *CA) Revocations() *identity.Revocations { return ca.crl.Load() }

// RevocationsChanged is signalled after each new revocation list (a
// revocation, a revoked certificate's expiry, a renewal of the list).
func (ca *CA) RevocationsChanged() <-chan struct{} { return ca.crlChanged }

// refreshCRL issues a new list when revocations expired or the one in force
// is half-way through its life; called at start and by Run. Callers hold
// crlMu.
func (ca *CA) refreshCRL(now time.Time) error {
	all, err := ca.ledger.revoked()
	if err != nil {
		return fmt.Errorf("read revocations: %w", err)
	}
	cur := ca.crl.Load()
	live := 0
	for _, r := range all {
		if r.ExpiresAt.After(now) {
			live++
		}
	}
	if cur.Len() == live && (cur == nil || now.Before(cur.ThisUpdate().Add(crlLifetime/2))) {
		return nil
	}
	return ca.issueCRL(all, now)
}

// issueCRL signs a list of the unexpired revocations in all with the
// intermediate, installs it and signals the change. With none it installs
// nil: proxies then get no list at all. Callers hold crlMu.
func (ca *CA) issueCRL(all []revokedRecord, now time.Time) error {
	var entries []x509.RevocationListEntry
	for _, r := range all {
		if !r.ExpiresAt.After(now) {
			continue
		}
		n, ok := new(big.Int).SetString(r.Serial, 10)
		if !ok {
			continue
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: r.RevokedAt})
	}
	if len(entries) == 0 {
		if ca.crl.Swap(nil) != nil {
			ca.signalCRL()
		}
		return nil
	}
	slices.SortFunc(entries, func(a, b x509.RevocationListEntry) int { return a.SerialNumber.Cmp(b.SerialNumber) })
	tmpl := &x509.RevocationList{
		// Nanoseconds since the epoch: larger for every later list, across
		// restarts, with nothing to store.
		Number:                    big.NewInt(now.UnixNano()),
		ThisUpdate:                now.Add(-time.Minute).UTC(), // clocks a little behind still accept it
		NextUpdate:                now.Add(crlLifetime).UTC(),
		RevokedCertificateEntries: entries,
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.intermediate, ca.intermediateKey)
	if err != nil {
		return fmt.Errorf("sign the revocation list: %w", err)
	}
	r, err := identity.NewRevocations(der)
	if err != nil {
		return err
	}
	ca.crl.Store(r)
	ca.signalCRL()
	return nil
}

func (ca *CA) signalCRL() {
	select {
	case ca.crlChanged <- struct{}{}:
	default: // a pending signal covers this one: readers read the current list
	}
}
