package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// meshctl on another machine: an environment added with the server's
// remote proxy and root, a login with an account's secret, then calls,
// describe and the service's own command as that account — and the
// admin's commands refused there with what to do instead.
func TestRemoteEnvironment(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv := startServer(ctx, t)
	examples, err := filepath.Abs("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	srv.run(ctx, t, meshctl, "run", filepath.Join(examples, "helloworld"))
	if out, err := withStdin(ctx, srv.env, "alice's long secret\n", "auth", "create", "alice", "--secret-stdin"); err != nil {
		t.Fatalf("auth create: %v\n%s", err, out)
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
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"call", "-n", "shop", "helloworld", "Helloworld.Call"}, "may call services of namespace default, not shop"},
		{[]string{"call", "nosuch", "X.Y"}, "no service nosuch in namespace default"},
		{[]string{"services"}, "meshctl services acts as the server's admin, on the server's machine; the environment is staging, remote"},
		{[]string{"policy", "clear", "helloworld"}, "--env local, or meshctl env use local"},
		{[]string{"call", "helloworld", "Helloworld.Call", "--as", "pingpong"}, "--as runs a sidecar with a certificate from the server's CA"},
		{[]string{"--env", "prod", "call", "helloworld", "Helloworld.Call"}, `no environment "prod"`},
		{[]string{"env", "add", "local", "--proxy", srv.proxy, "--bundle", root}, "always there"},
		{[]string{"env", "add", "qa", "--proxy", "nowhere", "--bundle", root}, "want HOST:PORT"},
		{[]string{"env", "add", "qa", "--proxy", srv.proxy, "--bundle", filepath.Join(laptop, "cli", "envs.json")}, "--bundle"},
	} {
		if out, err := run("", tc.args...); err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("meshctl %s: %v\n%s\nwant it to say %q", strings.Join(tc.args, " "), err, out, tc.want)
		}
	}

	// An expired token says so; logout forgets it.
	tok := filepath.Join(laptop, "cli", "tokens", "staging.json")
	kept, _ := os.ReadFile(tok)
	if err := os.WriteFile(tok, []byte(`{"access_token":"x","subject":"spiffe://micromesh.local/ns/default/user/alice","expires":"2020-01-01T00:00:00Z"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run("", "call", "helloworld", "Helloworld.Call"); err == nil || !strings.Contains(out, "expired") || !strings.Contains(out, "meshctl login again") {
		t.Errorf("a call with an expired token: %v\n%s", err, out)
	}
	if err := os.WriteFile(tok, kept, 0o600); err != nil {
		t.Fatal(err)
	}
	must("", "logout")
	if out, err := run("", "call", "helloworld", "Helloworld.Call"); err == nil || !strings.Contains(out, "not logged in") {
		t.Errorf("a call after logout: %v\n%s", err, out)
	}
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
	cmd := exec.CommandContext(ctx, meshctl, args...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
