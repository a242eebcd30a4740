package identity

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"

	"go.step.sm/crypto/pemutil"

	"github.com/micromesh/micromesh/internal/atomicfile"
)

// EncodeCertificates returns the PEM encoding of certs, in order.
func EncodeCertificates(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// EncodeKey returns the PEM encoding (PKCS#8) of a private key.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	block, err := pemutil.Serialize(key, pemutil.WithPKCS8(true))
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(block), nil
}

// ParseCertificates parses one or more PEM certificates.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	certs, err := pemutil.ParseCertificateBundle(data)
	if err != nil {
		return nil, fmt.Errorf("parse certificates: %w", err)
	}
	return certs, nil
}

// ReadCertificates reads a PEM file of one or more certificates.
func ReadCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

// ReadKey reads a PEM private key.
func ReadKey(path string) (crypto.Signer, error) {
	k, err := pemutil.Read(path)
	if err != nil {
		return nil, fmt.Errorf("read key %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("read key %s: %T is not a signing key", path, k)
	}
	return s, nil
}

// WriteKeyFile writes key to path with mode 0600.
func WriteKeyFile(path string, key crypto.Signer) error {
	data, err := EncodeKey(key)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}

// WriteCertFile writes certificates to path with mode 0644.
func WriteCertFile(path string, certs ...*x509.Certificate) error {
	return atomicfile.Write(path, EncodeCertificates(certs), 0o644)
}
