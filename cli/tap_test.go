package cli

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	tapv1 "github.com/micromesh/micromesh/proto/tap/v1"
)

// A request from the tap API as tap shows it; the filters pick by caller,
// path, failure and instance.
func TestTapLinesAndFilters(t *testing.T) {
	req := func(source string, grpc int32, dur time.Duration) *tapv1.WatchResponse {
		return &tapv1.WatchResponse{Time: timestamppb.New(time.Unix(1_800_000_000, 0)), Instance: "h-1", Source: source, Method: "POST",
			Path: "/pkg.H/Call", Code: 200, GrpcStatus: grpc, Duration: durationpb.New(dur), Protocol: "HTTP/3", RequestId: "r1"}
	}
	r := tapLine(req("spiffe://micromesh.local/ns/default/svc/pingpong", 0, 0))
	if r.Source != "pingpong.default" || r.Path != "/pkg.H/Call" || r.Code != 200 || r.GRPCStatus != "0" || r.Duration != "<1ms" || r.Transport != "quic" || r.Instance != "h-1" || r.RequestID != "r1" {
		t.Fatalf("tapLine = %+v", r)
	}
	f := tapLine(req("spiffe://micromesh.local/ns/shop/svc/web", 14, 3*time.Millisecond)) // UNAVAILABLE: the server's fault
	m := tapLine(req("spiffe://micromesh.local/ns/shop/svc/web", 3, time.Millisecond))    // INVALID_ARGUMENT: the caller's
	if f.Source != "web.shop" || f.Duration != "3ms" {
		t.Errorf("tapLine = %+v", f)
	}
	if h := tapLine(&tapv1.WatchResponse{Code: 404, GrpcStatus: -1, Protocol: "HTTP/1.1"}); h.GRPCStatus != "" || h.Transport != "tls" || h.Source != "-" {
		t.Errorf("an HTTP request from no verified caller: %+v", h)
	}
	for _, c := range []struct {
		filter tapFilter
		want   [3]bool // r, f, m
	}{
		{tapFilter{}, [3]bool{true, true, true}},
		{tapFilter{from: "pingpong"}, [3]bool{true, false, false}},
		{tapFilter{from: "web.shop"}, [3]bool{false, true, true}},
		{tapFilter{from: "web.default"}, [3]bool{false, false, false}},
		{tapFilter{path: "/pkg.H/"}, [3]bool{true, true, true}},
		{tapFilter{path: "/other"}, [3]bool{false, false, false}},
		{tapFilter{failed: true}, [3]bool{false, true, false}},
		{tapFilter{instances: map[string]bool{"h-2": true}}, [3]bool{false, false, false}},
		{tapFilter{instances: map[string]bool{"h-1": true}}, [3]bool{true, true, true}},
	} {
		got := [3]bool{c.filter.keep(r), c.filter.keep(f), c.filter.keep(m)}
		if got != c.want {
			t.Errorf("%+v keeps %v, want %v", c.filter, got, c.want)
		}
	}
}
