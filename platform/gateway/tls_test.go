package gateway_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/quic-go/quic-go/http3"

	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/servingcert"
	"github.com/micromesh/micromesh/internal/servingcert/servingcerttest"
	"github.com/micromesh/micromesh/platform/gateway"
)

// protocol fails a round trip answered in another HTTP version than the
// client is there to test, or over TCP without announcing HTTP/3.
type protocol struct {
	next  http.RoundTripper
	major int
}

func (p protocol) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := p.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	altSvc := `h3=":` + r.URL.Port() + `"; ma=86400` // over TCP: the UDP port of the same number
	if p.major == 3 {
		altSvc = ""
	}
	if resp.ProtoMajor != p.major || resp.Header.Get("Alt-Svc") != altSvc {
		resp.Body.Close()
		return nil, fmt.Errorf("answered over %s with Alt-Svc %q; want HTTP/%d with %q", resp.Proto, resp.Header.Get("Alt-Svc"), p.major, altSvc)
	}
	return resp, nil
}

// TestGatewayOverHTTPSAndHTTP3: with a certificate, the gateway serves
// HTTPS — HTTP/2 to clients that offer it — and HTTP/3 on the UDP port of
// the same number, and every call behaves as over plain HTTP.
func TestGatewayOverHTTPSAndHTTP3(t *testing.T) {
	ca := servingcerttest.NewCA(t)
	files, _ := ca.Write(t, t.TempDir(), "gateway", servingcerttest.Cert{})
	h2 := &http.Client{Transport: protocol{next: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}, ForceAttemptHTTP2: true}, major: 2}}
	m := startMeshFor(t, h2, func(o *gateway.Options) { o.TLS, o.HTTP3 = files, true })
	if !strings.HasPrefix(m.base, "https://127.0.0.1:") {
		t.Fatalf("the gateway's URL %s", m.base)
	}

	t.Run("HTTP/2", func(t *testing.T) { callServices(t, m) })
	t.Run("HTTP/3", func(t *testing.T) {
		h3 := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}
		t.Cleanup(func() { _ = h3.Close() })
		m3 := *m
		m3.client = &http.Client{Transport: protocol{next: h3, major: 3}}
		callServices(t, &m3)
	})
	t.Run("HTTP/1.1", func(t *testing.T) {
		m1 := *m
		m1.client = &http.Client{Transport: protocol{next: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}, major: 1}}
		if code, body := m1.do(t, "POST", "/helloworld/call", "application/json", `{"name":"Ada"}`); code != 200 || body != `{"msg":"Hello Ada"}` {
			t.Errorf("%d %s", code, body)
		}
	})
	t.Run("plain HTTP is not served", func(t *testing.T) {
		resp, err := http.Post("http://"+strings.TrimPrefix(m.base, "https://")+"/helloworld/call", "application/json", strings.NewReader(`{"name":"Ada"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("plain HTTP to the HTTPS port: %d, want Go's 400 (client sent an HTTP request to an HTTPS server)", resp.StatusCode)
		}
	})
	t.Run("a client that does not trust the certificate", func(t *testing.T) {
		_, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: x509.NewCertPool()}}}).Get(m.base + "/")
		if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Errorf("got %v", err)
		}
	})
}

// With a redirect address, plain HTTP there is sent to the same URL over
// HTTPS — the host asked for, the gateway's HTTPS port, path and query —
// with 308, so a POST stays a POST; a client that follows it gets its
// answer.
func TestGatewayRedirectsToHTTPS(t *testing.T) {
	ca := servingcerttest.NewCA(t)
	files, _ := ca.Write(t, t.TempDir(), "gateway", servingcerttest.Cert{})
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}}
	m := startMeshFor(t, h2, func(o *gateway.Options) { o.TLS, o.RedirectAddr = files, "127.0.0.1:0" })
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(m.base, "https://"))
	redirect := m.redirect
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		host, want string
	}{
		{"", "https://127.0.0.1:" + port + "/helloworld/call?name=Ada"},
		{"api.example.com", "https://api.example.com:" + port + "/helloworld/call?name=Ada"},
		{"api.example.com:80", "https://api.example.com:" + port + "/helloworld/call?name=Ada"},
		{"[::1]:80", "https://[::1]:" + port + "/helloworld/call?name=Ada"},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", "http://"+redirect+"/helloworld/call?name=Ada", strings.NewReader(`{}`))
		if tc.host != "" {
			req.Host = tc.host
		}
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != tc.want {
			t.Errorf("Host %q: %d to %q, want 308 to %q", tc.host, resp.StatusCode, resp.Header.Get("Location"), tc.want)
		}
	}
	follow := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}}
	resp, err := follow.Post("http://"+redirect+"/helloworld/call", "application/json", strings.NewReader(`{"name":"Ada"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != `{"msg":"Hello Ada"}` || resp.Request.URL.Scheme != "https" {
		t.Errorf("a POST that follows the redirect: %d %s (ended at %v)", resp.StatusCode, body, resp.Request.URL)
	}
}

// TestGatewayTLSRefusals: what cannot be served is refused at start with
// what to do about it.
func TestGatewayTLSRefusals(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	ca := servingcerttest.NewCA(t)
	dir := t.TempDir()
	good, _ := ca.Write(t, dir, "good", servingcerttest.Cert{})
	open, _ := ca.Write(t, dir, "open", servingcerttest.Cert{})
	if err := os.Chmod(open.Key, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		o    func(*gateway.Options)
		want string
	}{
		{"HTTP/3 without TLS", func(o *gateway.Options) { o.HTTP3 = true }, "HTTP/3 needs TLS"},
		{"a key readable by others", func(o *gateway.Options) { o.TLS = open }, "the API gateway's TLS: " + open.Key + " has mode 0644"},
		{"only a certificate", func(o *gateway.Options) { o.TLS = servingcert.Files{Cert: good.Cert} }, "needs both files"},
		{"a redirect without TLS", func(o *gateway.Options) { o.RedirectAddr = "127.0.0.1:0" }, "a redirect to HTTPS needs TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := gateway.Options{Addr: "127.0.0.1:0", Home: cp.Home(), ControlPlane: cp.Info.Address}
			tc.o(&o)
			gw, err := gateway.Start(t.Context(), o)
			if err == nil {
				gw.Stop()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	t.Run("the UDP port is taken", func(t *testing.T) {
		udp, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer udp.Close()
		o := gateway.Options{Addr: udp.LocalAddr().String(), Home: cp.Home(), ControlPlane: cp.Info.Address, TLS: good, HTTP3: true}
		gw, err := gateway.Start(t.Context(), o)
		if err == nil {
			gw.Stop()
			t.Fatal("started with its UDP port taken")
		}
		if !strings.Contains(err.Error(), "HTTP/3 (UDP)") || !strings.Contains(err.Error(), "address already in use") {
			t.Errorf("got %v", err)
		}
	})
}
