package ca

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/micromesh/micromesh/identity"
)

// Issuance: the target is ≥ 500 certificates/s on one core (Consul's default
// CSR rate limit is 50/s). Run: go test -run '^$' -bench Issue -cpu 1 ./identity/ca/
//
// BenchmarkIssueBaselineX509 is the same-run floor: the one signature every
// issuance contains, x509.CreateCertificate from a parsed CSR with the
// intermediate key, with no token, no authority and no ledger.

func BenchmarkIssueSign(b *testing.B) {
	ca := openTestCA(b)
	id := mustID(b, ca.TrustDomain(), "default", "bench")
	csr := mustCSR(b, id)
	tokens := make([]string, b.N)
	for i := range tokens {
		tok, err := ca.Tokens().Mint(id, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		tokens[i] = tok
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		if _, err := ca.Sign(ctx, csr, tokens[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "issuances/s")
}

// BenchmarkIssueSignConcurrent: 16 callers at once, as a fleet joining
// together; the ledger commits their token uses in shared transactions.
func BenchmarkIssueSignConcurrent(b *testing.B) {
	ca := openTestCA(b)
	id := mustID(b, ca.TrustDomain(), "default", "bench")
	csr := mustCSR(b, id)
	tokens := make(chan string, b.N)
	for range b.N {
		tok, err := ca.Tokens().Mint(id, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		tokens <- tok
	}
	ctx := context.Background()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := ca.Sign(ctx, csr, <-tokens); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "issuances/s")
}

func BenchmarkIssueRenew(b *testing.B) {
	ca := openTestCA(b)
	creds := issue(b, ca, "bench")
	csr := mustCSR(b, creds.ID)
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		if _, err := ca.Renew(ctx, creds.Chain, csr); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "issuances/s")
}

func BenchmarkIssueBaselineX509(b *testing.B) {
	ca := openTestCA(b)
	key, err := identity.ReadKey(ca.dir + "/" + intermediateKeyFile)
	if err != nil {
		b.Fatal(err)
	}
	req, _, err := identity.ParseCSR(mustCSR(b, mustID(b, ca.TrustDomain(), "default", "bench")))
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	b.ResetTimer()
	for i := range b.N {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i) + 1), NotBefore: now, NotAfter: now.Add(24 * time.Hour),
			URIs: req.URIs, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
		if _, err := x509.CreateCertificate(rand.Reader, tmpl, ca.intermediate, req.PublicKey, key); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "issuances/s")
}

// Handshakes: full TLS 1.3 mutual handshakes with issued certificates over an
// in-memory pipe, with SPIFFE verification (ours) and, as the same-run
// baseline, with the standard library's own chain and host-name checks.

func BenchmarkHandshakeMTLS(b *testing.B) {
	ca := openTestCA(b)
	server := identity.NewSource(issue(b, ca, "server"), nil)
	client := identity.NewSource(issue(b, ca, "client"), nil)
	benchHandshakes(b, server.ServerTLSConfig(identity.AuthorizeID(client.Current().ID)), client.ClientTLSConfig(identity.AuthorizeID(server.Current().ID)))
}

func BenchmarkHandshakeBaselineStdlib(b *testing.B) {
	ca := openTestCA(b)
	srv, err := ca.IssueServing(context.Background(), mustID(b, ca.TrustDomain(), "default", "server"), []string{"server.local"})
	if err != nil {
		b.Fatal(err)
	}
	cli := issue(b, ca, "client")
	benchHandshakes(b,
		&tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*srv.TLSCertificate()},
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.Bundle().Pool()},
		&tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*cli.TLSCertificate()},
			RootCAs: ca.Bundle().Pool(), ServerName: "server.local"},
	)
}

func benchHandshakes(b *testing.B, server, client *tls.Config) {
	b.Helper()
	b.ResetTimer()
	for range b.N {
		c1, c2 := net.Pipe()
		done := make(chan error, 1)
		go func() {
			s := tls.Server(c2, server)
			err := s.Handshake()
			if err == nil {
				_, err = s.Write([]byte{1}) // the client's certificate was accepted
			}
			done <- err
		}()
		c := tls.Client(c1, client)
		err := c.Handshake()
		if err == nil {
			_, err = c.Read(make([]byte, 1))
		}
		if serr := <-done; serr != nil {
			b.Fatal("server: ", serr)
		}
		if err != nil {
			b.Fatal("client: ", err)
		}
		c1.Close()
		c2.Close()
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
}
