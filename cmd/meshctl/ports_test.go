package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Another process takes a port the runtime picked for an instance before
// its sidecar binds it: the sidecar exits saying so, and the runtime starts
// the instance again on other ports. The user sees a running service.
func TestRunStartsAgainWhenAPickedPortIsTaken(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// meshctl with a mesh-sidecar beside it that loses its port once (as
	// the real one reports it), then is the real one.
	dir := t.TempDir()
	bin := filepath.Join(dir, "meshctl")
	if err := os.Link(meshctl, bin); err != nil {
		t.Skipf("cannot link meshctl into %s: %v", dir, err)
	}
	real := filepath.Join(filepath.Dir(meshctl), "mesh-sidecar")
	once := filepath.Join(dir, "lost-a-port")
	script := "#!/bin/sh\n" +
		"if [ ! -e " + once + " ]; then\n" +
		"  touch " + once + "\n" +
		"  echo 'mesh-sidecar: inbound port 40000 (UDP, for QUIC): listen udp 0.0.0.0:40000: bind: address already in use' >&2\n" +
		"  exit 1\n" +
		"fi\n" +
		"exec " + real + " \"$@\"\n"
	if err := os.WriteFile(filepath.Join(dir, "mesh-sidecar"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	srv := startServerWith(ctx, t, t.TempDir(), bin)
	examples, err := filepath.Abs("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	out := srv.run(ctx, t, bin, "run", filepath.Join(examples, "helloworld"))
	if !strings.Contains(out, "helloworld is running: 1 instance(s)") {
		t.Fatalf("run helloworld:\n%s", out)
	}
	if out := srv.run(ctx, t, bin, "call", "helloworld", "Helloworld.Call", `{"name":"Alice"}`); out != `{"msg":"Hello Alice"}`+"\n" {
		t.Fatalf("call helloworld: %q", out)
	}
	if _, err := os.Stat(once); err != nil {
		t.Fatal("the first sidecar never ran")
	}
	if logs := srv.logs.String(); !strings.Contains(logs, "a port picked for the instance was taken; trying others") {
		t.Errorf("the server did not say it tried other ports:\n%s", logs)
	}
}
