// Package clienv keeps meshctl's environments — the local server, and
// remote ones reached through their remote proxy (staging, prod) — and the
// access tokens it logged in to them with, under $MESH_HOME/cli (files
// 0600: a token is a credential).
package clienv

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/atomicfile"
	"github.com/micromesh/micromesh/internal/home"
)

// Local is the environment of the server whose state is $MESH_HOME: the
// CLI acts there as the server's admin, with a certificate from its CA.
const Local = "local"

// Env is a remote environment.
type Env struct {
	Name string `json:"-"`
	// Proxy is its remote proxy's address (host:port).
	Proxy string `json:"proxy"`
	// TrustDomain and Roots (PEM) check the proxy's certificate.
	TrustDomain string `json:"trust_domain"`
	Roots       string `json:"roots"`
}

// Bundle is the trust bundle the proxy's certificate is checked against.
func (e *Env) Bundle() (*identity.Bundle, error) {
	roots, err := identity.ParseCertificates([]byte(e.Roots))
	if err != nil {
		return nil, fmt.Errorf("environment %s's roots: %w", e.Name, err)
	}
	return identity.NewBundle(e.TrustDomain, roots), nil
}

// Config is the CLI's environments.
type Config struct {
	// Current is the environment commands talk to ("" is Local).
	Current string         `json:"current,omitempty"`
	Envs    map[string]Env `json:"envs"`
}

func path(h home.Dir) string { return filepath.Join(string(h), "cli", "envs.json") }

// Load reads the environments (none yet is not an error).
func Load(h home.Dir) (*Config, error) {
	c := &Config{Envs: map[string]Env{}}
	data, err := os.ReadFile(path(h))
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, fmt.Errorf("%s: %w", path(h), err)
	}
	if c.Envs == nil {
		c.Envs = map[string]Env{}
	}
	return c, nil
}

// Save writes the environments (0600).
func (c *Config) Save(h home.Dir) error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path(h)), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path(h), append(data, '\n'), 0o600)
}

// Names lists the environments, Local first, the rest sorted.
func (c *Config) Names() []string {
	names := []string{Local}
	for n := range c.Envs {
		names = append(names, n)
	}
	sort.Strings(names[1:])
	return names
}

// Resolve returns the environment named (the current one for ""): nil
// for Local.
func (c *Config) Resolve(name string) (*Env, error) {
	if name == "" {
		name = c.Current
	}
	if name == "" || name == Local {
		return nil, nil
	}
	e, ok := c.Envs[name]
	if !ok {
		return nil, fmt.Errorf("no environment %q (meshctl env lists them; meshctl env add %s --proxy HOST:PORT --bundle ROOT.pem adds it)", name, name)
	}
	e.Name = name
	return &e, nil
}

// Validate checks a remote environment before it is added.
func (e *Env) Validate() error {
	if err := identity.ValidateName("environment", e.Name); err != nil {
		return err
	}
	if e.Name == Local {
		return fmt.Errorf("environment %q is the local server's: it is always there", Local)
	}
	host, port, err := net.SplitHostPort(e.Proxy)
	if err != nil || host == "" {
		return fmt.Errorf("--proxy %q: want HOST:PORT of the remote proxy (meshctl server --proxy-addr)", e.Proxy)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("--proxy %q: the port must be 1–65535", e.Proxy)
	}
	if err := identity.ValidateTrustDomain(e.TrustDomain); err != nil {
		return fmt.Errorf("--trust-domain: %w", err)
	}
	roots, err := identity.ParseCertificates([]byte(e.Roots))
	if err != nil {
		return fmt.Errorf("--bundle: %w", err)
	}
	for _, r := range roots {
		if !r.IsCA || r.KeyUsage&x509.KeyUsageCertSign == 0 {
			return fmt.Errorf("--bundle: %s is not a CA certificate (meshctl cert bundle on the server prints the mesh's root)", r.Subject)
		}
	}
	return nil
}

// Token is an access token the CLI logged in with, and the refresh
// token of its session.
type Token struct {
	AccessToken string    `json:"access_token"`
	Subject     string    `json:"subject"`
	Expires     time.Time `json:"expires"`
	// TTL is the access tokens' lifetime asked for at login (refreshes ask
	// for the same).
	TTL            time.Duration `json:"ttl,omitempty"`
	RefreshToken   string        `json:"refresh_token,omitempty"`
	RefreshExpires time.Time     `json:"refresh_expires,omitzero"`
}

// Usable reports whether the access token has more than a minute left.
func (t *Token) Usable(now time.Time) bool { return t.Expires.Sub(now) > time.Minute }

// Refreshable reports whether the session can give a new access token.
func (t *Token) Refreshable(now time.Time) bool {
	return t.RefreshToken != "" && now.Before(t.RefreshExpires)
}

// Until is when the login ends: the session's end, or the access token's
// without one.
func (t *Token) Until() time.Time {
	if t.RefreshToken != "" {
		return t.RefreshExpires
	}
	return t.Expires
}

// Locked runs fn holding env's token lock (flock on a file beside the
// token): two meshctl processes refreshing one session at once would
// trade its refresh token twice, and the second trade ends the session.
func Locked(h home.Dir, env string, fn func() error) error {
	p := tokenPath(h, env) + ".lock"
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("locking %s: %w", p, err)
	}
	defer func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }()
	return fn()
}

func tokenPath(h home.Dir, env string) string {
	return filepath.Join(string(h), "cli", "tokens", env+".json")
}

// SaveToken keeps env's token (0600).
func SaveToken(h home.Dir, env string, t Token) error {
	data, err := json.Marshal(t)
	if err != nil {
		return err
	}
	p := tokenPath(h, env)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(p, append(data, '\n'), 0o600)
}

// LoadToken reads env's token; nil when the CLI has not logged in there.
func LoadToken(h home.Dir, env string) (*Token, error) {
	data, err := os.ReadFile(tokenPath(h, env))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	t := &Token{}
	if err := json.Unmarshal(data, t); err != nil {
		return nil, fmt.Errorf("%s: %w", tokenPath(h, env), err)
	}
	return t, nil
}

// RemoveToken forgets env's token; it reports whether there was one.
func RemoveToken(h home.Dir, env string) (bool, error) {
	_ = os.Remove(tokenPath(h, env) + ".lock")
	err := os.Remove(tokenPath(h, env))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
