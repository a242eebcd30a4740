package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/mail"
	"net/url"
	"os"
	"slices"
	"strings"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
	"golang.org/x/net/idna"
)

// LetsEncrypt is the ACME directory the gateway asks by default.
const LetsEncrypt = acme.LetsEncryptURL

// ACME has the gateway get and renew its certificate itself from an ACME
// CA (Let's Encrypt, or the operator's own — smallstep's step-ca, say):
// tls-alpn-01 challenges answered on the HTTPS port, http-01 ones on the
// redirect address when there is one; certificates and the account key
// kept under the server's home (0700, files 0600) and renewed 30 days
// before they expire. Giving domains accepts the CA's terms of service.
type ACME struct {
	// Domains are the names the gateway is reached by; it asks for a
	// certificate for each (at start, and when a client first names one)
	// and refuses handshakes for any other.
	Domains []string
	// Email, if set, is the contact the CA may write to about the
	// certificates (expiry, revocation).
	Email string
	// Directory is the CA's ACME directory URL (default LetsEncrypt).
	Directory string
	// Bundle, if set, is a PEM file of the roots the directory's own
	// HTTPS certificate chains to (a private CA's), instead of the
	// system's.
	Bundle string
	// Cache is where certificates and the account key are kept.
	Cache string
}

// IsZero reports whether ACME is off.
func (a ACME) IsZero() bool { return len(a.Domains) == 0 }

// Validate checks the settings, so that a mistake is reported at start
// rather than at a client's first handshake.
func (a ACME) Validate() error {
	_, err := a.validate()
	return err
}

// validate is Validate, returning the roots Bundle holds (nil: the
// system's).
func (a ACME) validate() (*x509.CertPool, error) {
	if len(a.Domains) == 0 {
		return nil, errors.New("ACME needs the domain names the gateway is reached by")
	}
	seen := map[string]bool{}
	for _, d := range a.Domains {
		if err := validateDomain(d); err != nil {
			return nil, err
		}
		if seen[d] {
			return nil, fmt.Errorf("domain %q is given twice", d)
		}
		seen[d] = true
	}
	if a.Email != "" {
		if addr, err := mail.ParseAddress(a.Email); err != nil || addr.Address != a.Email {
			return nil, fmt.Errorf("contact %q is not an email address (name@example.com)", a.Email)
		}
	}
	if a.Directory != "" {
		u, err := url.Parse(a.Directory)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("ACME directory %q is not an https:// URL", a.Directory)
		}
	}
	if a.Bundle == "" {
		return nil, nil
	}
	return loadRoots(a.Bundle)
}

// validateDomain accepts a DNS name of two labels or more, as ACME CAs
// issue for: no IP address, no wildcard (it needs a DNS challenge), no
// port.
func validateDomain(d string) error {
	switch {
	case d == "":
		return errors.New("an empty domain name")
	case net.ParseIP(d) != nil:
		return fmt.Errorf("%q is an IP address: ACME certificates here are for DNS names", d)
	case strings.Contains(d, "*"):
		return fmt.Errorf("%q is a wildcard: it needs a DNS challenge, which the gateway cannot answer; name each host", d)
	case strings.Contains(d, ":") || strings.Contains(d, "/"):
		return fmt.Errorf("%q is not a bare domain name (no scheme, port or path)", d)
	case !strings.Contains(strings.Trim(d, "."), "."):
		return fmt.Errorf("%q has one label: a public name has two or more (api.example.com)", d)
	}
	ascii, err := idna.Lookup.ToASCII(d)
	if err != nil || ascii != d {
		return fmt.Errorf("%q is not a lower-case DNS name (in ASCII form)", d)
	}
	return nil
}

func loadRoots(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("the ACME directory's roots: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("the ACME directory's roots: %s holds no PEM certificate", file)
	}
	return pool, nil
}

// acmeCerts gets and renews the gateway's certificates from a's CA.
type acmeCerts struct {
	m       *autocert.Manager
	domains []string
	log     *slog.Logger
}

func newACME(a ACME, log *slog.Logger) (*acmeCerts, error) {
	roots, err := a.validate()
	if err != nil {
		return nil, err
	}
	if a.Cache == "" {
		return nil, errors.New("ACME needs a directory to keep certificates in")
	}
	client := &acme.Client{DirectoryURL: a.Directory, UserAgent: "micromesh-gateway"}
	if client.DirectoryURL == "" {
		client.DirectoryURL = LetsEncrypt
	}
	if roots != nil {
		client.HTTPClient = &http.Client{Transport: &http.Transport{
			Proxy:           http.ProxyFromEnvironment,
			TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		}}
	}
	m := &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      autocert.DirCache(a.Cache),
		HostPolicy: autocert.HostWhitelist(a.Domains...),
		Email:      a.Email,
		Client:     client,
	}
	return &acmeCerts{m: m, domains: a.Domains, log: log}, nil
}

// tlsConfig is the HTTPS listener's: the certificates, and the ALPN
// protocol of tls-alpn-01 challenges.
func (c *acmeCerts) tlsConfig() *tls.Config {
	cfg := c.m.TLSConfig()
	cfg.MinVersion = tls.VersionTLS12
	cfg.GetCertificate = c.getCertificate
	return cfg
}

// getCertificate is autocert's, told that a TLS 1.3 client offering ECDSA
// P-256 signatures takes an ECDSA certificate: autocert decides by the
// client's TLS 1.2 cipher suites, which a TLS 1.3-only client — every
// HTTP/3 client — does not list, and would otherwise have the CA issue an
// RSA certificate while that client's handshake waits.
func (c *acmeCerts) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if slices.Contains(hello.SupportedVersions, tls.VersionTLS13) && slices.Contains(hello.SignatureSchemes, tls.ECDSAWithP256AndSHA256) &&
		!slices.Contains(hello.CipherSuites, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256) {
		h := *hello
		h.CipherSuites = append(slices.Clone(hello.CipherSuites), tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
		hello = &h
	}
	return c.m.GetCertificate(hello)
}

// httpHandler answers http-01 challenges on the plain HTTP port, and
// hands every other request to next.
func (c *acmeCerts) httpHandler(next http.Handler) http.Handler { return c.m.HTTPHandler(next) }

// warm asks for each domain's certificate now, in the background, so the
// first client does not wait for the CA; it logs what it got. (autocert
// bounds each issuance by 5 minutes; renewals are its own.)
func (c *acmeCerts) warm() {
	go func() {
		for _, d := range c.domains {
			cert, err := c.getCertificate(&tls.ClientHelloInfo{
				ServerName:        d,
				SupportedCurves:   []tls.CurveID{tls.CurveP256},
				SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
				SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12},
				CipherSuites:      []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
			})
			if err != nil {
				c.log.Warn("no certificate from the ACME CA yet; a client naming this domain asks again", "domain", d, "err", err)
				continue
			}
			c.log.Info("certificate from the ACME CA", "domain", d, "not_after", cert.Leaf.NotAfter)
		}
	}()
}
