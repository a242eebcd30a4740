package traces

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/url"
	"sync/atomic"
	"time"

	collectorv1 "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Forwarder sends the spans the control plane keeps on to another OTLP/gRPC
// collector (Jaeger, Tempo, an OpenTelemetry Collector), in the background:
// a bounded queue, a few tries with backoff for a collector that is away,
// and spans dropped (and counted) rather than held when it stays away — the
// control plane's own copy is the one that must not be lost.
type Forwarder struct {
	endpoint string
	conn     *grpc.ClientConn
	client   collectorv1.TraceServiceClient
	log      *slog.Logger
	queue    chan *collectorv1.ExportTraceServiceRequest
	failing  atomic.Bool

	forwarded, dropped atomic.Uint64
}

// forwardQueue bounds the export requests waiting to be forwarded.
const forwardQueue = 256

// ParseForward checks a collector's endpoint as OpenTelemetry's exporters
// name it: http://HOST:PORT (plaintext) or https://HOST:PORT (TLS, the
// system's roots).
func ParseForward(endpoint string) (target string, secure bool, err error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
		return "", false, fmt.Errorf("%q: want http://HOST:PORT (plaintext) or https://HOST:PORT (TLS), an OTLP/gRPC collector such as Jaeger's or the OpenTelemetry Collector's :4317", endpoint)
	}
	return u.Host, u.Scheme == "https", nil
}

// NewForwarder returns a forwarder to endpoint (see ParseForward); Run
// sends.
func NewForwarder(endpoint string, log *slog.Logger) (*Forwarder, error) {
	target, secure, err := ParseForward(endpoint)
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if secure {
		creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("traces forward %s: %w", endpoint, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Forwarder{endpoint: endpoint, conn: conn, client: collectorv1.NewTraceServiceClient(conn),
		log: log.With("component", "traces-forward", "endpoint", endpoint), queue: make(chan *collectorv1.ExportTraceServiceRequest, forwardQueue)}, nil
}

// Stats counts spans forwarded and dropped.
func (f *Forwarder) Stats() (forwarded, dropped uint64) { return f.forwarded.Load(), f.dropped.Load() }

// offer queues req; it never blocks.
func (f *Forwarder) offer(req *collectorv1.ExportTraceServiceRequest) {
	select {
	case f.queue <- req:
	default:
		f.dropped.Add(uint64(spanCount(req)))
	}
}

func spanCount(req *collectorv1.ExportTraceServiceRequest) int {
	n := 0
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			n += len(ss.Spans)
		}
	}
	return n
}

// Run forwards until ctx ends, then closes the connection.
func (f *Forwarder) Run(ctx context.Context) {
	defer f.conn.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case req := <-f.queue:
			f.send(ctx, req)
		}
	}
}

// send tries req up to three times while the collector is unavailable.
func (f *Forwarder) send(ctx context.Context, req *collectorv1.ExportTraceServiceRequest) {
	n := uint64(spanCount(req))
	wait := 100 * time.Millisecond
	for try := 1; ; try++ {
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := f.client.Export(tctx, req)
		cancel()
		if err == nil {
			f.forwarded.Add(n)
			if f.failing.Swap(false) {
				f.log.Info("forwarding spans again")
			}
			return
		}
		retry := status.Code(err) == codes.Unavailable || status.Code(err) == codes.DeadlineExceeded || status.Code(err) == codes.ResourceExhausted
		if !retry || try == 3 || ctx.Err() != nil {
			f.dropped.Add(n)
			if !f.failing.Swap(true) {
				f.log.Warn("forwarding spans failing; they are dropped until it works (the control plane keeps its own copy)", "err", err)
			}
			return
		}
		select {
		case <-ctx.Done():
			f.dropped.Add(n)
			return
		case <-time.After(wait):
		}
		wait *= 4
	}
}
