package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/syncbuf"
)

func TestBrokerCommands(t *testing.T) {
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	cp.StartPlatform()
	home := string(env.Home)

	// subscribe runs until interrupted; it prints one message per line.
	out, errOut := &syncbuf.Buffer{}, &syncbuf.Buffer{}
	cmd := NewRootCommand(Streams{In: strings.NewReader(""), Out: out, Err: errOut})
	cmd.SetArgs([]string{"--home", home, "broker", "subscribe", "orders.created", "-n", "shop"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	waitFor(t, func() bool {
		select {
		case err := <-done:
			t.Fatalf("subscribe ended: %v\n%s", err, errOut.String())
		default:
		}
		return strings.Contains(errOut.String(), "subscribed to orders.created")
	})
	for _, m := range []string{"first", "second"} {
		if _, err := runCLI(t, "--home", home, "broker", "publish", "orders.created", m, "-n", "shop"); err != nil {
			t.Fatal(err)
		}
	}
	// Another namespace's topic of the same name is another topic.
	if _, err := runCLI(t, "--home", home, "broker", "publish", "orders.created", "elsewhere", "-n", "other"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return out.String() == "first\nsecond\n" })
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("subscribe after Ctrl-C: %v", err)
	}
	if got := out.String(); got != "first\nsecond\n" {
		t.Errorf("subscriber printed %q", got)
	}
	if _, err := runCLI(t, "--home", home, "broker", "publish", "bad topic", "x"); err == nil || !strings.Contains(describe(err), "InvalidArgument") {
		t.Errorf("bad topic: %v", err)
	}
}
