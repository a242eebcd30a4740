package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
)

// NewKey generates a workload key: ECDSA P-256.
func NewKey() (crypto.Signer, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return k, nil
}

// NewCSR returns a DER certificate request for id, signed by key.
func NewCSR(key crypto.Signer, id ID) ([]byte, error) {
	u, err := url.Parse(id.String())
	if err != nil {
		return nil, fmt.Errorf("create certificate request: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate request: %w", err)
	}
	return der, nil
}

// ParseCSR reads a certificate request in DER or PEM, checks its
// signature and key type, and returns it with the ID it asks for.
// A workload CSR names exactly one SPIFFE ID and nothing else.
func ParseCSR(data []byte) (*x509.CertificateRequest, ID, error) {
	if len(data) == 0 {
		return nil, ID{}, fmt.Errorf("%w: it is empty", ErrInvalidCSR)
	}
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
			return nil, ID{}, fmt.Errorf("%w: PEM block is %q, want CERTIFICATE REQUEST", ErrInvalidCSR, block.Type)
		}
		data = block.Bytes
	}
	csr, err := x509.ParseCertificateRequest(data)
	if err != nil {
		return nil, ID{}, fmt.Errorf("%w: it does not parse as PKCS#10 (DER or PEM): %v", ErrInvalidCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, ID{}, fmt.Errorf("%w: its signature does not verify: %v", ErrInvalidCSR, err)
	}
	if k, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		return nil, ID{}, fmt.Errorf("%w: the key is %s; workload keys are ECDSA P-256", ErrInvalidCSR, keyName(csr.PublicKey))
	}
	if len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) > 0 {
		return nil, ID{}, fmt.Errorf("%w: it asks for DNS, IP or e-mail names; a workload certificate carries only its SPIFFE ID", ErrInvalidCSR)
	}
	if len(csr.URIs) != 1 {
		return nil, ID{}, fmt.Errorf("%w: it has %d URI SANs; it must have exactly one, the SPIFFE ID", ErrInvalidCSR, len(csr.URIs))
	}
	id, err := idFromURL(csr.URIs[0])
	if err != nil {
		return nil, ID{}, fmt.Errorf("%w: %w", ErrInvalidCSR, err)
	}
	if id.Kind != KindService {
		return nil, ID{}, fmt.Errorf("%w: %s is not a service identity", ErrInvalidCSR, id)
	}
	return csr, id, nil
}

func keyName(k crypto.PublicKey) string {
	switch k := k.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	default:
		return fmt.Sprintf("%T", k)
	}
}
