package cli

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/internal/meshtest"
)

// runCLIIn is runCLI with standard input.
func runCLIIn(t *testing.T, in string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := NewCommand(Streams{In: strings.NewReader(in), Out: &out, Err: &errOut}, args)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

func TestAuthAccountsAndTokens(t *testing.T) {
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	cp.StartPlatform()
	home := string(env.Home)
	run := func(in string, args ...string) (string, error) {
		return runCLIIn(t, in, append([]string{"--home", home, "auth"}, args...)...)
	}

	out, err := run("", "create", "alice")
	m := regexp.MustCompile(`account alice created in namespace default; its secret \(shown once\): (\S+)`).FindStringSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("create alice: %q %v", out, err)
	}
	if out, err := run("ops's own secret\n", "create", "ops", "-n", "shop", "--scope", "admin", "--secret-stdin"); err != nil || out != "account ops created in namespace shop\n" {
		t.Fatalf("create ops: %q %v", out, err)
	}
	out, err = run("", "accounts", "-A")
	if err != nil || !strings.Contains(out, "alice") || !strings.Contains(out, "ops    shop       admin") {
		t.Errorf("accounts -A: %v\n%s", err, out)
	}
	tok, err := run(m[1]+"\n", "token", "alice", "--ttl", "5m")
	if err != nil || strings.Count(tok, ".") != 2 {
		t.Errorf("token: %q %v", tok, err)
	}
	for _, tc := range []struct {
		in   string
		args []string
		want string
	}{
		{"wrong secret\n", []string{"token", "alice"}, "Unauthenticated: wrong account name or secret"},
		{"", []string{"token", "alice"}, "no secret on standard input"},
		{"", []string{"create", "alice"}, "AlreadyExists"},
		{"short\n", []string{"create", "bob", "--secret-stdin"}, "the secret is 5 characters"},
		{"", []string{"delete", "nobody"}, "NotFound"},
	} {
		_, err := run(tc.in, tc.args...)
		if err == nil || !strings.Contains(describe(err), tc.want) {
			t.Errorf("auth %v: %v, want %q", tc.args, err, tc.want)
		}
	}
	if out, err := run("", "delete", "alice"); err != nil || !strings.Contains(out, "deleted") {
		t.Errorf("delete: %q %v", out, err)
	}
}
