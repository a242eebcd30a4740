package config

import (
	"net/http"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/micromesh/micromesh/dataplane/xdswire"
)

// Route matches as Envoy reads them: a regex the whole path (not the
// query) matches, a prefix of whole segments, query parameters (first
// value, decoded; presence), gRPC requests only, a share of requests.
func TestRouteMatchesAsEnvoys(t *testing.T) {
	r := meshFor(t, "default", "client")
	vh := r.Routes[0].VirtualHosts[0]
	to := func(cluster string, m *route.RouteMatch) *route.Route {
		return &route.Route{Match: m, Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: cluster}}}}
	}
	prefix := func(p string) *route.RouteMatch {
		return &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: p}}
	}
	exact := func(v string) *matcher.StringMatcher {
		return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: v}}
	}
	canary := prefix("/q/")
	canary.QueryParameters = []*route.QueryParameterMatcher{{Name: "canary", QueryParameterMatchSpecifier: &route.QueryParameterMatcher_StringMatch{StringMatch: exact("yes")}}}
	debug := prefix("/q/")
	debug.QueryParameters = []*route.QueryParameterMatcher{{Name: "debug", QueryParameterMatchSpecifier: &route.QueryParameterMatcher_PresentMatch{PresentMatch: true}}}
	grpcOnly := prefix("/g/")
	grpcOnly.Grpc = &route.RouteMatch_GrpcRouteMatchOptions{}
	never := prefix("/share/")
	never.RuntimeFraction = &core.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 0}, RuntimeKey: "k"}
	always := prefix("/share/")
	always.RuntimeFraction = &core.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100}}
	vh.Routes = append([]*route.Route{
		to("regex", &route.RouteMatch{PathSpecifier: &route.RouteMatch_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: "/v[0-9]+/items"}}}),
		to("segments", &route.RouteMatch{PathSpecifier: &route.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api"}, CaseSensitive: wrapperspb.Bool(false)}),
		to("canary", canary),
		to("debug", debug),
		to("grpc", grpcOnly),
		to("never", never),
		to("always", always),
	}, vh.Routes...)
	c, err := Compile(r.wire(t))
	if err != nil {
		t.Fatal(err)
	}
	rt := c.Routes[r.Routes[0].Name]
	host := vh.Domains[0]
	plain, _ := rt.Lookup(host, "/")
	for _, tc := range []struct {
		path, query, contentType string
		want                     string
	}{
		{"/v2/items", "", "", "regex"},
		{"/v2/items", "x=1", "", "regex"}, // the query is not the path's
		{"/v2/items/1", "", "", plain.Cluster},
		{"/vx/items", "", "", plain.Cluster},
		{"/api", "", "", "segments"},
		{"/API/users", "", "", "segments"},
		{"/apix", "", "", plain.Cluster},
		{"/q/a", "canary=yes", "", "canary"},
		{"/q/a", "canary=y%65s", "", "canary"}, // decoded
		{"/q/a", "canary=yes&canary=no", "", "canary"},
		{"/q/a", "canary=no&canary=yes", "", plain.Cluster}, // the first value
		{"/q/a", "debug", "", "debug"},
		{"/q/a", "a=1&debug=", "", "debug"},
		{"/q/a", "debugging=1", "", plain.Cluster},
		{"/g/x", "", "application/grpc", "grpc"},
		{"/g/x", "", "application/grpc+proto", "grpc"},
		{"/g/x", "", "application/grpc-web", plain.Cluster},
		{"/g/x", "", "application/json", plain.Cluster},
		{"/share/x", "", "", "always"},
	} {
		h := http.Header{}
		if tc.contentType != "" {
			h.Set("Content-Type", tc.contentType)
		}
		got, _ := rt.LookupRequest(host, Request{Method: "GET", Path: tc.path, Query: tc.query, Header: HeaderOf(h)})
		if got == nil || got.Cluster != tc.want {
			t.Errorf("%s?%s (%s): route to %v, want %s", tc.path, tc.query, tc.contentType, got, tc.want)
		}
	}
	if !rt.HeaderConditions {
		t.Error("a gRPC condition reads content-type: the table must say it reads headers")
	}
}

// A share of requests: about that share match.
func TestRouteRuntimeFraction(t *testing.T) {
	conds, err := compileConditions(&xdswire.RouteMatch{RuntimeFraction: &xdswire.RuntimeFractionalPercent{DefaultValue: &xdswire.FractionalPercent{Numerator: 50}}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range 10_000 {
		if conds[0](Request{}) {
			n++
		}
	}
	if n < 4700 || n > 5300 { // 5,000 expected, standard deviation 50
		t.Errorf("50%% of 10,000 requests: %d matched", n)
	}
}

// Header matchers of every kind Envoy reads: a range of integers
// [start, end), the deprecated string specifiers, a bare name (present).
func TestHeaderMatcherKindsAsEnvoys(t *testing.T) {
	str := func(s string) *string { return &s }
	for _, tc := range []struct {
		name  string
		h     xdswire.HeaderMatcher
		value string // "" with present false: missing
		miss  bool
		want  bool
	}{
		{"in range", xdswire.HeaderMatcher{Name: "n", RangeMatch: &xdswire.Int64Range{Start: -5, End: 10}}, "-5", false, true},
		{"at the range's end", xdswire.HeaderMatcher{Name: "n", RangeMatch: &xdswire.Int64Range{Start: -5, End: 10}}, "10", false, false},
		{"not a number", xdswire.HeaderMatcher{Name: "n", RangeMatch: &xdswire.Int64Range{Start: -5, End: 10}}, "3.0", false, false},
		{"out of range, inverted", xdswire.HeaderMatcher{Name: "n", RangeMatch: &xdswire.Int64Range{End: 10}, InvertMatch: true}, "12", false, true},
		{"deprecated exact", xdswire.HeaderMatcher{Name: "n", ExactMatch: str("v1")}, "v1", false, true},
		{"deprecated exact, case", xdswire.HeaderMatcher{Name: "n", ExactMatch: str("v1")}, "V1", false, false},
		{"deprecated prefix", xdswire.HeaderMatcher{Name: "n", PrefixMatch: str("v")}, "v2", false, true},
		{"deprecated suffix", xdswire.HeaderMatcher{Name: "n", SuffixMatch: str("-beta")}, "v2-beta", false, true},
		{"deprecated contains", xdswire.HeaderMatcher{Name: "n", ContainsMatch: str("can")}, "x-canary", false, true},
		{"deprecated regex", xdswire.HeaderMatcher{Name: "n", SafeRegexMatch: &xdswire.RegexMatcher{Regex: "v[0-9]"}}, "v7", false, true},
		{"deprecated regex, whole value", xdswire.HeaderMatcher{Name: "n", SafeRegexMatch: &xdswire.RegexMatcher{Regex: "v[0-9]"}}, "v7x", false, false},
		{"a bare name, present", xdswire.HeaderMatcher{Name: "n"}, "", false, true},
		{"a bare name, missing", xdswire.HeaderMatcher{Name: "n"}, "", true, false},
	} {
		match, err := compileHeader(&tc.h)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		q := Request{Header: func(name string) (string, bool) { return tc.value, name == "n" && !tc.miss }}
		if got := match(q); got != tc.want {
			t.Errorf("%s, value %q: %v, want %v", tc.name, tc.value, got, tc.want)
		}
	}
}
