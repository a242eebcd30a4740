package gateway_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/micromesh/micromesh/internal/acmetest"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/servingcert/servingcerttest"
	"github.com/micromesh/micromesh/platform/gateway"
)

// With ACME domains the gateway gets its certificates itself: from an ACME
// CA (Let's Encrypt's test server, validating the challenge for real on
// the gateway's HTTPS port), at start, for each domain; serves HTTPS,
// HTTP/2 and HTTP/3 with them; refuses names it was not given; keeps them
// (keys 0600) so a restart serves them with no CA at all.
func TestGatewayGetsItsCertificateByACME(t *testing.T) {
	httpsPort, httpPort := meshtest.FreePort(t), meshtest.FreePort(t)
	ca := acmetest.Start(t, httpsPort, httpPort)
	const domain = "api.mesh.test"
	tlsFor := func(name string) *tls.Config { return &tls.Config{RootCAs: ca.Roots, ServerName: name} }
	h2 := &http.Client{Transport: protocol{next: &http.Transport{TLSClientConfig: tlsFor(domain), ForceAttemptHTTP2: true}, major: 2}}
	acme := gateway.ACME{Domains: []string{domain, "www.mesh.test"}, Email: "ops@mesh.test", Directory: ca.Directory, Bundle: ca.DirectoryBundle}
	m := startMeshFor(t, h2, func(o *gateway.Options) {
		o.Addr = fmt.Sprintf("127.0.0.1:%d", httpsPort)
		o.ACME, o.HTTP3, o.RedirectAddr = acme, true, fmt.Sprintf("127.0.0.1:%d", httpPort)
	})

	t.Run("HTTP/2", func(t *testing.T) { callServices(t, m) })
	t.Run("HTTP/3", func(t *testing.T) {
		h3 := &http3.Transport{TLSClientConfig: tlsFor(domain)}
		t.Cleanup(func() { _ = h3.Close() })
		m3 := *m
		m3.client = &http.Client{Transport: protocol{next: h3, major: 3}}
		if code, body := m3.do(t, "POST", "/helloworld/call", "application/json", `{"name":"Ada"}`); code != 200 || body != `{"msg":"Hello Ada"}` {
			t.Errorf("%d %s", code, body)
		}
		// The certificate got at start (ECDSA), not one more from the CA:
		// an HTTP/3 client is TLS 1.3 only, and lists no TLS 1.2 suite.
		resp, _ := m3.send(t, "GET", "/", "", nil)
		if leaf := resp.TLS.PeerCertificates[0]; leaf.PublicKeyAlgorithm != x509.ECDSA {
			t.Errorf("HTTP/3 got a %v certificate, want the ECDSA one", leaf.PublicKeyAlgorithm)
		}
	})
	t.Run("the certificate", func(t *testing.T) {
		for _, name := range []string{domain, "www.mesh.test"} {
			conn, err := tls.Dial("tcp", m.base[len("https://"):], tlsFor(name))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			leaf := conn.ConnectionState().PeerCertificates[0]
			conn.Close()
			if leaf.VerifyHostname(name) != nil || time.Until(leaf.NotAfter) < 24*time.Hour {
				t.Errorf("%s: served a certificate for %v until %v", name, leaf.DNSNames, leaf.NotAfter)
			}
		}
	})
	t.Run("a name it was not given", func(t *testing.T) {
		if conn, err := tls.Dial("tcp", m.base[len("https://"):], tlsFor("other.mesh.test")); err == nil {
			conn.Close()
			t.Error("a handshake for a name not given succeeded")
		}
	})
	t.Run("plain HTTP", func(t *testing.T) {
		noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := noFollow.Get("http://" + m.redirect + "/helloworld/call")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusPermanentRedirect {
			t.Errorf("plain HTTP: %d, want a redirect", resp.StatusCode)
		}
		// The CA's http-01 challenges are answered there (an unknown
		// token: 404, not a redirect).
		req, _ := http.NewRequest("GET", "http://"+m.redirect+"/.well-known/acme-challenge/nosuchtoken", nil)
		req.Host = domain
		resp, err = noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("an ACME challenge path: %d, want 404 from the challenge handler", resp.StatusCode)
		}
	})
	t.Run("kept on disk", func(t *testing.T) {
		dir := m.cp.Home().ACMECache()
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("%s has mode %04o, want 0700", dir, fi.Mode().Perm())
		}
		entries, _ := os.ReadDir(dir)
		var names []string
		for _, e := range entries {
			info, _ := e.Info()
			names = append(names, e.Name())
			if info.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %04o, want 0600", e.Name(), info.Mode().Perm())
			}
		}
		if !strings.Contains(strings.Join(names, " "), domain) {
			t.Errorf("the cache holds %v, no certificate for %s", names, domain)
		}
	})
	t.Run("a restart with the CA gone", func(t *testing.T) {
		// Another gateway of the same home, its CA unreachable: it serves
		// what the first one got.
		gone := acme
		gone.Directory, gone.Bundle = "https://127.0.0.1:1/dir", ""
		gw, err := gateway.Start(t.Context(), gateway.Options{Addr: "127.0.0.1:0", Home: m.cp.Home(), ControlPlane: m.cp.Info.Address, ACME: gone,
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(gw.Stop)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		conn, err := (&tls.Dialer{Config: tlsFor(domain)}).DialContext(ctx, "tcp", gw.Addr())
		if err != nil {
			t.Fatalf("the restarted gateway: %v", err)
		}
		conn.Close()
	})
}

// Bad ACME settings are refused at start, each saying what is wrong.
func TestGatewayACMERefusals(t *testing.T) {
	bundle := filepath.Join(t.TempDir(), "roots.pem")
	if err := os.WriteFile(bundle, []byte("not PEM"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := gateway.ACME{Domains: []string{"api.example.com"}}
	for _, tc := range []struct {
		name   string
		change func(*gateway.ACME)
		says   string
	}{
		{"no domain", func(a *gateway.ACME) { a.Domains = nil }, "needs the domain names"},
		{"an IP address", func(a *gateway.ACME) { a.Domains = []string{"192.0.2.1"} }, "is an IP address"},
		{"a wildcard", func(a *gateway.ACME) { a.Domains = []string{"*.example.com"} }, "DNS challenge"},
		{"one label", func(a *gateway.ACME) { a.Domains = []string{"localhost"} }, "one label"},
		{"a port", func(a *gateway.ACME) { a.Domains = []string{"api.example.com:443"} }, "no scheme, port or path"},
		{"upper case", func(a *gateway.ACME) { a.Domains = []string{"API.example.com"} }, "lower-case"},
		{"twice", func(a *gateway.ACME) { a.Domains = []string{"api.example.com", "api.example.com"} }, "given twice"},
		{"a bad email", func(a *gateway.ACME) { a.Email = "ops at example.com" }, "not an email address"},
		{"a plain HTTP directory", func(a *gateway.ACME) { a.Directory = "http://ca.example.com/dir" }, "not an https:// URL"},
		{"a missing bundle", func(a *gateway.ACME) { a.Bundle = "/nonexistent/roots.pem" }, "no such file"},
		{"a bundle with no certificate", func(a *gateway.ACME) { a.Bundle = bundle }, "holds no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := good
			tc.change(&a)
			if err := a.Validate(); err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("Validate = %v, want an error saying %q", err, tc.says)
			}
		})
	}
	if err := good.Validate(); err != nil {
		t.Errorf("good settings: %v", err)
	}
	// Both a certificate's files and ACME: refused before anything starts.
	files, _ := servingcerttest.NewCA(t).Write(t, t.TempDir(), "gateway", servingcerttest.Cert{})
	_, err := gateway.Start(t.Context(), gateway.Options{Addr: "127.0.0.1:0", ACME: good, TLS: files})
	if err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("files and ACME: %v", err)
	}
}
