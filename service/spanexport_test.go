package service

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	collectorv1 "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

// collector is an OTLP/HTTP collector decoding with OpenTelemetry's
// generated types; answers are given in turn (then 200s).
type collector struct {
	mu       sync.Mutex
	requests []*collectorv1.ExportTraceServiceRequest
	headers  []http.Header
	answers  []int
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	defer c.mu.Unlock()
	code := 200
	if len(c.answers) > 0 {
		code, c.answers = c.answers[0], c.answers[1:]
	}
	if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
		code = 404
	}
	c.headers = append(c.headers, r.Header)
	if code != 200 {
		st, _ := proto.Marshal(&spb.Status{Code: 14, Message: "not now: " + http.StatusText(code)})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(code)
		w.Write(st)
		return
	}
	req := &collectorv1.ExportTraceServiceRequest{}
	if err := proto.Unmarshal(b, req); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	c.requests = append(c.requests, req)
	w.Header().Set("Content-Type", "application/x-protobuf")
}

func startCollector(t *testing.T, answers ...int) (*collector, string) {
	c := &collector{answers: answers}
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	return c, srv.URL
}

func str(k, v string) *commonv1.KeyValue {
	return &commonv1.KeyValue{Key: k, Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_StringValue{StringValue: v}}}
}

// The hand encoding agrees with OpenTelemetry's generated types, field by
// field: every attribute type, events, links, status, parent and flags.
func TestSpanExporterAgreesWithOTLP(t *testing.T) {
	c, url := startCollector(t)
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url+"/v1/traces")
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=a%20b, x-other=1")
	exp, err := newSpanExporter()
	if err != nil {
		t.Fatal(err)
	}
	res := resource.NewWithAttributes("https://opentelemetry.io/schemas/1.26.0", attribute.String("service.name", "orders.shop"))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithResource(res))
	tracer := tp.Tracer("orders", trace.WithInstrumentationVersion("1.2"), trace.WithInstrumentationAttributes(attribute.Bool("scoped", true)))

	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5}, TraceFlags: trace.FlagsSampled, Remote: true})
	linked := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{9}, SpanID: trace.SpanID{8}, TraceFlags: trace.FlagsSampled})
	start := time.Unix(1700000000, 5)
	ctx, span := tracer.Start(trace.ContextWithRemoteSpanContext(context.Background(), parent), "load order",
		trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(start),
		trace.WithLinks(trace.Link{SpanContext: linked, Attributes: []attribute.KeyValue{attribute.String("why", "batch")}}),
		trace.WithAttributes(
			attribute.String("s", "x"), attribute.String("empty", ""), attribute.Bool("b", true), attribute.Int64("i", -7),
			attribute.Float64("f", 1.5), attribute.StringSlice("ss", []string{"a", "b"}), attribute.Int64Slice("is", []int64{1, 2}),
			attribute.BoolSlice("bs", []bool{true, false}), attribute.Float64Slice("fs", []float64{0.5})))
	span.AddEvent("retry", trace.WithTimestamp(start.Add(time.Millisecond)), trace.WithAttributes(attribute.Int("try", 2)))
	span.SetStatus(codes.Error, "no such order")
	_, child := tracer.Start(ctx, "query", trace.WithTimestamp(start.Add(2*time.Millisecond)))
	child.End(trace.WithTimestamp(start.Add(3 * time.Millisecond)))
	span.End(trace.WithTimestamp(start.Add(4 * time.Millisecond)))
	if err := tp.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.requests) != 2 {
		t.Fatalf("%d exports, want 2 (a syncer sends each span)", len(c.requests))
	}
	if h := c.headers[0]; h.Get("X-Tenant") != "a b" || h.Get("X-Other") != "1" {
		t.Errorf("headers %v: want OTEL_EXPORTER_OTLP_HEADERS's", h)
	}
	childSpan, parentSpan := c.requests[0].ResourceSpans[0], c.requests[1].ResourceSpans[0]
	sid := span.SpanContext().SpanID()
	ptid := parent.TraceID()
	csid := child.SpanContext().SpanID()
	want := &tracev1.Span{
		TraceId: ptid[:], SpanId: sid[:], ParentSpanId: []byte{4, 5, 0, 0, 0, 0, 0, 0},
		Name: "load order", Kind: tracev1.Span_SPAN_KIND_CLIENT,
		StartTimeUnixNano: uint64(start.UnixNano()), EndTimeUnixNano: uint64(start.Add(4 * time.Millisecond).UnixNano()),
		Attributes: []*commonv1.KeyValue{
			str("s", "x"), str("empty", ""),
			{Key: "b", Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_BoolValue{BoolValue: true}}},
			{Key: "i", Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_IntValue{IntValue: -7}}},
			{Key: "f", Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_DoubleValue{DoubleValue: 1.5}}},
			{Key: "ss", Value: array(&commonv1.AnyValue{Value: &commonv1.AnyValue_StringValue{StringValue: "a"}}, &commonv1.AnyValue{Value: &commonv1.AnyValue_StringValue{StringValue: "b"}})},
			{Key: "is", Value: array(&commonv1.AnyValue{Value: &commonv1.AnyValue_IntValue{IntValue: 1}}, &commonv1.AnyValue{Value: &commonv1.AnyValue_IntValue{IntValue: 2}})},
			{Key: "bs", Value: array(&commonv1.AnyValue{Value: &commonv1.AnyValue_BoolValue{BoolValue: true}}, &commonv1.AnyValue{Value: &commonv1.AnyValue_BoolValue{BoolValue: false}})},
			{Key: "fs", Value: array(&commonv1.AnyValue{Value: &commonv1.AnyValue_DoubleValue{DoubleValue: 0.5}})},
		},
		Events: []*tracev1.Span_Event{{TimeUnixNano: uint64(start.Add(time.Millisecond).UnixNano()), Name: "retry",
			Attributes: []*commonv1.KeyValue{{Key: "try", Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_IntValue{IntValue: 2}}}}}},
		Links: []*tracev1.Span_Link{{TraceId: []byte{9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, SpanId: []byte{8, 0, 0, 0, 0, 0, 0, 0},
			Attributes: []*commonv1.KeyValue{str("why", "batch")}, Flags: 0x101}},
		Status: &tracev1.Status{Code: tracev1.Status_STATUS_CODE_ERROR, Message: "no such order"},
		Flags:  0x301, // sampled, its parent remote
	}
	// The SDK sorts a span's attributes; compare them as sets.
	opts := []cmp.Option{protocmp.Transform(), protocmp.SortRepeated(func(a, b *commonv1.KeyValue) bool { return a.Key < b.Key })}
	if diff := cmp.Diff(want, parentSpan.ScopeSpans[0].Spans[0], opts...); diff != "" {
		t.Errorf("the span as the collector read it (-want +got):\n%s", diff)
	}
	got := childSpan.ScopeSpans[0].Spans[0]
	if string(got.SpanId) != string(csid[:]) || string(got.ParentSpanId) != string(sid[:]) || got.Flags != 0x101 || got.Kind != tracev1.Span_SPAN_KIND_INTERNAL {
		t.Errorf("child span: parent %x flags %#x kind %v", got.ParentSpanId, got.Flags, got.Kind)
	}
	if diff := cmp.Diff(&commonv1.InstrumentationScope{Name: "orders", Version: "1.2",
		Attributes: []*commonv1.KeyValue{{Key: "scoped", Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_BoolValue{BoolValue: true}}}}},
		parentSpan.ScopeSpans[0].Scope, protocmp.Transform()); diff != "" {
		t.Errorf("scope (-want +got):\n%s", diff)
	}
	if parentSpan.SchemaUrl != res.SchemaURL() || len(parentSpan.Resource.Attributes) != 1 || parentSpan.Resource.Attributes[0].Value.GetStringValue() != "orders.shop" {
		t.Errorf("resource %v, schema %q", parentSpan.Resource, parentSpan.SchemaUrl)
	}
}

func array(vs ...*commonv1.AnyValue) *commonv1.AnyValue {
	return &commonv1.AnyValue{Value: &commonv1.AnyValue_ArrayValue{ArrayValue: &commonv1.ArrayValue{Values: vs}}}
}

// A collector that cannot take an export for now gets it again (three
// tries in all); one that refuses it is told once, its reason in the
// error.
func TestSpanExporterRetries(t *testing.T) {
	span := func() []sdktrace.ReadOnlySpan {
		tp := sdktrace.NewTracerProvider()
		_, s := tp.Tracer("t").Start(context.Background(), "x")
		s.End()
		return []sdktrace.ReadOnlySpan{s.(sdktrace.ReadOnlySpan)}
	}
	for _, c := range []struct {
		name    string
		answers []int
		tries   int
		err     string
	}{
		{"unavailable, then taken", []int{503, 502}, 3, ""},
		{"unavailable throughout", []int{503, 503, 503, 503}, 3, "503 Service Unavailable: not now"},
		{"refused", []int{400}, 1, "400 Bad Request: not now: Bad Request"},
	} {
		col, url := startCollector(t, c.answers...)
		t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url+"/v1/traces")
		exp, err := newSpanExporter()
		if err != nil {
			t.Fatal(err)
		}
		err = exp.ExportSpans(context.Background(), span())
		if (c.err == "" && err != nil) || (c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err))) {
			t.Errorf("%s: %v, want %q", c.name, err, c.err)
		}
		if col.mu.Lock(); len(col.headers) != c.tries {
			t.Errorf("%s: %d tries, want %d", c.name, len(col.headers), c.tries)
		}
		col.mu.Unlock()
	}
	// Nothing listening: tried three times, the error says where.
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:1/v1/traces")
	exp, _ := newSpanExporter()
	if err := exp.ExportSpans(context.Background(), span()); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("no collector: %v", err)
	}
	// A cancelled export stops.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := exp.ExportSpans(ctx, span()); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestSpanExporterRefusesBadSettings(t *testing.T) {
	for name, env := range map[string][2]string{
		"https":          {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://collector:4318/v1/traces"},
		"not a URL":      {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318"},
		"a bad header":   {"OTEL_EXPORTER_OTLP_HEADERS", "novalue"},
		"a bad timeout":  {"OTEL_EXPORTER_OTLP_TIMEOUT", "10s"},
		"no endpoint":    {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ""},
		"base with path": {"", ""},
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/traces")
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
			if name == "base with path" {
				t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
				t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")
				exp, err := newSpanExporter()
				if err != nil || exp.url != "http://127.0.0.1:4318/v1/traces" {
					t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT: %v %v", exp, err)
				}
				return
			}
			t.Setenv(env[0], env[1])
			if _, err := newSpanExporter(); err == nil {
				t.Errorf("%s=%q accepted", env[0], env[1])
			}
		})
	}
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4317")
	if _, err := startTracing(context.Background(), "x"); err == nil || !strings.Contains(err.Error(), "NoTracing") {
		t.Errorf("protocol grpc: %v, want a refusal naming NoTracing", err)
	}
}
