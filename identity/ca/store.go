package ca

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/x509util"

	"github.com/micromesh/micromesh/internal/atomicfile"
	"github.com/micromesh/micromesh/internal/keyfile"

	"github.com/micromesh/micromesh/identity"
)

// Lifetimes of the CA's own certificates.
const (
	RootLifetime         = 10 * 365 * 24 * time.Hour
	IntermediateLifetime = 365 * 24 * time.Hour
	// The intermediate is replaced at start when less than this fraction of
	// its life is left, so leaves signed by it never outlive it.
	intermediateRenewFraction = 3
)

// Files under the CA directory. Keys are 0600, certificates 0644.
const (
	caConfigFile         = "ca.json"
	rootCertFile         = "root.crt"
	rootKeyFile          = "root.key"
	intermediateCertFile = "intermediate.crt"
	intermediateKeyFile  = "intermediate.key"
	provisionerKeyFile   = "provisioner.jwk"
	ledgerFile           = "ledger.db"
)

// caConfig is what the CA directory remembers about itself.
type caConfig struct {
	TrustDomain string    `json:"trust_domain"`
	Created     time.Time `json:"created"`
}

// readCAConfig reads dir/ca.json; ok is false when the file does not exist.
func readCAConfig(dir string) (cfg caConfig, ok bool, err error) {
	data, err := os.ReadFile(filepath.Join(dir, caConfigFile))
	if errors.Is(err, os.ErrNotExist) {
		return caConfig{}, false, nil
	}
	if err != nil {
		return caConfig{}, false, err
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return caConfig{}, false, fmt.Errorf("%s: %w", filepath.Join(dir, caConfigFile), err)
	}
	return cfg, true, nil
}

func writeCAConfig(dir string, cfg caConfig) error {
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, caConfigFile), append(data, '\n'), 0o644)
}

// keyPair is a CA certificate with its signing key.
type keyPair struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// loadOrCreateRoot returns the root in dir, creating it on first start.
func loadOrCreateRoot(dir, td string, now time.Time) (keyPair, error) {
	certPath, keyPath := filepath.Join(dir, rootCertFile), filepath.Join(dir, rootKeyFile)
	exists, err := fileExists(certPath)
	if err != nil {
		return keyPair{}, err
	}
	if exists {
		return loadKeyPair(certPath, keyPath)
	}
	key, err := keyutil.GenerateDefaultSigner() // ECDSA P-256
	if err != nil {
		return keyPair{}, fmt.Errorf("generate root key: %w", err)
	}
	subject := x509util.Subject{CommonName: "Micromesh Root CA", Organization: []string{td}}
	tmpl, err := caTemplate(x509util.DefaultRootTemplate, subject, key)
	if err != nil {
		return keyPair{}, err
	}
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Minute), now.Add(RootLifetime)
	cert, err := x509util.CreateCertificate(tmpl, tmpl, key.Public(), key)
	if err != nil {
		return keyPair{}, fmt.Errorf("create root certificate: %w", err)
	}
	// Key first: a certificate without its key is useless, a key without a
	// certificate is simply regenerated.
	if err := identity.WriteKeyFile(keyPath, key); err != nil {
		return keyPair{}, err
	}
	if err := identity.WriteCertFile(certPath, cert); err != nil {
		return keyPair{}, err
	}
	return keyPair{cert: cert, key: key}, nil
}

// loadOrCreateIntermediate returns the intermediate in dir, creating it on
// first start and replacing it when it nears expiry or no longer chains to root.
func loadOrCreateIntermediate(dir, td string, root keyPair, now time.Time) (kp keyPair, replaced bool, err error) {
	certPath, keyPath := filepath.Join(dir, intermediateCertFile), filepath.Join(dir, intermediateKeyFile)
	exists, err := fileExists(certPath)
	if err != nil {
		return keyPair{}, false, err
	}
	if exists {
		kp, err := loadKeyPair(certPath, keyPath)
		if err != nil {
			return keyPair{}, false, err
		}
		life := kp.cert.NotAfter.Sub(kp.cert.NotBefore)
		fresh := kp.cert.NotAfter.Sub(now) > life/intermediateRenewFraction
		if fresh && kp.cert.CheckSignatureFrom(root.cert) == nil {
			return kp, false, nil
		}
	}
	key, err := keyutil.GenerateDefaultSigner()
	if err != nil {
		return keyPair{}, false, fmt.Errorf("generate intermediate key: %w", err)
	}
	subject := x509util.Subject{CommonName: "Micromesh Intermediate CA", Organization: []string{td}}
	tmpl, err := caTemplate(x509util.DefaultIntermediateTemplate, subject, key)
	if err != nil {
		return keyPair{}, false, err
	}
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Minute), now.Add(IntermediateLifetime)
	if tmpl.NotAfter.After(root.cert.NotAfter) {
		tmpl.NotAfter = root.cert.NotAfter
	}
	// The intermediate may only sign identities of its own trust domain.
	tmpl.PermittedURIDomains = []string{td}
	tmpl.PermittedDNSDomainsCritical = true
	cert, err := x509util.CreateCertificate(tmpl, root.cert, key.Public(), root.key)
	if err != nil {
		return keyPair{}, false, fmt.Errorf("create intermediate certificate: %w", err)
	}
	if err := identity.WriteKeyFile(keyPath, key); err != nil {
		return keyPair{}, false, err
	}
	if err := identity.WriteCertFile(certPath, cert); err != nil {
		return keyPair{}, false, err
	}
	return keyPair{cert: cert, key: key}, exists, nil
}

// caTemplate renders one of x509util's CA templates for subject and key.
func caTemplate(template string, subject x509util.Subject, key crypto.Signer) (*x509.Certificate, error) {
	cr, err := x509util.CreateCertificateRequest(subject.CommonName, nil, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate request: %w", err)
	}
	data := x509util.NewTemplateData()
	data.SetSubject(subject)
	c, err := x509util.NewCertificate(cr, x509util.WithTemplate(template, data))
	if err != nil {
		return nil, fmt.Errorf("render CA template: %w", err)
	}
	return c.GetCertificate(), nil
}

func loadKeyPair(certPath, keyPath string) (keyPair, error) {
	certs, err := identity.ReadCertificates(certPath)
	if err != nil {
		return keyPair{}, err
	}
	if err := keyfile.CheckPrivate(keyPath, "a CA key"); err != nil {
		return keyPair{}, err
	}
	key, err := identity.ReadKey(keyPath)
	if err != nil {
		return keyPair{}, err
	}
	return keyPair{cert: certs[0], key: key}, nil
}

// fileExists reports whether path exists; other errors are returned.
func fileExists(path string) (bool, error) {
	_, err := os.Stat(path)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return false, err
}
