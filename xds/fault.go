package xds

import (
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// FaultFilter is the name of the callers' fault injection filter, under
// which a route's own fault settings are given.
const FaultFilter = wellknown.Fault

// faultFilter is the fault filter every caller's listener carries, first
// (Envoy's documentation asks for it before any other filter): with no
// fault of its own, so only routes with settings of their own inject any.
// It is always there, so that a fault set or cleared changes routes only
// (an Envoy listener update would drain connections). It is optional: a
// proxy that has no fault filter (a built-in sidecar older than it) runs
// the listener without it instead of refusing the listener — it then
// refuses only the routes of a service with a fault, and keeps its last.
func faultFilter() *hcm.HttpFilter {
	return &hcm.HttpFilter{Name: FaultFilter, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: toAny(&faultv3.HTTPFault{})}, IsOptional: true}
}

// faultConfig is a route's typed_per_filter_config for f, nil when f
// injects nothing.
func faultConfig(f Fault) map[string]*anypb.Any {
	if !f.Active() {
		return nil
	}
	hf := &faultv3.HTTPFault{}
	if f.Delay > 0 && f.DelayShare > 0 {
		hf.Delay = &faultcommon.FaultDelay{
			FaultDelaySecifier: &faultcommon.FaultDelay_FixedDelay{FixedDelay: durationpb.New(f.Delay)},
			Percentage:         perMillion(f.DelayShare),
		}
	}
	switch {
	case f.AbortShare == 0:
	case f.Abort > 0:
		hf.Abort = &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: f.Abort}, Percentage: perMillion(f.AbortShare)}
	case f.AbortGRPC > 0:
		hf.Abort = &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: f.AbortGRPC}, Percentage: perMillion(f.AbortShare)}
	}
	return map[string]*anypb.Any{FaultFilter: toAny(hf)}
}

// perMillion writes a share given in parts per million with the coarsest
// denominator that holds it exactly.
func perMillion(ppm uint32) *typev3.FractionalPercent {
	switch {
	case ppm%10_000 == 0:
		return &typev3.FractionalPercent{Numerator: ppm / 10_000, Denominator: typev3.FractionalPercent_HUNDRED}
	case ppm%100 == 0:
		return &typev3.FractionalPercent{Numerator: ppm / 100, Denominator: typev3.FractionalPercent_TEN_THOUSAND}
	}
	return &typev3.FractionalPercent{Numerator: ppm, Denominator: typev3.FractionalPercent_MILLION}
}

// withFault gives routes the fault f: each of them; or, when f has an
// opt-in header, a copy of each for the requests that carry the header,
// ahead of it, the route itself left without a fault (a match in the
// route, not the fault filter's own header condition, because gRPC's
// fault filter ignores that one).
func withFault(f Fault, routes []*route.Route) []*route.Route {
	cfg := faultConfig(f)
	if cfg == nil {
		return routes
	}
	if f.Header == "" {
		for _, r := range routes {
			r.TypedPerFilterConfig = cfg
		}
		return routes
	}
	out := make([]*route.Route, 0, 2*len(routes))
	for _, r := range routes {
		fr := proto.Clone(r).(*route.Route)
		fr.Match.Headers = append(fr.Match.Headers, &route.HeaderMatcher{Name: f.Header, HeaderMatchSpecifier: &route.HeaderMatcher_PresentMatch{PresentMatch: true}})
		fr.TypedPerFilterConfig = cfg
		out = append(out, fr, r)
	}
	return out
}
