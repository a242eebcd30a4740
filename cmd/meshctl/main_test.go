package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// meshctl is the binary under test, built once by TestMain with
// mesh-sidecar beside it, as `make build` lays them out: the runtime
// injects that one.
var meshctl string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "meshctl-bin")
	if err != nil {
		panic(err)
	}
	meshctl = filepath.Join(dir, "meshctl")
	build := exec.Command("go", "build", "-race", "-tags", "grpcnotrace", "-o", dir, ".", "../mesh-sidecar")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		panic("build meshctl and mesh-sidecar: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// The issue's "done when", as a user runs it: start the server, issue a
// certificate with no flags but --service and --out, check it with OpenSSL,
// stop the server with Ctrl-C.
func TestServerIssueOpenSSLAndCtrlC(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl is needed for this test (make deps installs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	srv := startServer(ctx, t)
	meshHome := srv.home
	run := func(name string, args ...string) string {
		t.Helper()
		return srv.run(ctx, t, name, args...)
	}
	run(meshctl, "cert", "issue", "--service", "hello", "--out", "hello")
	if got := run(openssl, "verify", "-CAfile", "hello/bundle.pem", "-untrusted", "hello/cert.pem", "hello/cert.pem"); strings.TrimSpace(got) != "hello/cert.pem: OK" {
		t.Fatalf("openssl verify: %s", got)
	}
	san := run(openssl, "x509", "-in", "hello/cert.pem", "-noout", "-ext", "subjectAltName")
	if !strings.Contains(san, "URI:spiffe://micromesh.local/ns/default/svc/hello") {
		t.Fatalf("subjectAltName:\n%s", san)
	}
	if strings.Count(san, "URI:") != 1 || strings.Contains(san, "DNS:") {
		t.Fatalf("want exactly one URI SAN and nothing else:\n%s", san)
	}
	// OpenSSL rejects the chain against a bundle that is not ours.
	other := t.TempDir()
	run(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=other",
		"-keyout", filepath.Join(other, "k.pem"), "-out", filepath.Join(other, "root.pem"), "-days", "1")
	bad := exec.CommandContext(ctx, openssl, "verify", "-CAfile", filepath.Join(other, "root.pem"), "-untrusted", "hello/cert.pem", "hello/cert.pem")
	bad.Dir = meshHome
	if out, err := bad.CombinedOutput(); err == nil {
		t.Fatalf("openssl accepted the chain against a foreign root:\n%s", out)
	}

	// Ctrl-C: a clean exit, the published address withdrawn.
	srv.interrupt(t)
	if _, err := os.Stat(filepath.Join(meshHome, "controlplane.json")); !os.IsNotExist(err) {
		t.Errorf("controlplane.json left behind: %v", err)
	}
	if strings.Contains(srv.logs.String(), "eyJ") {
		t.Error("the server logged a token")
	}
}

// mesh-sidecar cannot mint tokens; without one it says where to get one.
func TestMeshSidecarWithoutATokenSaysHowToGetOne(t *testing.T) {
	cmd := exec.Command(filepath.Join(filepath.Dir(meshctl), "mesh-sidecar"), "--service", "hello", "--app", "none", "--outbound", "127.0.0.1:1", "--home", t.TempDir())
	cmd.Env = append(os.Environ(), "MESH_TOKEN=")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("want exit status 1, got %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "meshctl cert token --service hello") {
		t.Fatalf("the error does not say how to get a token:\n%s", out)
	}
}
