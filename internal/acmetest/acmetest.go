// Package acmetest runs an ACME certificate authority in-process for tests:
// Let's Encrypt's own test server, Pebble, with its validation authority
// checking challenges for real — tls-alpn-01 on the port given, http-01 on
// the other — against loopback, every name resolved to 127.0.0.1 by a DNS
// server of its own.
package acmetest

import (
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
)

// CA is a running ACME CA.
type CA struct {
	// Directory is the ACME directory URL (HTTPS).
	Directory string
	// DirectoryBundle is a PEM file of the root the directory's own TLS
	// certificate chains to (what --gateway-acme-ca-bundle takes).
	DirectoryBundle string
	// Roots are the roots the certificates it issues chain to.
	Roots *x509.CertPool
}

// Start runs a CA until the test ends. Its validation authority connects
// to tlsPort for tls-alpn-01 challenges and to httpPort for http-01 ones,
// on 127.0.0.1 whatever the name.
func Start(t testing.TB, tlsPort, httpPort int) *CA {
	t.Helper()
	// Answers at once, every nonce good: what Let's Encrypt does most of
	// the time, without Pebble's deliberate delays and refusals.
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	logger := log.New(io.Discard, "", 0)
	if testing.Verbose() {
		logger = log.New(os.Stderr, "pebble ", log.LstdFlags)
	}
	resolver := startDNS(t)
	store := db.NewMemoryStore()
	issuer := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "the default profile"}})
	validator := va.New(logger, httpPort, tlsPort, false, resolver, store)
	front := wfe.New(logger, store, validator, issuer, nil, false, false, 3, 5)
	srv := httptest.NewTLSServer(front.Handler())
	t.Cleanup(srv.Close)

	bundle := filepath.Join(t.TempDir(), "acme-directory-root.pem")
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	root, err := x509.ParseCertificate(issuer.GetRootCert(0).DER)
	if err != nil {
		t.Fatal(err)
	}
	roots.AddCert(root)
	return &CA{Directory: srv.URL + wfe.DirectoryPath, DirectoryBundle: bundle, Roots: roots}
}

// startDNS serves DNS over TCP on loopback (Pebble's resolver asks over
// TCP), answering every A question with 127.0.0.1 and AAAA with nothing.
func startDNS(t testing.TB) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: lis, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, question := range q.Question {
			if question.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return lis.Addr().String()
}
