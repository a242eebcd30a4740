package identity

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"

	"github.com/micromesh/micromesh/internal/atomicfile"
)

// Files of a workload's credentials directory (`meshctl cert issue --out`).
const (
	CertFile   = "cert.pem"   // leaf, then intermediate
	KeyFile    = "key.pem"    // 0600
	BundleFile = "bundle.pem" // trust bundle (roots)
)

// Credentials are a workload's identity: its certificate chain, the private
// key, and the trust bundle it verifies peers with. A value never changes; a
// renewal makes a new one.
type Credentials struct {
	ID     ID
	Chain  []*x509.Certificate // leaf first, then intermediates
	Key    crypto.Signer
	Bundle *Bundle
}

// Leaf returns the workload certificate.
func (c *Credentials) Leaf() *x509.Certificate { return c.Chain[0] }

// TLSCertificate returns the chain and key in crypto/tls form.
func (c *Credentials) TLSCertificate() *tls.Certificate {
	raw := make([][]byte, len(c.Chain))
	for i, cert := range c.Chain {
		raw[i] = cert.Raw
	}
	return &tls.Certificate{Certificate: raw, PrivateKey: c.Key, Leaf: c.Chain[0]}
}

// WriteDir writes cert.pem, key.pem (0600) and bundle.pem into dir, creating
// it (0700) if needed. Each file is replaced atomically; the key is written
// last so a reader that sees a new key also sees the certificate that goes with it.
func (c *Credentials) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := atomicfile.Write(filepath.Join(dir, BundleFile), EncodeCertificates(c.Bundle.Roots()), 0o644); err != nil {
		return err
	}
	if err := WriteCertFile(filepath.Join(dir, CertFile), c.Chain...); err != nil {
		return err
	}
	return WriteKeyFile(filepath.Join(dir, KeyFile), c.Key)
}

// LoadCredentials reads credentials written by WriteDir and checks that the
// key matches the certificate and that the chain verifies against the bundle.
func LoadCredentials(dir string) (*Credentials, error) {
	chain, err := ReadCertificates(filepath.Join(dir, CertFile))
	if err != nil {
		return nil, err
	}
	roots, err := ReadCertificates(filepath.Join(dir, BundleFile))
	if err != nil {
		return nil, err
	}
	key, err := ReadKey(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, err
	}
	id, err := IDFromCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, CertFile), err)
	}
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(chain[0].PublicKey) {
		return nil, fmt.Errorf("%s: the key does not match the certificate", dir)
	}
	return &Credentials{ID: id, Chain: chain, Key: key, Bundle: NewBundle(id.TrustDomain, roots)}, nil
}
