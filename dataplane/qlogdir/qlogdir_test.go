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
	tracer, err := qlogdir.Tracer(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	tr := tracer(context.Background(), false, odcid)
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

// A directory that cannot be made is an error at once (the sidecar does
// not start); a trace file that cannot be made later leaves that
// connection untraced, with a warning.
func TestTraceDirAndFileFailures(t *testing.T) {
	file := filepath.Join(t.TempDir(), "not-a-dir")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := qlogdir.Tracer(file, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("a tracer for a directory that cannot exist")
	}

	dir := t.TempDir()
	var logs syncbuf.Buffer
	tracer, err := qlogdir.Tracer(dir, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "09_client.sqlog"), nil, 0o600); err != nil { // taken
		t.Fatal(err)
	}
	if tr := tracer(context.Background(), true, quic.ConnectionIDFromBytes([]byte{9})); tr != nil {
		t.Error("a trace over an existing file")
	}
	if !strings.Contains(logs.String(), "runs untraced") {
		t.Errorf("log: %q", logs.String())
	}
}
