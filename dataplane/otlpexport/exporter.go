// Package otlpexport batches what the sidecar sends the control plane over
// OTLP/gRPC — spans, access log records — as OpenTelemetry's batch
// processors do: every FlushInterval, or as soon as BatchSize wait; past
// MaxQueue waiting, new ones are dropped (and counted) rather than held:
// telemetry never slows requests or grows without bound.
package otlpexport

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

	"github.com/micromesh/micromesh/internal/otlpwire"
	"github.com/micromesh/micromesh/internal/rawcodec"
)

// Exporter batches records of type T and sends each batch, encoded as
// one export request, to an OTLP/gRPC method.
type Exporter[T any] struct {
	what   string // "spans", "access log records": for logs
	method string
	encode func([]T) []byte
	conn   grpc.ClientConnInterface
	log    *slog.Logger

	// size, when set, bounds the queue and each batch in bytes too
	// (LimitBytes): records of very different sizes, an app's spans.
	size                    func(T) int
	maxBytes, maxBatchBytes int

	mu      sync.Mutex
	queue   []T
	bytes   int // the queue's, when size is set
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

// New returns an exporter of what (for its logs) to method, each batch
// encoded by encode; Run sends them.
func New[T any](what, method string, encode func([]T) []byte, log *slog.Logger) *Exporter[T] {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Exporter[T]{what: what, method: method, encode: encode, log: log, kick: make(chan struct{}, 1)}
}

// LimitBytes bounds the queue to maxBytes and each batch to batchBytes
// (a record larger than that goes alone), size telling a record's; call
// it before the first Record.
func (e *Exporter[T]) LimitBytes(maxBytes, batchBytes int, size func(T) int) {
	e.size, e.maxBytes, e.maxBatchBytes = size, maxBytes, batchBytes
}

// Record queues s for export; it never blocks.
func (e *Exporter[T]) Record(s T) { e.Offer(s) }

// Offer queues s for export and reports whether it was queued: not when
// the queue is full (then s is dropped and counted). It never blocks.
func (e *Exporter[T]) Offer(s T) bool {
	n := 0
	if e.size != nil {
		n = e.size(s)
	}
	e.mu.Lock()
	if len(e.queue) >= MaxQueue || (e.size != nil && e.bytes+n > e.maxBytes) {
		e.mu.Unlock()
		e.dropped.Add(1)
		return false
	}
	e.queue = append(e.queue, s)
	e.bytes += n
	full := len(e.queue) >= BatchSize || (e.size != nil && e.bytes >= e.maxBatchBytes)
	e.mu.Unlock()
	if full {
		select {
		case e.kick <- struct{}{}:
		default:
		}
	}
	return true
}

// CountDropped counts n records dropped before they reached the queue
// (too large to send, say).
func (e *Exporter[T]) CountDropped(n int) { e.dropped.Add(uint64(n)) }

// Stats counts records exported, dropped (the queue full) and lost to
// failed exports.
func (e *Exporter[T]) Stats() (exported, dropped, failed uint64) {
	return e.exported.Load(), e.dropped.Load(), e.failed.Load()
}

// Run exports over conn (calling Export) until ctx ends, then flushes
// what is left (for at most a few seconds). Records recorded before Run
// wait for it.
func (e *Exporter[T]) Run(ctx context.Context, conn grpc.ClientConnInterface) {
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

// takeBytes is how many of the queue's first n records make a batch
// within maxBatchBytes (at least one), their bytes leaving the queue's
// count. e.mu is held.
func (e *Exporter[T]) takeBytes(n int) int {
	sum := 0
	for i := range n {
		m := e.size(e.queue[i])
		if i > 0 && sum+m > e.maxBatchBytes {
			e.bytes -= sum
			return i
		}
		sum += m
	}
	e.bytes -= sum
	return n
}

// requeue puts back at the queue's head a batch the collector could not
// take for now, as much of it as the bounds leave room for (the rest is
// dropped and counted).
func (e *Exporter[T]) requeue(batch []T) {
	e.mu.Lock()
	defer e.mu.Unlock()
	keep := min(len(batch), MaxQueue-len(e.queue))
	if e.size != nil {
		sum := 0
		for i := range keep {
			m := e.size(batch[i])
			if e.bytes+sum+m > e.maxBytes {
				keep = i
				break
			}
			sum += m
		}
		e.bytes += sum
	}
	e.dropped.Add(uint64(len(batch) - keep))
	e.queue = append(batch[:keep:keep], e.queue...)
}

func (e *Exporter[T]) pending() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.queue)
}

// Flush sends one batch (up to BatchSize records) over Run's connection. A
// batch the collector could not take for now (unavailable, overloaded,
// timed out) goes back to the queue's head; one it refused for good is
// dropped and logged.
func (e *Exporter[T]) Flush(ctx context.Context) error {
	e.mu.Lock()
	n := min(len(e.queue), BatchSize)
	if e.size != nil {
		n = e.takeBytes(n)
	}
	batch := e.queue[:n:n]
	e.queue = e.queue[n:]
	e.mu.Unlock()
	if n == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, exportTimeout)
	defer cancel()
	rejected, msg, err := Export(ctx, e.conn, e.method, e.encode(batch))
	if err != nil {
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted, codes.Canceled:
			e.requeue(batch)
		default:
			e.failed.Add(uint64(n))
		}
		if !e.failing.Swap(true) {
			e.log.Warn("exporting "+e.what+" to the control plane failing", "err", err)
		}
		return fmt.Errorf("export %d %s: %w", n, e.what, err)
	}
	if e.failing.Swap(false) {
		e.log.Info("exporting " + e.what + " again")
	}
	if rejected > 0 {
		e.failed.Add(uint64(rejected))
		e.log.Warn("the collector rejected "+e.what, "rejected", rejected, "reason", msg)
		n -= int(min(rejected, int64(n)))
	}
	e.exported.Add(uint64(n))
	return nil
}

// Export sends an encoded export request to method over conn in one call;
// rejected and msg are what the collector refused of it (a partial
// success).
func Export(ctx context.Context, conn grpc.ClientConnInterface, method string, req []byte) (rejected int64, msg string, err error) {
	var resp []byte
	if err := conn.Invoke(ctx, method, &req, &resp, grpc.ForceCodecV2(rawcodec.Codec{})); err != nil {
		return 0, "", err
	}
	rejected, msg = otlpwire.PartialSuccess(resp)
	return rejected, msg, nil
}
