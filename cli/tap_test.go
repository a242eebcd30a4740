package cli

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	runtimev1 "github.com/micromesh/micromesh/proto/runtime/v1"
)

// slog's text lines read back, quoted values included.
func TestLogfmt(t *testing.T) {
	got := logfmt(`time=2026-11-29T03:58:01.412Z level=INFO msg=request component=proxy path="/a b" source=pingpong.default code=200 note="say \"hi\"" empty=""`)
	for k, want := range map[string]string{"msg": "request", "path": "/a b", "source": "pingpong.default", "code": "200", "note": `say "hi"`, "empty": ""} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
}

// A sidecar's access line becomes a request; other lines none; the
// filters pick by caller, path and failure.
func TestTapLinesAndFilters(t *testing.T) {
	line := func(s string) *runtimev1.LogsResponse {
		return &runtimev1.LogsResponse{Time: timestamppb.New(time.Unix(1_800_000_000, 0)), Instance: "h-1", Source: "sidecar", Line: s}
	}
	ok := line(`time=x level=INFO msg=request component=proxy direction=inbound method=POST authority=helloworld path=/pkg.H/Call source=pingpong.default destination=helloworld.default transport=quic code=200 duration=212µs request_id=r1 grpc_status=0`)
	fault := line(`time=x level=INFO msg=request component=proxy direction=inbound method=POST authority=helloworld path=/pkg.H/Call source=web.shop destination=helloworld.default transport=tls code=200 duration=1ms request_id=r2 grpc_status=14`)
	mistake := line(`time=x level=INFO msg=request component=proxy direction=inbound method=POST authority=helloworld path=/pkg.H/Call source=web.shop destination=helloworld.default transport=tls code=200 duration=1ms request_id=r3 grpc_status=3`)
	for _, l := range []*runtimev1.LogsResponse{
		line(`time=x level=INFO msg=request component=proxy direction=outbound method=POST path=/x`),
		line(`time=x level=INFO msg="sidecar ready" component=sidecar`),
		{Source: "app", Line: ok.Line},
	} {
		if _, is := tapLine(l); is {
			t.Errorf("not a request the service took, read as one: %q", l.Line)
		}
	}
	r, is := tapLine(ok)
	if !is || r.Source != "pingpong.default" || r.Path != "/pkg.H/Call" || r.Code != 200 || r.GRPCStatus != "0" || r.Duration != "212µs" || r.Transport != "quic" || r.Instance != "h-1" {
		t.Fatalf("tapLine = %+v, %v", r, is)
	}
	f, _ := tapLine(fault)
	m, _ := tapLine(mistake)
	for _, c := range []struct {
		filter tapFilter
		want   [3]bool // ok, fault, mistake
	}{
		{tapFilter{}, [3]bool{true, true, true}},
		{tapFilter{from: "pingpong"}, [3]bool{true, false, false}},
		{tapFilter{from: "web.shop"}, [3]bool{false, true, true}},
		{tapFilter{from: "web.default"}, [3]bool{false, false, false}},
		{tapFilter{path: "/pkg.H/"}, [3]bool{true, true, true}},
		{tapFilter{path: "/other"}, [3]bool{false, false, false}},
		{tapFilter{failed: true}, [3]bool{false, true, false}}, // UNAVAILABLE is the server's fault, INVALID_ARGUMENT the caller's
	} {
		got := [3]bool{c.filter.keep(r), c.filter.keep(f), c.filter.keep(m)}
		if got != c.want {
			t.Errorf("%+v keeps %v, want %v", c.filter, got, c.want)
		}
	}
}
