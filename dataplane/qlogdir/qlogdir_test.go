package qlogdir_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"

	"github.com/micromesh/micromesh/dataplane/qlogdir"
	"github.com/micromesh/micromesh/internal/syncbuf"
)

func TestTraceFileIsPrivateAndFlushedOnClose(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "traces")
	odcid := quic.ConnectionIDFromBytes([]byte{1, 2, 3, 4})
	tr := qlogdir.Tracer(dir, slog.New(slog.DiscardHandler))(context.Background(), false, odcid)
	if tr == nil {
		t.Fatal("no trace")
	}
	rec := tr.AddProducer()
	rec.RecordEvent(qlog.ConnectionClosed{Initiator: qlog.InitiatorLocal})
	if err := rec.Close(); err != nil { // the connection ends: the trace is written out
		t.Fatal(err)
	}
	path := filepath.Join(dir, "01020304_server.sqlog")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"vantage_point":{"type":"server"}`) || !strings.Contains(string(data), "transport:connection_closed") {
		t.Errorf("trace %s:\n%s", path, data)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		if fi, err := os.Stat(p); err != nil {
			t.Error(err)
		} else if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", p, fi.Mode().Perm(), want)
		}
	}
}

func TestUnwritableDirLeavesTheConnectionUntraced(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	tr := qlogdir.Tracer(file, slog.New(slog.NewTextHandler(&logs, nil)))(context.Background(), true, quic.ConnectionIDFromBytes([]byte{9}))
	if tr != nil {
		t.Error("a trace for a directory that cannot exist")
	}
	if !strings.Contains(logs.String(), "runs untraced") {
		t.Errorf("log: %q", logs.String())
	}
}
