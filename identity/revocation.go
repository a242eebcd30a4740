package identity

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"time"
)

// Revocations is a certificate revocation list (X.509 CRL) as peers are
// checked against it: the serial numbers its issuer revoked before their
// certificates expired. The mesh's CA signs one with its intermediate
// whenever a certificate is revoked; the control plane checks callers
// against it and hands it to proxies in the trust bundle's SDS secret
// (Envoy's CertificateValidationContext.crl), so the built-in sidecar and
// Envoy refuse the same peers. Immutable: a new list is a new value. A nil
// *Revocations revokes nothing.
type Revocations struct {
	list    *x509.RevocationList
	pem     []byte
	serials map[string]time.Time // serial's bytes → revoked at
}

// NewRevocations parses a CRL, PEM ("X509 CRL" blocks; the first is used)
// or DER.
func NewRevocations(data []byte) (*Revocations, error) {
	der := data
	if bytes.Contains(data, []byte("-----BEGIN")) {
		block, _ := pem.Decode(data)
		if block == nil || block.Type != "X509 CRL" {
			return nil, fmt.Errorf("%w: the revocation list is not a PEM \"X509 CRL\" block", ErrInvalid)
		}
		der = block.Bytes
	}
	list, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("%w: the revocation list does not parse: %v", ErrInvalid, err)
	}
	r := &Revocations{
		list:    list,
		pem:     pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: list.Raw}),
		serials: make(map[string]time.Time, len(list.RevokedCertificateEntries)),
	}
	for _, e := range list.RevokedCertificateEntries {
		r.serials[string(e.SerialNumber.Bytes())] = e.RevocationTime
	}
	return r, nil
}

// PEM returns the list, PEM-encoded (nil for a nil list).
func (r *Revocations) PEM() []byte {
	if r == nil {
		return nil
	}
	return r.pem
}

// Len is how many certificates the list revokes.
func (r *Revocations) Len() int {
	if r == nil {
		return 0
	}
	return len(r.serials)
}

// ThisUpdate and NextUpdate bound the list's validity: a new one is issued
// before NextUpdate.
func (r *Revocations) ThisUpdate() time.Time { return r.list.ThisUpdate }

// NextUpdate is when the list goes stale.
func (r *Revocations) NextUpdate() time.Time { return r.list.NextUpdate }

// Check refuses a verified chain (leaf first) whose leaf the list revokes:
// same issuer, same serial.
func (r *Revocations) Check(id ID, chain []*x509.Certificate) error {
	if r == nil || len(r.serials) == 0 || len(chain) == 0 {
		return nil
	}
	leaf := chain[0]
	at, ok := r.serials[string(leaf.SerialNumber.Bytes())]
	if !ok || !bytes.Equal(leaf.RawIssuer, r.list.RawIssuer) {
		return nil
	}
	return fmt.Errorf("%w: the certificate of %s (serial %s) was revoked at %s; the workload needs a new join token (meshctl cert token)",
		ErrRevoked, id, leaf.SerialNumber, at.UTC().Format(time.RFC3339))
}
