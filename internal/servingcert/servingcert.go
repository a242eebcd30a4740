// Package servingcert serves the TLS certificate an operator keeps in two
// PEM files — a certificate chain and its private key, as certbot,
// cert-manager or mkcert write them — to clients from outside the mesh
// (the API gateway's HTTPS and HTTP/3; inside the mesh every workload has
// its SPIFFE certificate instead). Load refuses a key others can read, a
// pair that does not match and a certificate outside its validity, each
// with what to do about it. Renewed files are picked up on the first
// handshake after they change, with no restart: a pair that does not load
// then is logged and the last good one kept, so a half-written renewal
// never takes the listener down.
package servingcert

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/micromesh/micromesh/internal/keyfile"
)

// Files name a certificate chain (leaf first) and its private key, both
// PEM.
type Files struct {
	Cert string
	Key  string
}

// IsZero reports whether no files are named.
func (f Files) IsZero() bool { return f.Cert == "" && f.Key == "" }

// Check reports what is missing from f: both files or neither; flags
// name the options that set them, for the message.
func (f Files) Check(certFlag, keyFlag string) error {
	switch {
	case f.Cert != "" && f.Key == "":
		return fmt.Errorf("%s needs %s: the private key of the certificate", certFlag, keyFlag)
	case f.Cert == "" && f.Key != "":
		return fmt.Errorf("%s needs %s: the certificate chain of the key", keyFlag, certFlag)
	}
	return nil
}

// ExpiryWarning is how long before its expiry a certificate is logged as
// due for renewal, at load and at each reload.
const ExpiryWarning = 7 * 24 * time.Hour

// checkEvery bounds how often handshakes look at the files.
var checkEvery = time.Second

// Source serves the current certificate of its files.
type Source struct {
	files Files
	log   *slog.Logger
	now   func() time.Time

	cur atomic.Pointer[tls.Certificate]

	mu      sync.Mutex
	checked time.Time // when the files were last looked at
	seen    stamp     // the files as they were when last loaded, or last refused
	expired bool      // the expiry of cur was logged
}

// stamp is what tells a changed file: its size and modification time
// (a symlink followed, as Kubernetes swaps a secret's files).
type stamp struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

func stampOf(f Files) (stamp, error) {
	c, err := os.Stat(f.Cert)
	if err != nil {
		return stamp{}, err
	}
	k, err := os.Stat(f.Key)
	if err != nil {
		return stamp{}, err
	}
	return stamp{certMod: c.ModTime(), keyMod: k.ModTime(), certSize: c.Size(), keySize: k.Size()}, nil
}

// Load reads the pair and checks it (see the package comment); log gets
// the reloads and refusals after that.
func Load(f Files, log *slog.Logger) (*Source, error) {
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("a TLS certificate needs both files: the certificate chain and its private key")
	}
	s := &Source{files: f, log: log, now: time.Now}
	st, err := stampOf(f)
	if err != nil {
		return nil, err
	}
	pair, err := s.read()
	if err != nil {
		return nil, err
	}
	s.cur.Store(pair)
	s.seen, s.checked = st, s.now()
	s.logLoaded("serving TLS certificate", pair.Leaf)
	return s, nil
}

// read loads and checks the pair as the files hold it now.
func (s *Source) read() (*tls.Certificate, error) {
	if err := keyfile.CheckPrivate(s.files.Key, "a TLS private key"); err != nil {
		return nil, err
	}
	pair, err := tls.LoadX509KeyPair(s.files.Cert, s.files.Key)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s with key %s: %w", s.files.Cert, s.files.Key, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("TLS certificate %s: %w", s.files.Cert, err)
		}
		pair.Leaf = leaf
	}
	now := s.now()
	switch {
	case now.After(leaf.NotAfter):
		return nil, fmt.Errorf("TLS certificate %s expired at %s: renew it", s.files.Cert, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return nil, fmt.Errorf("TLS certificate %s is not valid before %s (is this host's clock right?)", s.files.Cert, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return &pair, nil
}

func (s *Source) logLoaded(msg string, leaf *x509.Certificate) {
	attrs := []any{"cert", s.files.Cert, "names", names(leaf), "serial", leaf.SerialNumber.Text(16),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339)}
	s.log.Info(msg, attrs...)
	if left := leaf.NotAfter.Sub(s.now()); left < ExpiryWarning {
		s.log.Warn("the TLS certificate expires soon: renew it (the new files are picked up with no restart)", append(attrs, "left", left.Round(time.Minute).String())...)
	}
}

// names are the DNS names and IP addresses a certificate is for.
func names(c *x509.Certificate) []string {
	n := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		n = append(n, ip.String())
	}
	return n
}

// Leaf is the certificate served now.
func (s *Source) Leaf() *x509.Certificate { return s.cur.Load().Leaf }

// GetCertificate is a tls.Config's GetCertificate: the current pair,
// after looking at the files if a second has passed.
func (s *Source) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.refresh()
	return s.cur.Load(), nil
}

// refresh reloads the pair if its files changed since they were last
// looked at; a pair that does not load is logged, once per change, and
// the current one kept.
func (s *Source) refresh() {
	if !s.mu.TryLock() {
		return // another handshake is looking
	}
	defer s.mu.Unlock()
	now := s.now()
	if now.Sub(s.checked) < checkEvery {
		return
	}
	s.checked = now
	st, err := stampOf(s.files)
	if err != nil {
		if s.seen != (stamp{}) {
			s.log.Warn("cannot read the TLS certificate's files; serving the last good one", "err", err)
			s.seen = stamp{}
		}
		return
	}
	if st == s.seen {
		if leaf := s.cur.Load().Leaf; !s.expired && now.After(leaf.NotAfter) {
			s.expired = true
			s.log.Error("the TLS certificate served has expired: clients refuse it until its files are renewed", "cert", s.files.Cert, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		return
	}
	s.seen = st
	pair, err := s.read()
	if err != nil {
		s.log.Warn("the TLS certificate's files changed but do not load; serving the last good one until they do", "err", err)
		return
	}
	s.cur.Store(pair)
	s.expired = false
	s.logLoaded("reloaded the TLS certificate", pair.Leaf)
}
