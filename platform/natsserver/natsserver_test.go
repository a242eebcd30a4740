package natsserver

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/micromesh/micromesh/internal/syncbuf"
)

func TestEmbeddedServer(t *testing.T) {
	dir := t.TempDir()
	var logs syncbuf.Buffer
	s, err := Start(dir, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	// The server holds a hash, not the password: NATS has nothing to warn
	// about at start.
	if strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("the embedded server warned at start:\n%s", logs.String())
	}
	if !strings.HasPrefix(s.URL(), "nats://127.0.0.1:") {
		t.Errorf("URL %s: want loopback", s.URL())
	}
	st, err := os.Stat(filepath.Join(dir, "credentials.json"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("credentials: %v %v", st, err)
	}
	// Without the credentials: refused.
	if nc, err := nats.Connect(s.URL(), nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Fatal("connected without credentials")
	}
	nc, err := s.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(); err != nil {
		t.Fatalf("JetStream: %v", err)
	}
	nc.Close()
	first := s.creds
	s.Shutdown()

	// Started again: the same credentials.
	s, err = Start(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if s.creds != first {
		t.Error("new credentials after a restart")
	}
}
