package dataplane_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	otlpcollector "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	otlpcommon "go.opentelemetry.io/proto/otlp/common/v1"
	otlpresource "go.opentelemetry.io/proto/otlp/resource/v1"
	otlptrace "go.opentelemetry.io/proto/otlp/trace/v1"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/micromesh/micromesh/dataplane/tracing"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/otlptest"
	tracev1 "github.com/micromesh/micromesh/proto/trace/v1"
)

// A traced request through two sidecars: the caller's sidecar records a
// CLIENT span, the callee's a SERVER span under it, the app receives a
// traceparent naming the SERVER span (so its own calls continue the trace),
// and both spans reach the control plane over OTLP — and through it, the
// collector it forwards to.
func TestTracedRequestThroughTheMesh(t *testing.T) {
	jaeger := otlptest.Start(t, 0)
	cp := meshtest.NewEnv(t).StartControlPlane(meshtest.WithTracing(100), meshtest.WithTracesForward(jaeger.Endpoint))
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
	cp.StartSidecar("default", "b", meshtest.WithApp(startEcho(t, "b"), "http"))
	waitFor(t, "a can reach b", func() bool {
		resp, _ := call(t, a.Info.Outbound, "b", "/warm", nil)
		return resp.StatusCode == 200
	})

	// A caller's own trace context is continued: its trace, its span as
	// the parent of a's CLIENT span.
	parent := tracing.Context{TraceID: tracing.NewTraceID(), SpanID: tracing.NewSpanID(), Sampled: true}
	resp, reply := call(t, a.Info.Outbound, "b", "/traced", http.Header{"Traceparent": {parent.String()}, "Tracestate": {"vendor=1"}, "X-Echo-Trace": {"1"}})
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	got, ok := tracing.Parse(reply.Traceparent)
	if !ok || got.TraceID != parent.TraceID || !got.Sampled || got.SpanID == parent.SpanID {
		t.Fatalf("the app received traceparent %q; want trace %s, sampled, a span of the sidecars'", reply.Traceparent, parent.TraceIDString())
	}

	tc := cp.TraceClient()
	var spans []*tracev1.Span
	waitFor(t, "both spans at the control plane", func() bool {
		r, err := tc.GetTrace(context.Background(), &tracev1.GetTraceRequest{TraceId: parent.TraceIDString()})
		if err != nil {
			return false
		}
		spans = r.Spans
		return len(spans) == 2
	})
	var client, server *tracev1.Span
	for _, s := range spans {
		switch s.Kind {
		case tracev1.Kind_KIND_CLIENT:
			client = s
		case tracev1.Kind_KIND_SERVER:
			server = s
		}
	}
	if client == nil || server == nil {
		t.Fatalf("spans %v: want a CLIENT and a SERVER span", spans)
	}
	if client.Service != "a.default" || client.ParentSpanId != hex.EncodeToString(parent.SpanID[:]) || client.Name != "POST /traced" {
		t.Errorf("client span: service %q parent %q name %q", client.Service, client.ParentSpanId, client.Name)
	}
	if server.Service != "b.default" || server.ParentSpanId != client.SpanId {
		t.Errorf("server span: service %q parent %q, want b.default under %s", server.Service, server.ParentSpanId, client.SpanId)
	}
	if server.SpanId != hex.EncodeToString(got.SpanID[:]) {
		t.Errorf("the app's traceparent names span %x, the server span is %s", got.SpanID, server.SpanId)
	}
	for k, want := range map[string]string{"http.response.status_code": "200", "micromesh.transport": "quic", "micromesh.caller": "a.default", "url.path": "/traced"} {
		if server.Attributes[k] != want {
			t.Errorf("server span %s = %q, want %q", k, server.Attributes[k], want)
		}
	}
	if client.Attributes["upstream_cluster"] != "b.default" || client.Attributes["server.address"] != "b" {
		t.Errorf("client span attributes %v", client.Attributes)
	}
	if client.Error || server.Error {
		t.Error("a 200 recorded as an error")
	}
	waitFor(t, "the spans at the collector the control plane forwards to", func() bool {
		n := 0
		for _, s := range jaeger.Spans() {
			if string(s.TraceId) == string(parent.TraceID[:]) && (s.Service == "a.default" || s.Service == "b.default") {
				n++
			}
		}
		return n == 2
	})
	if server.Start.AsTime().Before(client.Start.AsTime()) || server.Duration.AsDuration() > client.Duration.AsDuration() {
		t.Errorf("the server span (%v, %v) is not within the client's (%v, %v)", server.Start.AsTime(), server.Duration.AsDuration(), client.Start.AsTime(), client.Duration.AsDuration())
	}

	// A failure is recorded as one, with the proxy's reason.
	resp, _ = call(t, a.Info.Outbound, "nosuch", "/", http.Header{"Traceparent": {tracing.Context{TraceID: tracing.NewTraceID(), SpanID: tracing.NewSpanID(), Sampled: true}.String()}})
	if resp.StatusCode != 503 {
		t.Fatalf("unknown service: status %d", resp.StatusCode)
	}
	waitFor(t, "the failed request's trace", func() bool {
		l, err := tc.ListTraces(context.Background(), &tracev1.ListTracesRequest{Service: "a", ErrorsOnly: true})
		if err != nil || len(l.Traces) == 0 {
			return false
		}
		r, err := tc.GetTrace(context.Background(), &tracev1.GetTraceRequest{TraceId: l.Traces[0].TraceId})
		return err == nil && len(r.Spans) == 1 && r.Spans[0].Error && strings.Contains(r.Spans[0].Message, `"nosuch" is not a service in the mesh`)
	})
}

// A trace that was not recorded upstream stays unrecorded; a request with
// no trace context is recorded as its x-request-id says (sampling 0 here:
// only an ID whose trace status says traced) and otherwise passed on
// untouched, its ID deciding alike at every hop.
func TestUnsampledTracesAreNotRecorded(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane(meshtest.WithTracing(0))
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
	cp.StartSidecar("default", "b", meshtest.WithApp(startEcho(t, "b"), "http"))
	waitFor(t, "a can reach b", func() bool {
		resp, _ := call(t, a.Info.Outbound, "b", "/warm", nil)
		return resp.StatusCode == 200
	})
	echoTrace := http.Header{"X-Echo-Trace": {"1"}}
	_, reply := call(t, a.Info.Outbound, "b", "/", echoTrace)
	if reply.Traceparent != "" {
		t.Errorf("an unsampled request arrived with traceparent %q; want none (its x-request-id carries the decision)", reply.Traceparent)
	}
	unsampled := tracing.Context{TraceID: tracing.NewTraceID(), SpanID: tracing.NewSpanID()}
	_, reply = call(t, a.Info.Outbound, "b", "/", http.Header{"Traceparent": {unsampled.String()}, "X-Echo-Trace": {"1"}})
	if reply.Traceparent != unsampled.String() {
		t.Errorf("an unsampled traceparent arrived as %q, want it unchanged (%q)", reply.Traceparent, unsampled.String())
	}
	// A malformed one is dropped (W3C: start afresh; this one is not recorded).
	_, reply = call(t, a.Info.Outbound, "b", "/", http.Header{"Traceparent": {"00-zz-yy-01"}, "X-Echo-Trace": {"1"}})
	if reply.Traceparent != "" {
		t.Errorf("a malformed traceparent arrived as %q, want it dropped", reply.Traceparent)
	}
	// A sampled trace, and a request whose x-request-id an Envoy marked
	// traced ('9' for sampled, in the UUID's version digit): both kept.
	sampled := tracing.Context{TraceID: tracing.NewTraceID(), SpanID: tracing.NewSpanID(), Sampled: true}
	call(t, a.Info.Outbound, "b", "/", http.Header{"Traceparent": {sampled.String()}})
	_, reply = call(t, a.Info.Outbound, "b", "/marked", http.Header{"X-Request-Id": {"0f0f0f0f-1111-9222-8333-444444444444"}, "X-Echo-Trace": {"1"}})
	marked, ok := tracing.Parse(reply.Traceparent)
	if !ok || !marked.Sampled || reply.RequestID != "0f0f0f0f-1111-9222-8333-444444444444" {
		t.Fatalf("a request marked traced reached the app with traceparent %q and ID %q", reply.Traceparent, reply.RequestID)
	}
	tc := cp.TraceClient()
	for _, id := range []string{sampled.TraceIDString(), marked.TraceIDString()} {
		waitFor(t, "trace "+id, func() bool {
			r, err := tc.GetTrace(context.Background(), &tracev1.GetTraceRequest{TraceId: id})
			return err == nil && len(r.Spans) == 2
		})
	}
	l, err := tc.ListTraces(context.Background(), &tracev1.ListTracesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Traces) != 2 {
		t.Errorf("traces kept: %v; want only the two recorded", l.Traces)
	}
}

// The app's OTLP/HTTP endpoint (POST /v1/traces on the admin listener):
// an export, gzipped or not, reaches the control plane under the
// sidecar's service whatever service.name the app gave; what is not an
// export is refused with OTLP/HTTP's codes and a google.rpc.Status that
// says why.
func TestAppSpansEndpoint(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane(meshtest.WithTracing(0))
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
	url := "http://" + a.Info.Admin + "/v1/traces"
	post := func(contentType, encoding string, body []byte) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", contentType)
		if encoding != "" {
			req.Header.Set("Content-Encoding", encoding)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	export := func(spans ...*otlptrace.Span) []byte {
		b, err := proto.Marshal(&otlpcollector.ExportTraceServiceRequest{ResourceSpans: []*otlptrace.ResourceSpans{{
			Resource:   &otlpresource.Resource{Attributes: []*otlpcommon.KeyValue{{Key: "service.name", Value: &otlpcommon.AnyValue{Value: &otlpcommon.AnyValue_StringValue{StringValue: "b.default"}}}}},
			ScopeSpans: []*otlptrace.ScopeSpans{{Spans: spans}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	trace := tracing.NewTraceID()
	span := func(name string, size int) *otlptrace.Span {
		id := tracing.NewSpanID()
		now := uint64(time.Now().UnixNano())
		return &otlptrace.Span{TraceId: trace[:], SpanId: id[:], Name: name, Kind: otlptrace.Span_SPAN_KIND_INTERNAL,
			StartTimeUnixNano: now, EndTimeUnixNano: now + 1000, TraceState: strings.Repeat("x", size)}
	}

	code, body := post("application/x-protobuf", "", export(span("plain", 0)))
	if code != 200 {
		t.Fatalf("an export: %d %q", code, body)
	}
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	zw.Write(export(span("gzipped", 0), span("too large", tracing.MaxAppSpanBytes)))
	zw.Close()
	code, body = post("application/x-protobuf", "gzip", zipped.Bytes())
	var resp otlpcollector.ExportTraceServiceResponse
	if code != 200 || proto.Unmarshal(body, &resp) != nil || resp.GetPartialSuccess().GetRejectedSpans() != 1 ||
		!strings.Contains(resp.GetPartialSuccess().GetErrorMessage(), "1 span(s) over 65536 bytes dropped") {
		t.Errorf("a gzipped export with a span too large: %d, partial success %v", code, resp.GetPartialSuccess())
	}
	waitFor(t, "the app's spans at the control plane", func() bool {
		r, err := cp.TraceClient().GetTrace(context.Background(), &tracev1.GetTraceRequest{TraceId: hex.EncodeToString(trace[:])})
		return err == nil && len(r.Spans) == 2
	})
	r, _ := cp.TraceClient().GetTrace(context.Background(), &tracev1.GetTraceRequest{TraceId: hex.EncodeToString(trace[:])})
	for _, s := range r.Spans {
		if s.Service != "a.default" || s.Kind != tracev1.Kind_KIND_INTERNAL || (s.Name != "plain" && s.Name != "gzipped") {
			t.Errorf("span %q kept as %s %s, want a.default's INTERNAL", s.Name, s.Service, s.Kind)
		}
	}

	for _, c := range []struct {
		name, contentType, encoding string
		body                        []byte
		code                        int
		says                        string
	}{
		{"JSON", "application/json", "", []byte(`{"resourceSpans":[]}`), 415, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf"},
		{"not protobuf", "application/x-protobuf", "", []byte("hello"), 400, "not an OTLP ExportTraceServiceRequest"},
		{"not gzip", "application/x-protobuf", "gzip", []byte("hello"), 400, "not gzip"},
		{"brotli", "application/x-protobuf", "br", export(span("x", 0)), 415, `Content-Encoding "br"`},
		{"too large", "application/x-protobuf", "", make([]byte, 5<<20), 413, "at most 4194304 bytes"},
	} {
		code, body := post(c.contentType, c.encoding, c.body)
		msg := string(body)
		if c.code != 415 || c.encoding != "" {
			var st spb.Status
			if err := proto.Unmarshal(body, &st); err != nil {
				t.Errorf("%s: the answer is not a google.rpc.Status: %v", c.name, err)
			}
			msg = st.GetMessage()
		}
		if code != c.code || !strings.Contains(msg, c.says) {
			t.Errorf("%s: %d %q, want %d saying %q", c.name, code, msg, c.code, c.says)
		}
	}
	if resp, err := http.Get(url); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/traces: %v %v, want 405", resp.StatusCode, err)
	}
}
