package traces

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	tracev1 "github.com/micromesh/micromesh/proto/trace/v1"
)

func span(trace, id, parent, service string, start time.Time, d time.Duration, failed bool) *tracev1.Span {
	return &tracev1.Span{TraceId: trace, SpanId: id, ParentSpanId: parent, Service: service, Name: "GET /" + id,
		Kind: tracev1.Kind_KIND_SERVER, Start: timestamppb.New(start), Duration: durationpb.New(d), Error: failed}
}

func traceID(n int) string { return fmt.Sprintf("%032x", n+1) }
func spanID(n int) string  { return fmt.Sprintf("%016x", n+1) }

func TestStoreKeepsListsAndExpires(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{MaxSpans: 5, MaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	// Trace 0: web → api (api failed); trace 1: web alone, later and longer.
	if err := s.Add([]*tracev1.Span{
		span(traceID(0), spanID(0), "", "web.default", now, 5*time.Millisecond, false),
		span(traceID(0), spanID(1), spanID(0), "api.default", now.Add(time.Millisecond), 2*time.Millisecond, true),
		span(traceID(1), spanID(2), "", "web.default", now.Add(time.Second), 50*time.Millisecond, false),
	}); err != nil {
		t.Fatal(err)
	}
	l, err := s.List(Query{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 2 || l[0].TraceId != traceID(1) || l[1].TraceId != traceID(0) {
		t.Fatalf("List = %v; want trace 1 then trace 0 (newest first)", l)
	}
	t0 := l[1]
	if t0.Spans != 2 || t0.Errors != 1 || t0.RootService != "web.default" || t0.Duration.AsDuration() != 5*time.Millisecond ||
		len(t0.Services) != 2 || t0.Services[0] != "api.default" {
		t.Errorf("summary of trace 0: %v", t0)
	}
	for _, tc := range []struct {
		q    Query
		want []string
	}{
		{Query{Service: "api"}, []string{traceID(0)}},
		{Query{Service: "api.default"}, []string{traceID(0)}},
		{Query{Service: "api.prod"}, nil},
		{Query{ErrorsOnly: true}, []string{traceID(0)}},
		{Query{MinDuration: 10 * time.Millisecond}, []string{traceID(1)}},
		{Query{Limit: 1}, []string{traceID(1)}},
	} {
		l, err := s.List(tc.q)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, x := range l {
			got = append(got, x.TraceId)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("List(%+v) = %v, want %v", tc.q, got, tc.want)
		}
	}

	// Kept across a restart (what Add acknowledged is on disk).
	s.Close()
	if s, err = Open(dir, Options{MaxSpans: 5, MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, _ := s.Get(traceID(0)); len(got) != 2 || got[0].SpanId != spanID(0) {
		t.Fatalf("after a restart, trace 0 = %v", got)
	}
	if s.Count() != 3 {
		t.Errorf("Count = %d after a restart, want 3", s.Count())
	}

	// A span sent again replaces the first; past MaxSpans the oldest go.
	if err := s.Add([]*tracev1.Span{span(traceID(1), spanID(2), "", "web.default", now.Add(time.Second), 60*time.Millisecond, false)}); err != nil {
		t.Fatal(err)
	}
	if s.Count() != 3 {
		t.Errorf("Count = %d after a span sent twice, want 3", s.Count())
	}
	var more []*tracev1.Span
	for i := 3; i < 6; i++ {
		more = append(more, span(traceID(i), spanID(i), "", "web.default", now.Add(time.Duration(i)*time.Second), time.Millisecond, false))
	}
	if err := s.Add(more); err != nil {
		t.Fatal(err)
	}
	if s.Count() != 5 {
		t.Errorf("Count = %d, want the bound, 5", s.Count())
	}
	if got, _ := s.Get(traceID(0)); len(got) != 1 || got[0].SpanId != spanID(1) {
		t.Errorf("the oldest span should have gone first: trace 0 = %v", got)
	}

	// Expire drops what started before the age bound.
	if err := s.Expire(now.Add(time.Hour + 2500*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if s.Count() != 3 {
		t.Errorf("Count = %d after expiry, want 3 (spans started 3, 4 and 5 s in)", s.Count())
	}
	if got, _ := s.Get(traceID(1)); len(got) != 0 {
		t.Errorf("trace 1 outlived its age: %v", got)
	}
}

func TestStoreRefusesBadIDs(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Add([]*tracev1.Span{span("abc", spanID(0), "", "x.y", time.Now(), 0, false)}); err == nil {
		t.Error("a short trace ID was kept")
	}
	if _, err := s.Get("ZZ"); err == nil {
		t.Error("Get of a malformed ID did not fail")
	}
	if s.Count() != 0 {
		t.Errorf("Count = %d after refusals", s.Count())
	}
}
