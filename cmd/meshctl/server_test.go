package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/micromesh/micromesh/internal/netnstest"
	"github.com/micromesh/micromesh/internal/syncbuf"
)

// testServer is `meshctl server` running as a process in a fresh
// $MESH_HOME.
type testServer struct {
	home    string
	env     []string
	cmd     *exec.Cmd
	logs    *syncbuf.Buffer
	drained chan struct{}
	// grpc (the control plane), gateway, dashboard and proxy (the remote
	// proxy) are their addresses, from the ready line; gatewayURL the
	// gateway's base URL (http:// or https://).
	grpc, gateway, gatewayURL, dashboard, proxy string
	// host, if set, is the network namespace it runs in (and run and try
	// run their commands in).
	host *netnstest.Host
}

// command is name with args, in the server's host.
func (s *testServer) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	if s.host != nil {
		return s.host.Command(ctx, name, args...)
	}
	return exec.CommandContext(ctx, name, args...)
}

// startServer starts the server on free ports and waits for its ready
// line.
func startServer(ctx context.Context, t *testing.T) *testServer {
	t.Helper()
	return startServerIn(ctx, t, t.TempDir())
}

// startServerIn is startServer with $MESH_HOME at home.
func startServerIn(ctx context.Context, t *testing.T, home string) *testServer {
	t.Helper()
	return startServerWith(ctx, t, home, meshctl)
}

// startServerWith is startServerIn running the meshctl binary at bin.
func startServerWith(ctx context.Context, t *testing.T, home, bin string) *testServer {
	t.Helper()
	return startServerOn(ctx, t, nil, home, bin, "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0", "--dashboard-addr", "127.0.0.1:0", "--proxy-addr", "127.0.0.1:0")
}

// startServerOn runs bin's server with args in host (nil: this one).
func startServerOn(ctx context.Context, t *testing.T, host *netnstest.Host, home, bin string, args ...string) *testServer {
	t.Helper()
	s := &testServer{home: home, logs: &syncbuf.Buffer{}, drained: make(chan struct{}), host: host}
	s.env = append(os.Environ(), "MESH_HOME="+s.home)
	s.cmd = s.command(ctx, bin, append([]string{"server"}, args...)...)
	s.cmd.Env = s.env
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stderr = s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.cmd.Process.Kill(); _ = s.cmd.Wait() })
	// The first stdout line is the ready line; the rest is drained to EOF.
	first := make(chan string, 1)
	go func() {
		defer close(s.drained)
		sc := bufio.NewScanner(stdout)
		for n := 0; sc.Scan(); n++ {
			if n == 0 {
				first <- sc.Text()
			}
		}
	}()
	select {
	case line := <-first:
		if !strings.HasPrefix(line, "micromesh server ready: grpc ") {
			t.Fatalf("first line = %q", line)
		}
		if m := regexp.MustCompile(`^micromesh server ready: grpc ([0-9.]+:\d+), .*, gateway (https?://([0-9.]+:\d+)), dashboard http://([0-9.]+:\d+), remote proxy ([0-9.]+:\d+),`).FindStringSubmatch(line); m != nil {
			s.grpc, s.gatewayURL, s.gateway, s.dashboard, s.proxy = m[1], m[2], m[3], m[4], m[5]
		} else {
			t.Fatalf("the ready line names no gateway, dashboard and remote proxy: %q", line)
		}
	case <-ctx.Done():
		t.Fatalf("no ready line; logs:\n%s", s.logs.String())
	}
	return s
}

// run runs name with the server's environment in its home and returns
// the combined output, failing the test if it fails.
func (s *testServer) run(ctx context.Context, t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := s.try(ctx, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return out
}

// try is run that returns the error.
func (s *testServer) try(ctx context.Context, name string, args ...string) (string, error) {
	cmd := s.command(ctx, name, args...)
	cmd.Env = s.env
	cmd.Dir = s.home
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// interrupt sends Ctrl-C and waits for a clean exit.
func (s *testServer) interrupt(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() {
		<-s.drained
		waitErr <- s.cmd.Wait()
	}()
	select {
	case err := <-waitErr:
		if err != nil {
			t.Fatalf("server exit after Ctrl-C: %v\n%s", err, s.logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not stop within 30s of Ctrl-C")
	}
}
