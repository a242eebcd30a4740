package tracing

import (
	"testing"
	"time"

	collectorv1 "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/micromesh/micromesh/internal/otlpwire"
)

// The hand encoding agrees with OpenTelemetry's own types, field by field.
func TestExportRequestAgreesWithOTLP(t *testing.T) {
	start := time.Unix(1700000000, 123456789)
	root := &Span{TraceID: NewTraceID(), SpanID: NewSpanID(), Service: "web.default", Name: "GET /", Kind: KindClient,
		Start: start, End: start.Add(3 * time.Millisecond), Attrs: []Attr{String("http.request.method", "GET"), Int("http.response.status_code", 200)}}
	child := &Span{TraceID: root.TraceID, SpanID: NewSpanID(), Parent: root.SpanID, Service: "api.default", Name: "helloworld.Helloworld/Call",
		Kind: KindServer, Start: start.Add(time.Millisecond), End: start.Add(2 * time.Millisecond), Error: true, Message: "micromesh: the app is not answering"}
	other := &Span{TraceID: root.TraceID, SpanID: NewSpanID(), Parent: root.SpanID, Service: "web.default", Kind: KindClient, Start: start, End: start}

	b := AppendExportRequest(nil, Resource{Instance: "web-1", SDK: "micromesh-sidecar"}, []*Span{root, child, other})
	var req collectorv1.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		t.Fatal(err)
	}
	if len(req.ResourceSpans) != 2 {
		t.Fatalf("%d resource spans, want 2 (one per service)", len(req.ResourceSpans))
	}
	web := req.ResourceSpans[0]
	attrs := map[string]string{}
	for _, kv := range web.Resource.Attributes {
		attrs[kv.Key] = kv.Value.GetStringValue()
	}
	if attrs["service.name"] != "web.default" || attrs["service.instance.id"] != "web-1" || attrs["telemetry.sdk.name"] != "micromesh-sidecar" {
		t.Errorf("resource attributes %v", attrs)
	}
	if got := web.ScopeSpans[0].Scope.Name; got != "micromesh.proxy" {
		t.Errorf("scope %q", got)
	}
	spans := web.ScopeSpans[0].Spans
	if len(spans) != 2 {
		t.Fatalf("web has %d spans, want 2", len(spans))
	}
	s := spans[0]
	if string(s.TraceId) != string(root.TraceID[:]) || string(s.SpanId) != string(root.SpanID[:]) || len(s.ParentSpanId) != 0 {
		t.Errorf("ids: %x %x %x", s.TraceId, s.SpanId, s.ParentSpanId)
	}
	if s.Name != "GET /" || s.Kind != tracev1.Span_SPAN_KIND_CLIENT {
		t.Errorf("name %q kind %v", s.Name, s.Kind)
	}
	if s.StartTimeUnixNano != uint64(start.UnixNano()) || s.EndTimeUnixNano != uint64(start.Add(3*time.Millisecond).UnixNano()) {
		t.Errorf("times %d %d", s.StartTimeUnixNano, s.EndTimeUnixNano)
	}
	if len(s.Attributes) != 2 || s.Attributes[0].Key != "http.request.method" || s.Attributes[0].Value.GetStringValue() != "GET" ||
		s.Attributes[1].Value.GetIntValue() != 200 {
		t.Errorf("attributes %v", s.Attributes)
	}
	if s.Status != nil {
		t.Errorf("status %v on a span that did not fail", s.Status)
	}
	if s.Flags&0xff != 1 || s.Flags&0x100 == 0 || s.Flags&0x200 != 0 {
		t.Errorf("flags %#x of a root", s.Flags)
	}
	c := req.ResourceSpans[1].ScopeSpans[0].Spans[0]
	if string(c.ParentSpanId) != string(root.SpanID[:]) || c.Kind != tracev1.Span_SPAN_KIND_SERVER || c.Flags&0x200 == 0 {
		t.Errorf("child: parent %x kind %v flags %#x", c.ParentSpanId, c.Kind, c.Flags)
	}
	if c.Status.GetCode() != tracev1.Status_STATUS_CODE_ERROR || c.Status.GetMessage() != child.Message {
		t.Errorf("child status %v", c.Status)
	}
}

func TestPartialSuccess(t *testing.T) {
	b, err := proto.Marshal(&collectorv1.ExportTraceServiceResponse{PartialSuccess: &collectorv1.ExportTracePartialSuccess{RejectedSpans: 3, ErrorMessage: "too old"}})
	if err != nil {
		t.Fatal(err)
	}
	if n, msg := otlpwire.PartialSuccess(b); n != 3 || msg != "too old" {
		t.Errorf("partialSuccess = %d, %q", n, msg)
	}
	if n, _ := otlpwire.PartialSuccess(nil); n != 0 {
		t.Errorf("empty answer: %d rejected", n)
	}
}
