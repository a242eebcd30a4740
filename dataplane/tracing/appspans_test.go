package tracing

import (
	"errors"
	"strings"
	"testing"

	collectorv1 "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	resourcev1 "go.opentelemetry.io/proto/otlp/resource/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

func str(k, v string) *commonv1.KeyValue {
	return &commonv1.KeyValue{Key: k, Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_StringValue{StringValue: v}}}
}

// An app's export comes out under the sidecar's service and instance,
// everything else as the app sent it: its other resource attributes, its
// scopes, its spans byte for byte (events, links and all).
func TestAppExportKeepsTheAppsSpans(t *testing.T) {
	span := func(name string) *tracev1.Span {
		id := NewSpanID()
		tid := NewTraceID()
		return &tracev1.Span{TraceId: tid[:], SpanId: id[:], Name: name, Kind: tracev1.Span_SPAN_KIND_INTERNAL,
			StartTimeUnixNano: 1, EndTimeUnixNano: 2, Attributes: []*commonv1.KeyValue{str("db.system", "postgresql")},
			Events: []*tracev1.Span_Event{{Name: "retry", TimeUnixNano: 2}}, Flags: 0x101}
	}
	in := &collectorv1.ExportTraceServiceRequest{ResourceSpans: []*tracev1.ResourceSpans{{
		Resource: &resourcev1.Resource{Attributes: []*commonv1.KeyValue{
			str("service.name", "someone-else"), str("telemetry.sdk.language", "go"), str("service.instance.id", "pod-9"),
		}, DroppedAttributesCount: 2},
		ScopeSpans: []*tracev1.ScopeSpans{
			{Scope: &commonv1.InstrumentationScope{Name: "orders", Version: "1.2"}, Spans: []*tracev1.Span{span("load"), span("save")}, SchemaUrl: "https://opentelemetry.io/schemas/1.26.0"},
			{Scope: &commonv1.InstrumentationScope{Name: "sql"}, Spans: []*tracev1.Span{span("query")}},
		},
		SchemaUrl: "https://opentelemetry.io/schemas/1.26.0",
	}}}
	b, err := proto.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	spans, tooLarge, err := ParseAppExport(b)
	if err != nil || tooLarge != 0 || len(spans) != 3 {
		t.Fatalf("ParseAppExport: %d spans, %d too large, %v", len(spans), tooLarge, err)
	}
	var out collectorv1.ExportTraceServiceRequest
	if err := proto.Unmarshal(AppendAppExportRequest(nil, "orders.shop", Resource{Instance: "orders-1"}, spans), &out); err != nil {
		t.Fatal(err)
	}
	if len(out.ResourceSpans) != 2 {
		t.Fatalf("%d ResourceSpans, want 2 (one per scope)", len(out.ResourceSpans))
	}
	for i, rs := range out.ResourceSpans {
		want := &resourcev1.Resource{Attributes: []*commonv1.KeyValue{
			str("service.name", "orders.shop"), str("service.instance.id", "orders-1"), str("telemetry.sdk.language", "go"),
		}, DroppedAttributesCount: 2}
		if !proto.Equal(rs.Resource, want) {
			t.Errorf("resource %d: %v, want %v", i, rs.Resource, want)
		}
		if rs.SchemaUrl != in.ResourceSpans[0].SchemaUrl {
			t.Errorf("resource %d: schema %q", i, rs.SchemaUrl)
		}
		if len(rs.ScopeSpans) != 1 || !proto.Equal(rs.ScopeSpans[0], in.ResourceSpans[0].ScopeSpans[i]) {
			t.Errorf("scope %d: %v, want %v", i, rs.ScopeSpans, in.ResourceSpans[0].ScopeSpans[i])
		}
	}
}

func TestAppExportRefusals(t *testing.T) {
	whole := mustMarshal(t, &collectorv1.ExportTraceServiceRequest{ResourceSpans: []*tracev1.ResourceSpans{{ScopeSpans: []*tracev1.ScopeSpans{{Spans: []*tracev1.Span{{Name: "x"}}}}}}})
	truncated := whole[:len(whole)-1]
	for name, b := range map[string][]byte{
		"not protobuf":          []byte("{\"resourceSpans\":[]}"),
		"a truncated export":    truncated,
		"a malformed resource":  {0x0a, 0x04, 0x0a, 0x02, 0x0a, 0xff},
		"a malformed span body": {0x0a, 0x06, 0x12, 0x04, 0x12, 0x02, 0x0a, 0xff},
	} {
		if _, _, err := ParseAppExport(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	// A span past the bound is counted, the others kept.
	big := &tracev1.Span{Name: strings.Repeat("x", MaxAppSpanBytes)}
	b := mustMarshal(t, &collectorv1.ExportTraceServiceRequest{ResourceSpans: []*tracev1.ResourceSpans{{ScopeSpans: []*tracev1.ScopeSpans{{Spans: []*tracev1.Span{big, {Name: "small"}}}}}}})
	spans, tooLarge, err := ParseAppExport(b)
	if err != nil || tooLarge != 1 || len(spans) != 1 {
		t.Errorf("a span over the bound: %d spans, %d too large, %v", len(spans), tooLarge, err)
	}
	// Nothing to send is not an error.
	if spans, _, err := ParseAppExport(nil); err != nil || len(spans) != 0 {
		t.Errorf("an empty export: %d spans, %v", len(spans), err)
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
