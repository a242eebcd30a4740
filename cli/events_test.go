package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/syncbuf"
)

func TestEventsCommands(t *testing.T) {
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	cp.StartPlatform()
	home := string(env.Home)
	for i, p := range []string{"one", "two", "three"} {
		out, err := runCLI(t, "--home", home, "events", "publish", "orders", p, "-n", "shop")
		if err != nil || strings.TrimSpace(out) != string(rune('1'+i)) {
			t.Fatalf("publish %s: %q %v", p, out, err)
		}
	}
	out, err := runCLI(t, "--home", home, "events", "read", "orders", "-n", "shop", "--offset", "2", "--limit", "1")
	if err != nil || !strings.HasPrefix(out, "2\t") || !strings.HasSuffix(out, "\ttwo\n") || strings.Count(out, "\n") != 1 {
		t.Fatalf("read: %q %v", out, err)
	}
	if _, err := runCLI(t, "--home", home, "events", "read", "orders", "-n", "shop", "--offset", "9"); err == nil || !strings.Contains(describe(err), "beyond") {
		t.Errorf("offset beyond: %v", err)
	}

	out2, errOut := &syncbuf.Buffer{}, &syncbuf.Buffer{}
	cmd := NewRootCommand(Streams{In: strings.NewReader(""), Out: out2, Err: errOut})
	cmd.SetArgs([]string{"--home", home, "events", "consume", "orders", "-n", "shop", "--group", "cli", "--offset", "2"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	waitFor(t, func() bool { return strings.Count(out2.String(), "\n") == 2 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("consume: %v", err)
	}
	if lines := strings.Split(strings.TrimSpace(out2.String()), "\n"); !strings.HasPrefix(lines[0], "2\t") || !strings.HasSuffix(lines[1], "\tthree") {
		t.Errorf("consumed:\n%s", out2.String())
	}
}
