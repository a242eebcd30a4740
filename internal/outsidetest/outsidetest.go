// Package outsidetest starts HTTPS servers that stand for services outside
// the mesh in tests: each with a certificate for the DNS names given,
// signed by a CA of the test's own (servingcerttest's, not the mesh's),
// and a handler that answers with what it saw of the request, so a test
// can check what a sidecar sent out.
package outsidetest

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"

	"github.com/micromesh/micromesh/internal/servingcert/servingcerttest"
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

// CA is a certificate authority of the test's own.
type CA = servingcerttest.CA

// NewCA makes a CA.
func NewCA(t testing.TB) *CA { return servingcerttest.NewCA(t) }

// Server is an HTTPS server on loopback.
type Server struct {
	// Port is its TCP port on 127.0.0.1 (reach it as localhost).
	Port uint16
}

// ServerTLS is a server's TLS config: a certificate, signed by ca, that
// names dnsNames; client certificates asked for (not required), so that a
// test sees whether one was shown.
func ServerTLS(t testing.TB, ca *CA, dnsNames ...string) *tls.Config {
	t.Helper()
	files, _ := ca.Write(t, t.TempDir(), "server", servingcerttest.Cert{Names: dnsNames})
	cert, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert}
}

// Listen listens on a free port of 127.0.0.1, closed when the test ends.
func Listen(t testing.TB) (net.Listener, uint16) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln, uint16(ln.Addr().(*net.TCPAddr).Port)
}

// Start starts an HTTP/1.1 server whose certificate, signed by ca, names
// dnsNames. An X-Outside-Status header asks it for that status.
func Start(t testing.TB, ca *CA, dnsNames ...string) *Server {
	t.Helper()
	conf := ServerTLS(t, ca, dnsNames...)
	conf.NextProtos = []string{"http/1.1"}
	ln, port := Listen(t)
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
	})}
	go func() { _ = srv.Serve(tls.NewListener(ln, conf)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return &Server{Port: port}
}
