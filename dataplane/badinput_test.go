package dataplane_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/identity/ca"
	"github.com/micromesh/micromesh/internal/meshtest"
)

// countingApp counts the requests that reach it.
func countingApp(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n.Add(1)
		_, _ = io.WriteString(w, "ok")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), &n
}

func tlsClient(creds *identity.Credentials, server identity.ID) *http.Client {
	var cert func() *tls.Certificate
	var bundle *identity.Bundle
	if creds != nil {
		c := creds.TLSCertificate()
		cert, bundle = func() *tls.Certificate { return c }, creds.Bundle
	}
	cfg := identity.ClientTLSConfig(func() *identity.Bundle { return bundle }, cert, identity.AuthorizeID(server))
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
}

func TestInboundRefusesUntrustedPeers(t *testing.T) {
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	app, reached := countingApp(t)
	b := cp.StartSidecar("default", "b", meshtest.WithApp(app, "http"))
	good := cp.Join("default", "a")

	otherCA, err := ca.Open(context.Background(), filepath.Join(t.TempDir(), "ca"), ca.WithTrustDomain("other.example"))
	if err != nil {
		t.Fatal(err)
	}
	defer otherCA.Close()
	foreign := joinCA(t, otherCA, "default", "a")
	sameNameOtherCA, err := ca.Open(context.Background(), filepath.Join(t.TempDir(), "ca2"))
	if err != nil {
		t.Fatal(err)
	}
	defer sameNameOtherCA.Close()
	impostor := joinCA(t, sameNameOtherCA, "default", "a")
	expired := cp.SignedCredentials("default", "a", time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))

	// The client must trust b to even try; foreign clients still get b's
	// real bundle so the refusal is b's.
	foreign.Bundle, impostor.Bundle = good.Bundle, good.Bundle
	tests := map[string]*identity.Credentials{
		"no certificate":        {ID: good.ID, Bundle: good.Bundle}, // no chain: presents none
		"expired certificate":   expired,
		"another trust domain":  foreign,
		"same name, another CA": impostor,
	}
	for name, creds := range tests {
		t.Run(name, func(t *testing.T) {
			var c *http.Client
			if creds.Chain == nil {
				c = tlsClient(nil, b.Creds.ID)
				c.Transport.(*http.Transport).TLSClientConfig = identity.ClientTLSConfig(func() *identity.Bundle { return good.Bundle }, nil, identity.AuthorizeID(b.Creds.ID))
			} else {
				c = tlsClient(creds, b.Creds.ID)
			}
			resp, err := c.Get("https://" + b.Info.Inbound + "/")
			if err == nil {
				resp.Body.Close()
				t.Fatalf("accepted with status %d", resp.StatusCode)
			}
		})
	}
	// The same over QUIC, without a client certificate.
	h3 := &http3.Transport{TLSClientConfig: identity.ClientTLSConfig(func() *identity.Bundle { return good.Bundle }, nil, identity.AuthorizeID(b.Creds.ID))}
	defer h3.Close()
	if resp, err := (&http.Client{Transport: h3, Timeout: 10 * time.Second}).Get("https://" + b.Info.Inbound + "/"); err == nil {
		resp.Body.Close()
		t.Errorf("QUIC without a client certificate accepted: %d", resp.StatusCode)
	}
	// Plaintext to the TLS port.
	conn, err := net.Dial("tcp", b.Info.Inbound)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: b\r\n\r\n")
	line, _ := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if !strings.Contains(line, "400") {
		t.Errorf("plaintext to the inbound port: %q", line)
	}
	// A good client gets through; none of the above reached the app.
	resp, err := tlsClient(good, b.Creds.ID).Get("https://" + b.Info.Inbound + "/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("a good client: %v %v", resp, err)
	}
	resp.Body.Close()
	if n := reached.Load(); n != 1 {
		t.Errorf("the app was reached %d times; only the good client should have", n)
	}
}

func joinCA(t *testing.T, ca *ca.CA, ns, name string) *identity.Credentials {
	t.Helper()
	id, _ := identity.ServiceID(ca.TrustDomain(), ns, name)
	tok, _ := ca.Tokens().Mint(id, time.Minute)
	key, _ := identity.NewKey()
	csr, _ := identity.NewCSR(key, id)
	chain, err := ca.Sign(context.Background(), csr, tok)
	if err != nil {
		t.Fatal(err)
	}
	return &identity.Credentials{ID: id, Chain: chain, Key: key, Bundle: ca.Bundle()}
}

// A peer whose certificate names another service is refused by the caller:
// the cluster's SAN must match.
func TestOutboundRefusesTheWrongServer(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
	b := cp.StartSidecar("default", "b", meshtest.WithApp(startEcho(t, "b"), "http"))
	// "c" registered at b's address: whoever answers there is b, not c.
	_, port, _ := net.SplitHostPort(b.Info.Inbound)
	p, _ := strconv.Atoi(port)
	if err := cp.Registry().Register(context.Background(), registry.Instance{ID: "c-1", Service: "c", Address: "127.0.0.1", Port: uint16(p), QUICPort: uint16(p)}); err != nil {
		t.Fatal(err)
	}
	var resp *http.Response
	var e echoReply
	waitFor(t, "c is routed to its endpoint", func() bool {
		resp, e = call(t, a.Info.Outbound, "c", "/", nil)
		return !strings.Contains(e.Body, "not a service") && !strings.Contains(e.Body, "no healthy endpoint")
	})
	if resp.StatusCode != 503 || e.App == "b" || !strings.Contains(e.Body, "expected spiffe://micromesh.local/ns/default/svc/c") {
		t.Errorf("a call to c answered by b: %d %+v", resp.StatusCode, e)
	}
}

func TestMalformedHTTPAndAppDown(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
	// An app that is not running: b's sidecar points at a closed port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	b := cp.StartSidecar("default", "b", meshtest.WithApp(dead, "http"))

	conn, err := net.Dial("tcp", a.Info.Outbound)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.WriteString(conn, "NOT HTTP AT ALL\r\n\r\n")
	line, _ := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if !strings.Contains(line, "400") {
		t.Errorf("malformed HTTP: %q", line)
	}

	var resp *http.Response
	var e echoReply
	waitFor(t, "b is routed to its endpoint", func() bool {
		resp, e = call(t, a.Info.Outbound, "b", "/", nil)
		return !strings.Contains(e.Body, "not a service") && !strings.Contains(e.Body, "no healthy endpoint")
	})
	if resp.StatusCode != 503 || !strings.Contains(e.Body, "the app at "+dead+" is not answering") {
		t.Errorf("app down: %d %q", resp.StatusCode, e.Body)
	}
	if m := metrics(t, b.Info.Admin); !strings.Contains(m, `micromesh_local_replies_total{direction="inbound",response_code="503"}`) {
		t.Errorf("the app's absence is not counted:\n%s", grep(m, "local_replies"))
	}
}
