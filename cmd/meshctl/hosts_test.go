package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/internal/netnstest"
	"github.com/micromesh/micromesh/internal/servingcert/servingcerttest"
)

// A mesh across two hosts (network namespaces joined by a link): the
// server and helloworld on host A, advertising A's address; on host B,
// meshctl in a remote environment through A's remote proxy, curl through
// A's API gateway with a token, and a sidecar of B's own that calls
// helloworld on A over QUIC with mTLS — nothing of it on loopback.
func TestAcrossHosts(t *testing.T) {
	a, b := netnstest.Pair(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("no curl for host B's HTTP calls")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	// The gateway serves HTTPS with a certificate for A's address from a
	// CA of the operator's own (a public one's, in production).
	ca := servingcerttest.NewCA(t)
	tlsDir := t.TempDir()
	gwCert, _ := ca.Write(t, tlsDir, "gateway", servingcerttest.Cert{Names: []string{a.IP}})
	caPEM := ca.WritePEM(t, tlsDir)
	srv := startServerOn(ctx, t, a, t.TempDir(), meshctl,
		"--addr", a.IP+":0", "--admin-addr", "127.0.0.1:0", "--advertise", a.IP,
		"--proxy-addr", a.IP+":0", "--gateway-addr", a.IP+":0", "--gateway-auth", "required", "--dashboard-addr", "127.0.0.1:0",
		"--gateway-tls-cert", gwCert.Cert, "--gateway-tls-key", gwCert.Key)
	if srv.gatewayURL != "https://"+srv.gateway {
		t.Fatalf("the gateway serves at %s, want HTTPS", srv.gatewayURL)
	}
	examples, err := filepath.Abs("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	srv.run(ctx, t, meshctl, "run", filepath.Join(examples, "helloworld"))
	if out := srv.run(ctx, t, meshctl, "services"); !strings.Contains(out, a.IP) {
		t.Fatalf("helloworld does not advertise host A's address %s:\n%s", a.IP, out)
	}
	if out, err := withStdinOn(ctx, a, srv.env, "alice's long secret\n", "auth", "create", "alice", "--secret-stdin"); err != nil {
		t.Fatalf("auth create: %v\n%s", err, out)
	}
	root := filepath.Join(t.TempDir(), "root.pem")
	if err := os.WriteFile(root, []byte(srv.run(ctx, t, meshctl, "cert", "bundle")), 0o644); err != nil {
		t.Fatal(err)
	}

	// On host B: meshctl through the remote proxy.
	envB := append(os.Environ(), "MESH_HOME="+t.TempDir())
	onB := func(stdin string, args ...string) string {
		t.Helper()
		out, err := withStdinOn(ctx, b, envB, stdin, args...)
		if err != nil {
			t.Fatalf("on host B: meshctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	onB("", "env", "add", "a", "--proxy", srv.proxy, "--bundle", root)
	onB("", "env", "use", "a")
	onB("alice's long secret\n", "login", "alice")
	if out := onB("", "call", "helloworld", "Helloworld.Call", `{"name":"from B"}`); out != `{"msg":"Hello from B"}`+"\n" {
		t.Errorf("on host B: call: %q", out)
	}

	// On host B: curl through the gateway, which requires a token, over
	// HTTPS (HTTP/2, HTTP/3 announced).
	curl := func(args ...string) (string, error) {
		out, err := b.Command(ctx, "curl", append([]string{"-sS", "--max-time", "10", "--cacert", caPEM}, args...)...).CombinedOutput()
		return string(out), err
	}
	_, port, _ := net.SplitHostPort(srv.gateway)
	if out, err := curl("-D", "-", "-o", "/dev/null", "-w", "%{http_code} HTTP/%{http_version}", "-d", `{"name":"Bo"}`, srv.gatewayURL+"/helloworld/call"); err != nil ||
		!strings.HasSuffix(out, "401 HTTP/2") || !strings.Contains(out, `alt-svc: h3=":`+port+`"`) {
		t.Errorf("on host B: the gateway without a token: %s %v", out, err)
	}
	out, err := curl("-d", `{"name":"alice","secret":"alice's long secret"}`, srv.gatewayURL+"/_/token")
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err != nil || json.Unmarshal([]byte(out), &tok) != nil || tok.AccessToken == "" {
		t.Fatalf("on host B: a token from the gateway: %v %s", err, out)
	}
	if out, err := curl("-H", "Authorization: Bearer "+tok.AccessToken, "-d", `{"name":"Bo"}`, srv.gatewayURL+"/helloworld/call"); err != nil || strings.TrimSpace(out) != `{"msg":"Hello Bo"}` {
		t.Errorf("on host B: the gateway with a token: %s %v", out, err)
	}

	// On host B: a sidecar of its own, joining A's control plane with a
	// token minted there, calls helloworld on A.
	token := strings.TrimSpace(srv.run(ctx, t, meshctl, "cert", "token", "--service", "web"))
	sidecar := b.Command(ctx, meshctl, "sidecar", "--service", "web", "--app", "none", "--controlplane", srv.grpc,
		"--advertise", b.IP, "--outbound", "127.0.0.1:15001", "--admin", "127.0.0.1:15090", "--token", token)
	sidecar.Env = envB
	var logs bytes.Buffer
	sidecar.Stdout, sidecar.Stderr = &logs, &logs
	if err := sidecar.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sidecar.Process.Kill(); _ = sidecar.Wait() })
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if out, err := curl("-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:15090/ready"); err == nil && out == "200" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host B's sidecar is not ready after 30 s:\n%s", logs.String())
		}
	}
	// gRPC by hand: Helloworld.Call {name: "Cy"} — a length-prefixed
	// protobuf message (field 1, "Cy") — over h2c to the outbound.
	req := filepath.Join(t.TempDir(), "req.bin")
	if err := os.WriteFile(req, []byte{0, 0, 0, 0, 4, 0x0a, 2, 'C', 'y'}, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = curl("--http2-prior-knowledge", "-H", "Host: helloworld", "-H", "content-type: application/grpc", "-H", "te: trailers",
		"--data-binary", "@"+req, "http://127.0.0.1:15001/examples.helloworld.v1.Helloworld/Call")
	if err != nil || !strings.Contains(out, "Hello Cy") {
		t.Errorf("on host B: helloworld through B's sidecar: %v %q\n%s", err, out, logs.String())
	}
	metrics, _ := curl("http://127.0.0.1:15090/metrics")
	if !strings.Contains(metrics, `micromesh_requests_total{destination="helloworld.default",direction="outbound",grpc_method="examples.helloworld.v1.Helloworld/Call",grpc_status="0",response_code="200",source="web.default",transport="quic"} 1`) {
		var lines []string
		for _, l := range strings.Split(metrics, "\n") {
			if strings.HasPrefix(l, "micromesh_requests_total") {
				lines = append(lines, l)
			}
		}
		t.Errorf("host B's sidecar did not count the call as outbound over QUIC:\n%s", strings.Join(lines, "\n"))
	}
	_ = sidecar.Process.Signal(os.Interrupt)
	_ = sidecar.Wait()
	srv.run(ctx, t, meshctl, "kill", "helloworld")
	srv.interrupt(t)
}
