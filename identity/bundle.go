package identity

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"
)

// Bundle is a trust domain's trust bundle: the roots that certify its
// identities. It verifies peers, and its roots are immutable: a refreshed
// bundle is a new value. The CA's own bundle also checks the CA's live
// revocation list (WithRevocations).
type Bundle struct {
	trustDomain string
	roots       []*x509.Certificate
	pool        *x509.CertPool
	revoked     func() *Revocations // nil: none
}

// NewBundle returns the bundle of trust domain td.
func NewBundle(td string, roots []*x509.Certificate) *Bundle {
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	return &Bundle{trustDomain: td, roots: roots, pool: pool}
}

// WithRevocations returns the bundle checking every chain it verifies
// against the revocation list revoked returns at that moment as well: the
// CA's own bundle, so that whatever verifies with it in the control plane's
// process (its APIs, renewals, in-process proxies) refuses revoked
// certificates at once.
func (b *Bundle) WithRevocations(revoked func() *Revocations) *Bundle {
	c := *b
	c.revoked = revoked
	return &c
}

// CheckRevoked refuses a verified chain (leaf first) that the bundle's
// revocation list revokes; without a list it accepts every chain.
func (b *Bundle) CheckRevoked(id ID, chain []*x509.Certificate) error {
	if b.revoked == nil {
		return nil
	}
	return b.revoked().Check(id, chain)
}

// TrustDomain is the trust domain whose identities the bundle certifies.
func (b *Bundle) TrustDomain() string { return b.trustDomain }

// Roots returns the bundle's root certificates.
func (b *Bundle) Roots() []*x509.Certificate { return b.roots }

// Pool returns the roots as a pool.
func (b *Bundle) Pool() *x509.CertPool { return b.pool }

// Verify checks a peer's certificate chain (leaf first, as it came off the
// wire) against the bundle at time now and returns the peer's SPIFFE ID and
// the parsed chain. The leaf must be an identity of this trust domain, not a
// CA, within its validity, and chain to one of the roots.
func (b *Bundle) Verify(rawCerts [][]byte, now time.Time) (ID, []*x509.Certificate, error) {
	if len(rawCerts) == 0 {
		return ID{}, nil, fmt.Errorf("%w: present a certificate issued by the mesh CA of %s", ErrNoCertificate, b.trustDomain)
	}
	certs := make([]*x509.Certificate, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return ID{}, nil, fmt.Errorf("%w: certificate %d does not parse: %v", ErrUntrusted, i, err)
		}
		certs[i] = c
	}
	return b.VerifyCertificates(certs, now)
}

// VerifyCertificates is Verify for parsed certificates.
func (b *Bundle) VerifyCertificates(certs []*x509.Certificate, now time.Time) (ID, []*x509.Certificate, error) {
	if len(certs) == 0 {
		return ID{}, nil, fmt.Errorf("%w: present a certificate issued by the mesh CA of %s", ErrNoCertificate, b.trustDomain)
	}
	leaf := certs[0]
	id, err := IDFromCertificate(leaf)
	if err != nil {
		return ID{}, nil, fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
	if id.TrustDomain != b.trustDomain {
		return ID{}, nil, fmt.Errorf("%w: %s belongs to trust domain %q; this mesh trusts only %q", ErrForeignTrustDomain, id, id.TrustDomain, b.trustDomain)
	}
	if leaf.IsCA {
		return ID{}, nil, fmt.Errorf("%w: %s is a CA certificate, not a workload certificate", ErrUntrusted, id)
	}
	if now.After(leaf.NotAfter) {
		return ID{}, nil, fmt.Errorf("%w: the certificate of %s expired at %s; get a new one with a join token (meshctl cert issue)", ErrCertExpired, id, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(leaf.NotBefore) {
		return ID{}, nil, fmt.Errorf("%w: the certificate of %s is not valid before %s (is a clock wrong?)", ErrUntrusted, id, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	intermediates := x509.NewCertPool()
	for _, c := range certs[1:] {
		intermediates.AddCert(c)
	}
	_, err = leaf.Verify(x509.VerifyOptions{
		Roots:         b.pool,
		Intermediates: intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return ID{}, nil, fmt.Errorf("%w: the certificate of %s does not chain to the trust bundle of %s: %v", ErrUntrusted, id, b.trustDomain, err)
	}
	if err := b.CheckRevoked(id, certs); err != nil {
		return ID{}, nil, err
	}
	return id, certs, nil
}

// VerifyState verifies the peer of a TLS connection.
func (b *Bundle) VerifyState(cs tls.ConnectionState, now time.Time) (ID, error) {
	id, _, err := b.VerifyCertificates(cs.PeerCertificates, now)
	return id, err
}

// IDFromCertificate returns the SPIFFE ID in a certificate, which must carry
// exactly one URI SAN.
func IDFromCertificate(c *x509.Certificate) (ID, error) {
	if len(c.URIs) != 1 {
		return ID{}, fmt.Errorf("%w: a mesh certificate carries exactly one URI SAN, this one has %d", ErrInvalidID, len(c.URIs))
	}
	return idFromURL(c.URIs[0])
}
