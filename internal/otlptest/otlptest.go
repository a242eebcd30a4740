// Package otlptest is an OTLP/gRPC trace collector on loopback for tests:
// what Jaeger, Tempo or an OpenTelemetry Collector serve on :4317, keeping
// what it receives.
package otlptest

import (
	"context"
	"net"
	"sync"
	"testing"

	collectorv1 "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	otlptracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Receiver keeps the export requests it gets; it answers its first Refuse
// ones UNAVAILABLE (a collector still starting).
type Receiver struct {
	collectorv1.UnimplementedTraceServiceServer
	Endpoint string // http://127.0.0.1:PORT

	mu     sync.Mutex
	refuse int
	got    []*collectorv1.ExportTraceServiceRequest
}

// Start serves a receiver on loopback until the test ends; it refuses its
// first refuse exports.
func Start(t testing.TB, refuse int) *Receiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{Endpoint: "http://" + ln.Addr().String(), refuse: refuse}
	srv := grpc.NewServer()
	collectorv1.RegisterTraceServiceServer(srv, r)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return r
}

// Export keeps req.
func (r *Receiver) Export(_ context.Context, req *collectorv1.ExportTraceServiceRequest) (*collectorv1.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refuse > 0 {
		r.refuse--
		return nil, status.Error(codes.Unavailable, "starting")
	}
	r.got = append(r.got, req)
	return &collectorv1.ExportTraceServiceResponse{}, nil
}

// Span is a received span with its resource's service.name.
type Span struct {
	Service string
	*otlptracev1.Span
}

// Spans returns every span received so far.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Span
	for _, req := range r.got {
		for _, rs := range req.ResourceSpans {
			svc := ""
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.Key == "service.name" {
					svc = kv.Value.GetStringValue()
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					out = append(out, Span{Service: svc, Span: sp})
				}
			}
		}
	}
	return out
}
