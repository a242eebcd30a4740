package cli

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/micromesh/micromesh/internal/servingcert/servingcerttest"
)

// A port another program holds: the server says which flag moves it.
func TestServerPortConflict(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--addr", addr, "--admin-addr", "127.0.0.1:0"}, "is another server running? pick another with --addr"},
		{[]string{"--addr", "127.0.0.1:0", "--admin-addr", addr}, "pick another with --admin-addr"},
		{[]string{"--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--gateway-addr", addr, "--dashboard-addr", "127.0.0.1:0", "--proxy-addr", "127.0.0.1:0"}, "pick another with --gateway-addr, or turn it off with --gateway-addr off"},
		{[]string{"--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0", "--dashboard-addr", addr, "--proxy-addr", "127.0.0.1:0"}, "pick another with --dashboard-addr, or turn it off with --dashboard-addr off"},
		{[]string{"--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0", "--dashboard-addr", "127.0.0.1:0", "--proxy-addr", addr}, "pick another with --proxy-addr, or turn it off with --proxy-addr off"},
	} {
		_, err := runCLI(t, append([]string{"--home", t.TempDir(), "server"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("server %v: %v, want %q", tc.args, err, tc.want)
		}
	}
}

// The gateway's TLS flags: both files or neither, a gateway to serve, and
// a pair it can serve — refused before anything starts.
func TestServerGatewayTLSFlags(t *testing.T) {
	dir := t.TempDir()
	open, _ := servingcerttest.NewCA(t).Write(t, dir, "open", servingcerttest.Cert{})
	if err := os.Chmod(open.Key, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--gateway-redirect-addr", "127.0.0.1:0"}, "--gateway-redirect-addr sends plain HTTP to the gateway's HTTPS: it needs --gateway-tls-cert and --gateway-tls-key, or --gateway-acme-domains"},
		{[]string{"--gateway-rate-limit", "-1"}, "--gateway-rate-limit and --gateway-rate-limit-burst: rate -1: requests per second per client"},
		{[]string{"--gateway-rate-limit-burst", "10"}, "a burst of 10 needs a rate"},
		{[]string{"--gateway-tls-cert", "gw.crt"}, "--gateway-tls-cert needs --gateway-tls-key: the private key of the certificate"},
		{[]string{"--gateway-tls-key", "gw.key"}, "--gateway-tls-key needs --gateway-tls-cert"},
		{[]string{"--gateway-addr", "off", "--dashboard-addr", "off", "--gateway-tls-cert", "gw.crt", "--gateway-tls-key", "gw.key"}, "with --gateway-addr off there is none"},
		{[]string{"--gateway-tls-cert", open.Cert, "--gateway-tls-key", open.Key}, "--gateway-tls-cert and --gateway-tls-key: " + open.Key + " has mode 0644"},
		{[]string{"--gateway-tls-cert", open.Cert, "--gateway-tls-key", filepath.Join(dir, "nope.key")}, "no such file"},
		{[]string{"--gateway-acme-domains", "api.example.com", "--gateway-tls-cert", open.Cert, "--gateway-tls-key", open.Key}, "leave out --gateway-tls-cert and --gateway-tls-key, or it"},
		{[]string{"--gateway-acme-domains", "localhost"}, "--gateway-acme-*: \"localhost\" has one label"},
		{[]string{"--gateway-acme-domains", "api.example.com", "--gateway-acme-ca", "http://ca.example.com/dir"}, "not an https:// URL"},
		{[]string{"--gateway-acme-email", "ops@example.com"}, "go with --gateway-acme-domains"},
		{[]string{"--gateway-addr", "off", "--dashboard-addr", "off", "--gateway-acme-domains", "api.example.com"}, "with --gateway-addr off there is none"},
	} {
		_, err := runCLI(t, append([]string{"--home", t.TempDir(), "server"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("server %v: %v, want %q", tc.args, err, tc.want)
		}
	}
}
