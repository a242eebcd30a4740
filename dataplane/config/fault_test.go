package config

import (
	"strings"
	"testing"
	"time"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/micromesh/micromesh/xds"
	"github.com/micromesh/micromesh/xds/policymeta"
)

const faultFilterName = "envoy.filters.http.fault"

// withFault gives listener name the fault filter f: in place of the
// control plane's (outbound), else first of its filters (Envoy's
// documentation asks for it before any other).
func withFault(t *testing.T, r *envoyResources, name string, f *faultv3.HTTPFault) {
	t.Helper()
	mutateHCM(t, findListener(r, name), func(m *hcm.HttpConnectionManager) {
		filter := &hcm.HttpFilter{Name: faultFilterName, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(t, f)}}
		if m.HttpFilters[0].Name == faultFilterName {
			m.HttpFilters[0] = filter
			return
		}
		m.HttpFilters = append([]*hcm.HttpFilter{filter}, m.HttpFilters...)
	})
}

func abortWith(status uint32, percent uint32) *faultv3.FaultAbort {
	return &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: status}, Percentage: &typev3.FractionalPercent{Numerator: percent}}
}

func delayOf(d time.Duration, percent uint32) *faultcommon.FaultDelay {
	return &faultcommon.FaultDelay{FaultDelaySecifier: &faultcommon.FaultDelay_FixedDelay{FixedDelay: durationpb.New(d)},
		Percentage: &typev3.FractionalPercent{Numerator: percent}}
}

// Envoy's fault filter on the outbound listener and a route's own fault
// settings compile as Envoy reads them: shares by denominator, an HTTP
// status mapped to the gRPC status Envoy gives gRPC callers, a gRPC status
// answered with HTTP 200, the default body, delays in whole milliseconds,
// the filter's place before or after the rate limit filter.
func TestFaultsAsEnvoys(t *testing.T) {
	r := meshFor(t, "default", "client")
	withRateLimit(t, &r, "outbound", &ratelimitv3.LocalRateLimit{StatPrefix: "no_bucket"})
	withFault(t, &r, "outbound", &faultv3.HTTPFault{
		Delay:           delayOf(1500*time.Microsecond, 2500),
		Abort:           &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 8}, Percentage: &typev3.FractionalPercent{Numerator: 5, Denominator: typev3.FractionalPercent_TEN_THOUSAND}},
		UpstreamCluster: "server.default",
		MaxActiveFaults: wrapperspb.UInt32(3),
		Headers:         []*route.HeaderMatcher{{Name: "x-chaos", HeaderMatchSpecifier: &route.HeaderMatcher_PresentMatch{PresentMatch: true}}},
		// Runtime keys rename values no runtime overrides: accepted.
		AbortPercentRuntime: "fault.http.abort.abort_percent",
	})
	routes := r.Routes[0].VirtualHosts[0].Routes
	routes[0].TypedPerFilterConfig = map[string]*anypb.Any{faultFilterName: mustAny(t, &faultv3.HTTPFault{
		Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 503}, Percentage: &typev3.FractionalPercent{Numerator: 100}, ResponseBody: "chaos"},
	})}
	c, err := Compile(r.wire(t))
	if err != nil {
		t.Fatal(err)
	}
	o := c.Outbound
	if o.FaultFilter != faultFilterName || !o.FaultFirst {
		t.Errorf("outbound: fault filter %q, first %v; want %q, before the rate limit", o.FaultFilter, o.FaultFirst, faultFilterName)
	}
	f := o.Fault
	switch {
	case f == nil:
		t.Fatal("no listener fault")
	case f.Delay != time.Millisecond || f.DelayShare != (Share{2500, 100}):
		t.Errorf("delay %v in %v; want 1ms (whole milliseconds) in all (2500 of 100)", f.Delay, f.DelayShare)
	case !f.Abort || f.Status != 200 || f.GRPCStatus != 8 || f.AbortShare != (Share{5, 10_000}) || f.Body != FaultAbortBody:
		t.Errorf("abort %+v", f)
	case f.UpstreamCluster != "server.default" || f.MaxActive == nil || *f.MaxActive != 3 || len(f.Headers) != 1:
		t.Errorf("conditions %+v", f)
	}
	if f.DelayShare.String() != "100%" || f.AbortShare.String() != "0.05%" {
		t.Errorf("shares read %s and %s", f.DelayShare, f.AbortShare)
	}
	if !f.Applies("server.default", Request{Header: func(n string) (string, bool) { return "", n == "x-chaos" }}) ||
		f.Applies("server.default", Request{Header: func(string) (string, bool) { return "", false }}) ||
		f.Applies("other.default", Request{Header: func(n string) (string, bool) { return "", n == "x-chaos" }}) {
		t.Error("Applies: want the cluster and the header to decide")
	}
	var own *Route
	for _, rt := range c.Routes[r.Routes[0].Name].Routes() {
		if rt.Fault != nil {
			own = rt
		}
	}
	if own == nil || own.FaultFilter != faultFilterName || own.Fault.Status != 503 || own.Fault.GRPCStatus != 14 || own.Fault.Body != "chaos" || own.Fault.Delay != 0 {
		t.Errorf("the route's fault: %+v", own)
	}
}

func TestFaultsRefuseWhatTheProxyCannotDo(t *testing.T) {
	outbound := func(f *faultv3.HTTPFault) func(*envoyResources) {
		return func(r *envoyResources) { withFault(t, r, "outbound", f) }
	}
	refusals(t, []refusal{
		{"downstream nodes", outbound(&faultv3.HTTPFault{Abort: abortWith(503, 1), DownstreamNodes: []string{"x"}}), "fault downstream_nodes is not supported"},
		{"response rate limit", outbound(&faultv3.HTTPFault{ResponseRateLimit: &faultcommon.FaultRateLimit{
			LimitType: &faultcommon.FaultRateLimit_FixedLimit_{FixedLimit: &faultcommon.FaultRateLimit_FixedLimit{LimitKbps: 1}}}}), "fault response_rate_limit is not supported"},
		{"header delay", outbound(&faultv3.HTTPFault{Delay: &faultcommon.FaultDelay{FaultDelaySecifier: &faultcommon.FaultDelay_HeaderDelay_{HeaderDelay: &faultcommon.FaultDelay_HeaderDelay{}}}}),
			"fault delay header_delay is not supported"},
		{"header abort", outbound(&faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HeaderAbort_{HeaderAbort: &faultv3.FaultAbort_HeaderAbort{}}}}),
			"fault abort header_abort is not supported"},
		{"a delay of no length", outbound(&faultv3.HTTPFault{Delay: &faultcommon.FaultDelay{Percentage: &typev3.FractionalPercent{Numerator: 1}}}), "fault delay needs fixed_delay"},
		{"an abort with no status", outbound(&faultv3.HTTPFault{Abort: &faultv3.FaultAbort{Percentage: &typev3.FractionalPercent{Numerator: 1}}}), "needs http_status or grpc_status"},
		{"an HTTP status out of range", outbound(&faultv3.HTTPFault{Abort: abortWith(600, 1)}), "http_status 600 is not an HTTP status"},
		{"a gRPC status out of range", outbound(&faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 17}}}), "grpc_status 17 is not a gRPC status code"},
		{"a header condition on :authority", outbound(&faultv3.HTTPFault{Abort: abortWith(503, 1), Headers: []*route.HeaderMatcher{{Name: ":authority",
			HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: "x"}}}}}}), "header matcher on :authority is not supported"},
		{"on an inbound listener", func(r *envoyResources) { withFault(t, r, "inbound", &faultv3.HTTPFault{Abort: abortWith(503, 1)}) },
			"fault injection on an inbound listener is not supported"},
		{"two fault filters", func(r *envoyResources) {
			mutateHCM(t, findListener(r, "outbound"), func(m *hcm.HttpConnectionManager) {
				m.HttpFilters = append([]*hcm.HttpFilter{m.HttpFilters[0]}, m.HttpFilters...)
			})
		}, "a second fault filter is not supported"},
		{"a route's fault with a header abort", func(r *envoyResources) {
			r.Routes[0].VirtualHosts[0].Routes[0].TypedPerFilterConfig = map[string]*anypb.Any{faultFilterName: mustAny(t, &faultv3.HTTPFault{
				Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HeaderAbort_{HeaderAbort: &faultv3.FaultAbort_HeaderAbort{}}}})}
		}, `typed_per_filter_config "envoy.filters.http.fault": fault abort header_abort is not supported`},
	})
	// An unnamed filter: routes could not refer to it.
	r := meshFor(t, "default", "client")
	withFault(t, &r, "outbound", &faultv3.HTTPFault{Abort: abortWith(503, 1)})
	mutateHCM(t, findListener(&r, "outbound"), func(m *hcm.HttpConnectionManager) { m.HttpFilters[0].Name = "" })
	if _, err := Compile(r.wire(t)); err == nil || !strings.Contains(err.Error(), "a fault filter needs a name") {
		t.Errorf("an unnamed fault filter: %v", err)
	}
}

// Share.Roll: none of 0, all of a numerator at or past the denominator,
// and about the share between.
func TestFaultSharesRoll(t *testing.T) {
	for _, s := range []Share{{0, 100}, {5, 0}} {
		for range 1000 {
			if s.Roll() {
				t.Fatalf("%+v rolled true", s)
			}
		}
	}
	for _, s := range []Share{{100, 100}, {150, 100}} {
		for range 1000 {
			if !s.Roll() {
				t.Fatalf("%+v rolled false", s)
			}
		}
	}
	n := 0
	for range 10_000 {
		if (Share{25, 100}).Roll() {
			n++
		}
	}
	// 2,500 expected, standard deviation 43: ±300 fails once in 10^12.
	if n < 2200 || n > 2800 {
		t.Errorf("25%% of 10,000 rolls: %d", n)
	}
}

// The control plane's fault for a service (from its policy keys) compiles
// into the callers' route settings under the outbound listener's fault
// filter, which injects nothing itself; a path's own fault replaces the
// service's, and a path that turns it off gets none.
func TestTheServicesFaultCompiles(t *testing.T) {
	policy, routes, err := xds.PolicyFromMetadata(policymeta.Metadata(map[string]string{
		"fault_abort": "503", "fault_abort_percent": "12.5", "fault_delay": "20ms",
		"/pkg.S/Slow:fault_abort_grpc": "4", "/pkg.S/Fine:fault_abort_percent": "0", "/pkg.S/Fine:fault_delay_percent": "0",
	}))
	if err != nil {
		t.Fatal(err)
	}
	m := &xds.Mesh{TrustDomain: "micromesh.local", Roots: []byte("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"), Services: []xds.Service{
		{Name: "server", Namespace: "default", Protocol: xds.ProtocolGRPC, Policy: policy, Routes: routes, Endpoints: []xds.Endpoint{
			{ID: "s1", Address: "10.0.0.1", Port: 18443, QUICPort: 18443, Kind: xds.KindBuiltin, Health: xds.HealthPassing},
		}},
	}}
	c := compiled(t, sidecarOf(t, m, "default", "client"))
	if c.Outbound.Fault != nil || c.Outbound.FaultFilter != xds.FaultFilter {
		t.Errorf("outbound: fault %+v under %q; want none of its own, the filter named", c.Outbound.Fault, c.Outbound.FaultFilter)
	}
	for _, tc := range []struct {
		path string
		want Fault
	}{
		{"/pkg.S/Other", Fault{Delay: 20 * time.Millisecond, DelayShare: Share{100, 100}, Abort: true, AbortShare: Share{1250, 10_000}, Status: 503, GRPCStatus: 14, Body: FaultAbortBody}},
		{"/pkg.S/Slow", Fault{Delay: 20 * time.Millisecond, DelayShare: Share{100, 100}, Abort: true, AbortShare: Share{1250, 10_000}, Status: 200, GRPCStatus: 4, Body: FaultAbortBody}},
	} {
		rt, _ := c.Routes[xds.OutboundRoute].Lookup("server", tc.path)
		if rt == nil || rt.Fault == nil || rt.FaultFilter != xds.FaultFilter {
			t.Errorf("%s: route %+v, want a fault", tc.path, rt)
			continue
		}
		got := *rt.Fault
		if got.Delay != tc.want.Delay || got.DelayShare != tc.want.DelayShare || got.Abort != tc.want.Abort || got.AbortShare != tc.want.AbortShare ||
			got.Status != tc.want.Status || got.GRPCStatus != tc.want.GRPCStatus || got.Body != tc.want.Body {
			t.Errorf("%s: fault %+v, want %+v", tc.path, got, tc.want)
		}
	}
	if rt, _ := c.Routes[xds.OutboundRoute].Lookup("server", "/pkg.S/Fine"); rt == nil || rt.Fault != nil {
		t.Errorf("/pkg.S/Fine turned its faults off: route %+v", rt)
	}
}
