package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/dataplane/otlpwire"
	"github.com/micromesh/micromesh/internal/rawcodec"
)

// Exporter batches recorded spans and sends them over OTLP/gRPC, as
// OpenTelemetry's batch span processor does: every FlushInterval, or as
// soon as BatchSize spans wait; past MaxQueue waiting spans, new ones are
// dropped (and counted) rather than held: tracing never slows requests or
// grows without bound.
type Exporter struct {
	conn grpc.ClientConnInterface
	res  Resource
	log  *slog.Logger

	mu      sync.Mutex
	queue   []*Span
	kick    chan struct{}
	failing atomic.Bool // exports failing: logged once per change

	exported, dropped, failed atomic.Uint64
}

// Batching bounds.
const (
	MaxQueue      = 2048
	BatchSize     = 512
	FlushInterval = time.Second
	exportTimeout = 10 * time.Second
)

// NewExporter returns an exporter of spans under res; Run sends them.
func NewExporter(res Resource, log *slog.Logger) *Exporter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Exporter{res: res, log: log, kick: make(chan struct{}, 1)}
}

// Record queues s for export; it never blocks.
func (e *Exporter) Record(s *Span) {
	e.mu.Lock()
	if len(e.queue) >= MaxQueue {
		e.mu.Unlock()
		e.dropped.Add(1)
		return
	}
	e.queue = append(e.queue, s)
	full := len(e.queue) >= BatchSize
	e.mu.Unlock()
	if full {
		select {
		case e.kick <- struct{}{}:
		default:
		}
	}
}

// Stats counts spans exported, dropped (the queue full) and lost to
// failed exports.
func (e *Exporter) Stats() (exported, dropped, failed uint64) {
	return e.exported.Load(), e.dropped.Load(), e.failed.Load()
}

// Run exports over conn (calling Export) until ctx ends, then flushes
// what is left (for at most a few seconds). Spans recorded before Run wait
// for it.
func (e *Exporter) Run(ctx context.Context, conn grpc.ClientConnInterface) {
	e.conn = conn
	t := time.NewTicker(FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			for e.pending() > 0 && fctx.Err() == nil {
				if e.Flush(fctx) != nil {
					break
				}
			}
			cancel()
			return
		case <-t.C:
		case <-e.kick:
		}
		for e.pending() > 0 {
			if err := e.Flush(ctx); err != nil {
				break // retried at the next tick
			}
		}
	}
}

func (e *Exporter) pending() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.queue)
}

// Flush sends one batch (up to BatchSize spans) over Run's connection. A
// batch the collector could not take for now (unavailable, overloaded,
// timed out) goes back to the queue's head; one it refused for good is
// dropped and logged.
func (e *Exporter) Flush(ctx context.Context) error {
	e.mu.Lock()
	n := min(len(e.queue), BatchSize)
	batch := e.queue[:n:n]
	e.queue = e.queue[n:]
	e.mu.Unlock()
	if n == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, exportTimeout)
	defer cancel()
	rejected, msg, err := Export(ctx, e.conn, e.res, batch)
	if err != nil {
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted, codes.Canceled:
			e.mu.Lock()
			if room := MaxQueue - len(e.queue); room < n {
				e.dropped.Add(uint64(n - room))
				batch = batch[:room]
			}
			e.queue = append(batch, e.queue...)
			e.mu.Unlock()
		default:
			e.failed.Add(uint64(n))
		}
		if !e.failing.Swap(true) {
			e.log.Warn("exporting spans to the control plane failing", "err", err)
		}
		return fmt.Errorf("export %d spans: %w", n, err)
	}
	if e.failing.Swap(false) {
		e.log.Info("exporting spans again")
	}
	if rejected > 0 {
		e.failed.Add(uint64(rejected))
		e.log.Warn("the collector rejected spans", "spans", rejected, "reason", msg)
		n -= int(min(rejected, int64(n)))
	}
	e.exported.Add(uint64(n))
	return nil
}

// Export sends spans over conn in one OTLP/gRPC call; rejected and msg
// are what the collector refused of them (a partial success).
func Export(ctx context.Context, conn grpc.ClientConnInterface, res Resource, spans []*Span) (rejected int64, msg string, err error) {
	req := AppendExportRequest(nil, res, spans)
	var resp []byte
	if err := conn.Invoke(ctx, ExportMethod, &req, &resp, grpc.ForceCodecV2(rawcodec.Codec{})); err != nil {
		return 0, "", err
	}
	rejected, msg = otlpwire.PartialSuccess(resp)
	return rejected, msg, nil
}
