package traces

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	collectorv1 "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	resourcev1 "go.opentelemetry.io/proto/otlp/resource/v1"
	otlptracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/identity"
	tracev1 "github.com/micromesh/micromesh/proto/trace/v1"
)

func as(id identity.ID, err error) Caller {
	return func(context.Context) (identity.ID, error) { return id, err }
}

var (
	api   = identity.ID{TrustDomain: "td", Namespace: "default", Kind: identity.KindService, Name: "api"}
	admin = identity.ID{TrustDomain: "td", Namespace: identity.SystemNamespace, Kind: identity.KindService, Name: "meshctl"}
	user  = identity.ID{TrustDomain: "td", Namespace: "default", Kind: "user", Name: "alice"}
)

func export(service string, spans ...*otlptracev1.Span) *collectorv1.ExportTraceServiceRequest {
	return &collectorv1.ExportTraceServiceRequest{ResourceSpans: []*otlptracev1.ResourceSpans{{
		Resource:   &resourcev1.Resource{Attributes: []*commonv1.KeyValue{{Key: "service.name", Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_StringValue{StringValue: service}}}}},
		ScopeSpans: []*otlptracev1.ScopeSpans{{Spans: spans}},
	}}}
}

func otlpSpan(trace, id byte, start time.Time) *otlptracev1.Span {
	return &otlptracev1.Span{TraceId: []byte{15: trace}, SpanId: []byte{7: id}, Name: "api.Api/Get", Kind: otlptracev1.Span_SPAN_KIND_SERVER,
		StartTimeUnixNano: uint64(start.UnixNano()), EndTimeUnixNano: uint64(start.Add(time.Millisecond).UnixNano()),
		Attributes: []*commonv1.KeyValue{
			{Key: "http.response.status_code", Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_IntValue{IntValue: 200}}},
			{Key: "ok", Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_BoolValue{BoolValue: true}}},
		},
		Status: &otlptracev1.Status{Code: otlptracev1.Status_STATUS_CODE_ERROR, Message: "boom"}}
}

func TestCollector(t *testing.T) {
	st, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	now := time.Now()

	// Who may export what: refused requests keep nothing.
	for _, tc := range []struct {
		name   string
		caller Caller
		svc    string
		code   codes.Code
		says   string
	}{
		{"no certificate", as(identity.ID{}, errors.New("no client certificate")), "api.default", codes.Unauthenticated, "no client certificate"},
		{"an account", as(user, nil), "api.default", codes.PermissionDenied, "workloads"},
		{"another service's spans", as(api, nil), "web.default", codes.PermissionDenied, `its own service only (service.name "api.default"); these name "web.default"`},
		{"no service name", as(api, nil), "", codes.PermissionDenied, `name "none"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewCollector(st, tc.caller, nil).Export(ctx, export(tc.svc, otlpSpan(1, 1, now)))
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("Export = %v; want %v saying %q", err, tc.code, tc.says)
			}
			if st.Count() != 0 {
				t.Fatalf("a refused export kept %d spans", st.Count())
			}
		})
	}

	// Malformed spans are refused one by one (OTLP's partial success).
	c := NewCollector(st, as(api, nil), nil)
	bad := func(change func(*otlptracev1.Span)) *otlptracev1.Span {
		s := otlpSpan(2, 9, now)
		change(s)
		return s
	}
	resp, err := c.Export(ctx, export("api.default",
		otlpSpan(2, 1, now),
		bad(func(s *otlptracev1.Span) { s.TraceId = s.TraceId[:8] }),
		bad(func(s *otlptracev1.Span) { s.SpanId = make([]byte, 8) }),
		bad(func(s *otlptracev1.Span) { s.ParentSpanId = []byte{1} }),
		bad(func(s *otlptracev1.Span) { s.EndTimeUnixNano = s.StartTimeUnixNano - 1 }),
		bad(func(s *otlptracev1.Span) {
			s.StartTimeUnixNano = uint64(now.Add(2 * time.Hour).UnixNano())
			s.EndTimeUnixNano = s.StartTimeUnixNano
		}),
		bad(func(s *otlptracev1.Span) { s.StartTimeUnixNano = uint64(now.Add(-48 * time.Hour).UnixNano()) }),
		bad(func(s *otlptracev1.Span) { s.Kind = 9 }),
	))
	if err != nil {
		t.Fatal(err)
	}
	if ps := resp.PartialSuccess; ps == nil || ps.RejectedSpans != 7 || !strings.Contains(ps.ErrorMessage, "trace_id must be 16 bytes") {
		t.Fatalf("partial success %v; want 7 rejected, the first for its trace_id", ps)
	}
	got, err := st.Get("00000000000000000000000000000002")
	if err != nil || len(got) != 1 {
		t.Fatalf("kept %v, %v; want the one good span", got, err)
	}
	s := got[0]
	if s.Service != "api.default" || s.SpanId != "0000000000000001" || s.Kind != tracev1.Kind_KIND_SERVER || !s.Error || s.Message != "boom" ||
		s.Attributes["http.response.status_code"] != "200" || s.Attributes["ok"] != "true" || s.Duration.AsDuration() != time.Millisecond {
		t.Errorf("kept span %v", s)
	}
	if n, r := c.Stats(); n != 1 || r != 7 {
		t.Errorf("Stats = %d, %d; want 1, 7", n, r)
	}
}

func TestAPI(t *testing.T) {
	st, err := Open(t.TempDir(), Options{MaxAge: time.Hour, MaxSpans: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if err := st.Add([]*tracev1.Span{span(traceID(0), spanID(0), "", "api.default", time.Now(), time.Millisecond, false)}); err != nil {
		t.Fatal(err)
	}
	if _, err := NewAPI(st, as(api, nil)).ListTraces(ctx, &tracev1.ListTracesRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a workload listed traces: %v", err)
	}
	a := NewAPI(st, as(admin, nil))
	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
		says string
	}{
		{"limit", func() error { _, err := a.ListTraces(ctx, &tracev1.ListTracesRequest{Limit: 5000}); return err }, codes.InvalidArgument, "at most 1000"},
		{"service", func() error { _, err := a.ListTraces(ctx, &tracev1.ListTracesRequest{Service: "Bad_Name"}); return err }, codes.InvalidArgument, "DNS label"},
		{"trace ID", func() error { _, err := a.GetTrace(ctx, &tracev1.GetTraceRequest{TraceId: "xyz"}); return err }, codes.InvalidArgument, "32 hex digits"},
		{"unknown trace", func() error { _, err := a.GetTrace(ctx, &tracev1.GetTraceRequest{TraceId: traceID(7)}); return err }, codes.NotFound, "keeps spans for 1h0m0s (the newest 10)"},
	} {
		if err := tc.call(); status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v; want %v saying %q", tc.name, err, tc.code, tc.says)
		}
	}
	r, err := a.GetTrace(ctx, &tracev1.GetTraceRequest{TraceId: strings.ToUpper(traceID(0))})
	if err != nil || len(r.Spans) != 1 {
		t.Errorf("GetTrace (upper case) = %v, %v", r, err)
	}
}
