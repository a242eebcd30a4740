// Package outsidetest starts HTTPS servers that stand for services outside
// the mesh in tests: each with a CA of its own (not the mesh's), a
// certificate for the DNS names given, and a handler that answers with
// what it saw of the request, so a test can check what a sidecar sent out.
package outsidetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// Seen is what the server saw of a request; it answers with it as JSON.
type Seen struct {
	Host string `json:"host"` // the request's authority
	SNI  string `json:"sni"`
	// ClientCert is whether the client presented a certificate (a
	// sidecar must not show its mesh identity outside the mesh).
	ClientCert bool   `json:"client_cert"`
	TLSVersion uint16 `json:"tls_version"`
	Method     string `json:"method"`
	URI        string `json:"uri"`
	Body       string `json:"body"`
	// Header holds the request's headers.
	Header http.Header `json:"header"`
}

// CA is a certificate authority of a test's own.
type CA struct {
	// PEM is its certificate.
	PEM  []byte
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA makes a CA.
func NewCA(t testing.TB) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "outsidetest CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert: cert, key: key}
}

// Server is an HTTPS server on loopback.
type Server struct {
	// Port is its TCP port on 127.0.0.1 (reach it as localhost).
	Port uint16
	CA   *CA
}

// Start starts a server whose certificate, signed by ca, names dnsNames.
func Start(t testing.TB, ca *CA, dnsNames ...string) *Server {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: dnsNames[0]}, DNSNames: dnsNames,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conf := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		ClientAuth:   tls.RequestClientCert,
		NextProtos:   []string{"http/1.1"},
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		if code, err := strconv.Atoi(r.Header.Get("X-Outside-Status")); err == nil {
			w.WriteHeader(code)
		}
		_ = json.NewEncoder(w).Encode(Seen{
			Host: r.Host, SNI: r.TLS.ServerName, ClientCert: len(r.TLS.PeerCertificates) > 0, TLSVersion: r.TLS.Version,
			Method: r.Method, URI: r.RequestURI, Body: string(body), Header: r.Header,
		})
	}), ErrorLog: nil}
	go func() { _ = srv.Serve(tls.NewListener(ln, conf)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return &Server{Port: uint16(ln.Addr().(*net.TCPAddr).Port), CA: ca}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}
