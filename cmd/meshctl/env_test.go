package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	hellopb "github.com/micromesh/micromesh/examples/helloworld/proto"
	"github.com/micromesh/micromesh/internal/netnstest"
	"github.com/micromesh/micromesh/internal/poll"
	"github.com/micromesh/micromesh/internal/syncbuf"
)

// meshctl on another machine: an environment added with the server's
// remote proxy and root, a login with an account's secret, then calls,
// describe and the service's own command as that account — and the
// admin's commands refused there with what to do instead.
func TestRemoteEnvironment(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	srv := startServer(ctx, t)
	examples, err := filepath.Abs("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	srv.run(ctx, t, meshctl, "run", filepath.Join(examples, "helloworld"))
	for _, a := range [][]string{{"alice"}, {"ops", "--scope", "admin"}} {
		if out, err := withStdin(ctx, srv.env, a[0]+"'s long secret\n", append([]string{"auth", "create", "--secret-stdin"}, a...)...); err != nil {
			t.Fatalf("auth create %s: %v\n%s", a[0], err, out)
		}
	}
	root := filepath.Join(t.TempDir(), "root.pem")
	if err := os.WriteFile(root, []byte(srv.run(ctx, t, meshctl, "cert", "bundle")), 0o644); err != nil {
		t.Fatal(err)
	}

	// The other machine: its own $MESH_HOME, no server there.
	laptop := t.TempDir()
	env := append(os.Environ(), "MESH_HOME="+laptop)
	run := func(stdin string, args ...string) (string, error) { return withStdin(ctx, env, stdin, args...) }
	must := func(stdin string, args ...string) string {
		t.Helper()
		out, err := run(stdin, args...)
		if err != nil {
			t.Fatalf("meshctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	must("", "env", "add", "staging", "--proxy", srv.proxy, "--bundle", root)
	if out, err := run("", "--env", "staging", "call", "helloworld", "Helloworld.Call", `{"name":"Ann"}`); err == nil || !strings.Contains(out, "not logged in to environment staging: meshctl login") {
		t.Errorf("a call before login: %v\n%s", err, out)
	}
	must("", "env", "use", "staging")
	if out, err := run("not the secret\n", "login", "alice"); err == nil || !strings.Contains(out, "Unauthenticated") {
		t.Errorf("login with a wrong secret: %v\n%s", err, out)
	}
	if out := must("alice's long secret\n", "login", "alice"); !strings.Contains(out, "logged in to staging as spiffe://micromesh.local/ns/default/user/alice until") {
		t.Errorf("login: %s", out)
	}
	if out := must("", "env"); !regexp.MustCompile(`\*\s+staging\s+` + srv.proxy + `\s+spiffe://micromesh.local/ns/default/user/alice until`).MatchString(out) {
		t.Errorf("env does not show staging as current, logged in:\n%s", out)
	}
	for _, f := range []string{"cli/envs.json", "cli/tokens/staging.json"} {
		if fi, err := os.Stat(filepath.Join(laptop, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v, want 0600", f, err, fi.Mode().Perm())
		}
	}

	// Calls as alice, through the remote proxy.
	if out := must("", "call", "helloworld", "Helloworld.Call", `{"name":"Ann"}`); out != `{"msg":"Hello Ann"}`+"\n" {
		t.Errorf("call: %q", out)
	}
	if out := must("", "helloworld", "call", "--name", "Bea"); out != `{"msg":"Hello Bea"}`+"\n" {
		t.Errorf("the service's command: %q", out)
	}
	if out := must("", "describe", "helloworld"); !strings.Contains(out, "Helloworld.Call") {
		t.Errorf("describe:\n%s", out)
	}
	// A local port for helloworld, relayed to the remote proxy as alice:
	// any gRPC client reaches it; a service that is not there is named.
	for _, tc := range []struct{ service, want string }{
		{"helloworld", ""},
		{"nosuch", "no service nosuch in namespace default"},
	} {
		fwd := exec.CommandContext(ctx, meshctl, "port-forward", tc.service, "-o", "json")
		fwd.Env = env
		var fwdOut syncbuf.Buffer
		fwd.Stdout, fwd.Stderr = &fwdOut, &fwdOut
		if err := fwd.Start(); err != nil {
			t.Fatal(err)
		}
		var shown struct{ Listen string }
		poll.Until(t, "port-forward to say where it listens", 30*time.Second, 50*time.Millisecond, func() bool {
			return json.Unmarshal([]byte(fwdOut.String()), &shown) == nil
		})
		conn, err := grpc.NewClient(shown.Listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hellopb.NewHelloworldClient(conn).Call(ctx, &hellopb.CallRequest{Name: "Cy"})
		conn.Close()
		if tc.want == "" && (err != nil || resp.GetMsg() != "Hello Cy") {
			t.Errorf("helloworld through port-forward: %v %v\n%s", resp, err, fwdOut.String())
		}
		if tc.want != "" && (status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s through port-forward: %v, want NotFound saying %q", tc.service, err, tc.want)
		}
		if err := fwd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		if err := fwd.Wait(); err != nil {
			t.Errorf("port-forward after Ctrl-C: %v\n%s", err, fwdOut.String())
		}
	}
	if out := must("", "services"); !strings.Contains(out, "helloworld") || strings.Contains(out, "micromesh") {
		t.Errorf("services, as alice of namespace default:\n%s", out)
	}
	// The store, config, broker and events, in alice's namespace.
	must("", "store", "write", "note", "from alice's laptop")
	if out := srv.run(ctx, t, meshctl, "store", "read", "note", "--database", "default"); !strings.Contains(out, "from alice's laptop") {
		t.Errorf("the server's own CLI does not see alice's record in database default:\n%s", out)
	}
	if out := must("", "store", "read", "note"); !strings.Contains(out, "from alice's laptop") {
		t.Errorf("store read as alice:\n%s", out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"call", "-n", "shop", "helloworld", "Helloworld.Call"}, "may call services of namespace default, not shop"},
		{[]string{"call", "nosuch", "X.Y"}, "no service nosuch in namespace default"},
		{[]string{"cert", "token", "--service", "x"}, "meshctl cert token acts as the server's admin, on the server's machine; the environment is staging, remote"},
		// The server itself runs here whatever the CLI talks to (this one
		// stops at its flags).
		{[]string{"server", "--gateway-addr", ""}, "--gateway-addr must not be empty"},
		{[]string{"services", "-n", "shop"}, "may list services of namespace default, not shop"},
		{[]string{"auth", "accounts"}, "for accounts with the scope admin only"},
		{[]string{"store", "read", "note", "--database", "shop"}, "may act in its own namespace (default), not shop"},
		{[]string{"policy", "clear", "helloworld"}, "the control plane's API (meshctl policy, split, status, logs, run, …) is for accounts with the scope admin"},
		{[]string{"run", "./somewhere"}, "./somewhere is a directory of this machine; the environment is staging, remote"},
		{[]string{"status", "--controlplane", "127.0.0.1:1"}, "--controlplane names a control plane to reach as this machine's server admin"},
		{[]string{"call", "helloworld", "Helloworld.Call", "--as", "pingpong"}, "--as runs a sidecar with a certificate from the server's CA"},
		{[]string{"port-forward", "helloworld", "--as", "pingpong"}, "--as runs a sidecar with a certificate from the server's CA"},
		{[]string{"--env", "prod", "call", "helloworld", "Helloworld.Call"}, `no environment "prod"`},
		{[]string{"env", "add", "local", "--proxy", srv.proxy, "--bundle", root}, "always there"},
		{[]string{"env", "add", "qa", "--proxy", "nowhere", "--bundle", root}, "want HOST:PORT"},
		{[]string{"env", "add", "qa", "--proxy", srv.proxy, "--bundle", filepath.Join(laptop, "cli", "envs.json")}, "--bundle"},
	} {
		if out, err := run("", tc.args...); err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("meshctl %s: %v\n%s\nwant it to say %q", strings.Join(tc.args, " "), err, out, tc.want)
		}
	}

	// The access token renews itself through the session as it runs out:
	// the refresh token is traded for a new one each time.
	tokPath := filepath.Join(laptop, "cli", "tokens", "staging.json")
	readTok := func() map[string]any {
		t.Helper()
		var m map[string]any
		data, err := os.ReadFile(tokPath)
		if err == nil {
			err = json.Unmarshal(data, &m)
		}
		if err != nil {
			t.Fatalf("the token file: %v", err)
		}
		return m
	}
	writeTok := func(m map[string]any) {
		t.Helper()
		data, _ := json.Marshal(m)
		if err := os.WriteFile(tokPath, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	expired := func(m map[string]any) map[string]any {
		c := maps.Clone(m)
		c["expires"] = "2020-01-01T00:00:00Z"
		return c
	}
	first := readTok()
	if !strings.HasPrefix(fmt.Sprint(first["refresh_token"]), "mrt.") {
		t.Fatalf("login kept no refresh token: %v", first["refresh_token"] != nil)
	}
	writeTok(expired(first))
	if out := must("", "call", "helloworld", "Helloworld.Call", `{"name":"Cy"}`); out != `{"msg":"Hello Cy"}`+"\n" {
		t.Errorf("a call with a run-out access token: %q", out)
	}
	renewed := readTok()
	if renewed["access_token"] == first["access_token"] || renewed["refresh_token"] == first["refresh_token"] || renewed["expires"] == "2020-01-01T00:00:00Z" {
		t.Error("the call did not renew the access token and rotate the refresh token")
	}
	// The traded refresh token again — a copy: the server ends the session.
	writeTok(expired(first))
	if out, err := run("", "call", "helloworld", "Helloworld.Call"); err == nil || !strings.Contains(out, "the session of environment staging") || !strings.Contains(out, "already used") {
		t.Errorf("a traded refresh token again: %v\n%s", err, out)
	}
	writeTok(expired(renewed))
	if out, err := run("", "call", "helloworld", "Helloworld.Call"); err == nil || !strings.Contains(out, "unknown or revoked") || !strings.Contains(out, "log in again") {
		t.Errorf("the session's latest token after it ended: %v\n%s", err, out)
	}
	// Without a session, a run-out token says to log in again.
	noSession := expired(renewed)
	delete(noSession, "refresh_token")
	writeTok(noSession)
	if out, err := run("", "call", "helloworld", "Helloworld.Call"); err == nil || !strings.Contains(out, "expired") || !strings.Contains(out, "meshctl login again") {
		t.Errorf("a call with an expired token: %v\n%s", err, out)
	}

	// Logout ends the session on the server and forgets it here.
	must("alice's long secret\n", "login", "alice")
	before := readTok()
	if out := must("", "logout"); !strings.Contains(out, "session ended") {
		t.Errorf("logout: %s", out)
	}
	if out, err := run("", "call", "helloworld", "Helloworld.Call"); err == nil || !strings.Contains(out, "not logged in") {
		t.Errorf("a call after logout: %v\n%s", err, out)
	}
	writeTok(expired(before))
	if out, err := run("", "call", "helloworld", "Helloworld.Call"); err == nil || !strings.Contains(out, "unknown or revoked") {
		t.Errorf("the session's refresh token after logout: %v\n%s", err, out)
	}
	// An admin account reaches the platform's services too: config, auth.
	must("ops's long secret\n", "login", "ops")
	must("", "config", "set", "greeting.text", `"hello from afar"`)
	if out := must("", "config", "get", "greeting.text"); !strings.Contains(out, "hello from afar") {
		t.Errorf("config get as ops: %s", out)
	}
	if out := must("", "auth", "accounts"); !strings.Contains(out, "alice") || !strings.Contains(out, "ops") {
		t.Errorf("auth accounts as ops:\n%s", out)
	}
	if out := srv.run(ctx, t, meshctl, "config", "get", "greeting.text"); !strings.Contains(out, "hello from afar") {
		t.Errorf("the server's own CLI does not see what ops set: %s", out)
	}
	// And the control plane's APIs: the runtime, policies, proxy status.
	if out := must("", "status"); !strings.Contains(out, "helloworld") {
		t.Errorf("status as ops:\n%s", out)
	}
	must("", "policy", "set", "helloworld", "timeout=3s")
	if out := srv.run(ctx, t, meshctl, "services", "-o", "json"); !strings.Contains(out, `"timeout":"3s"`) && !strings.Contains(out, `"timeout": "3s"`) {
		t.Errorf("the server's own CLI does not see the policy ops set:\n%s", out)
	}
	if out := must("", "proxy-status"); !strings.Contains(out, "helloworld") {
		t.Errorf("proxy-status as ops:\n%s", out)
	}
	if out := must("", "logs", "helloworld"); !strings.Contains(out, "helloworld") {
		t.Errorf("logs as ops:\n%s", out)
	}
	// Traces too: a traced call through the proxy (its sidecar's span, then
	// helloworld's), read back through it.
	out := must("", "call", "helloworld", "Helloworld.Call", `{"name":"Tia"}`, "--trace")
	m := regexp.MustCompile(`meshctl trace ([0-9a-f]{32})`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("call --trace as ops names no trace:\n%s", out)
	}
	poll.Until(t, "the traced call's spans, through the proxy", 20*time.Second, 200*time.Millisecond, func() bool {
		out, err := run("", "trace", m[1])
		return err == nil && strings.Contains(out, "proxy.micromesh") && strings.Contains(out, "helloworld.default")
	})
	// The figures and the health check, through the proxy as well.
	if out := must("", "stat", "helloworld"); !strings.Contains(out, "helloworld.default") {
		t.Errorf("stat as ops:\n%s", out)
	}
	if out := must("", "check"); !strings.Contains(out, "√ reachable") || !strings.Contains(out, "√ in sync") || !strings.Contains(out, "all checks passed") {
		t.Errorf("check as ops:\n%s", out)
	}
	// tap, through the proxy: the calls the proxy relays to helloworld.
	tap := exec.CommandContext(ctx, meshctl, "tap", "helloworld", "-o", "json")
	tap.Env = env
	tapped := &syncbuf.Buffer{}
	tap.Stdout, tap.Stderr = tapped, tapped
	if err := tap.Start(); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, "a call through the proxy in tap's output, through the proxy", 20*time.Second, 300*time.Millisecond, func() bool {
		_, _ = run("", "call", "helloworld", "Helloworld.Call", `{"name":"Tap"}`)
		return strings.Contains(tapped.String(), `"source": "proxy.micromesh"`)
	})
	_ = tap.Process.Signal(os.Interrupt)
	if err := tap.Wait(); err != nil {
		t.Errorf("tap as ops after Ctrl-C: %v\n%s", err, tapped.String())
	}
	must("", "policy", "clear", "helloworld")
	must("", "logout")

	must("", "env", "use", "local")
	must("", "env", "remove", "staging")
	if out := must("", "env", "-o", "json"); strings.Contains(out, "staging") {
		t.Errorf("env after remove:\n%s", out)
	}
	srv.interrupt(t)
	if strings.Contains(srv.logs.String(), "eyJ") {
		t.Error("a token reached the server's logs")
	}
}

// withStdin runs meshctl with env and stdin and returns its combined
// output.
func withStdin(ctx context.Context, env []string, stdin string, args ...string) (string, error) {
	return withStdinOn(ctx, nil, env, stdin, args...)
}

// withStdinOn is withStdin in host (nil: this one).
func withStdinOn(ctx context.Context, host *netnstest.Host, env []string, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, meshctl, args...)
	if host != nil {
		cmd = host.Command(ctx, meshctl, args...)
	}
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
