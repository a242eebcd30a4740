// Package qlogdir writes a qlog trace (draft-ietf-quic-qlog, JSON-SEQ) of
// every QUIC connection a sidecar opens or accepts into a directory: the
// packets and frames each side sent and received, with timings, loss
// recovery and congestion state — what qvis (qvis.quictools.info) and the
// field's QUIC tooling read. It is for debugging: a trace costs CPU per
// packet and grows without bound while the connection lives.
package qlogdir

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlogwriter"
)

// Tracer creates dir (0700) if needed and returns a quic.Config Tracer
// writing <dir>/<odcid>_<client|server>.sqlog into it (mode 0600). A
// trace file that cannot be created later is logged, and that connection
// runs untraced.
func Tracer(dir string, log *slog.Logger) (func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("qlog directory: %w", err)
	}
	return func(_ context.Context, isClient bool, odcid quic.ConnectionID) qlogwriter.Trace {
		side := "server"
		if isClient {
			side = "client"
		}
		path := filepath.Join(dir, fmt.Sprintf("%s_%s.sqlog", odcid, side))
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			log.Warn("qlog: cannot create the trace file; the connection runs untraced", "path", path, "err", err)
			return nil
		}
		seq := qlogwriter.NewConnectionFileSeq(&flushCloser{bufio.NewWriter(f), f}, isClient, odcid)
		go seq.Run()
		return seq
	}, nil
}

// flushCloser flushes its buffer when the trace ends (the connection closed).
type flushCloser struct {
	*bufio.Writer
	f *os.File
}

func (w *flushCloser) Close() error {
	if err := w.Flush(); err != nil {
		_ = w.f.Close()
		return err
	}
	return w.f.Close()
}
