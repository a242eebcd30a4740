package xds

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// defaultRetryOn lists the failures a caller retries unless the policy
// says otherwise: connection failures, resets, 503 (what an overloaded or
// draining server says) for HTTP; UNAVAILABLE for gRPC (gRPC clients
// ignore the HTTP ones).
const defaultRetryOn = "connect-failure,reset,503,unavailable"

// retryOnOf writes a policy's retry_on as Envoy's retry_on and
// retriable_status_codes: Envoy has no condition per status (it ignores
// names it does not know), so statuses are retried through
// retriable-status-codes.
func retryOnOf(on string) (string, []uint32) {
	if on == "" {
		return defaultConds, defaultCodes // shared by every route: read only
	}
	return parseRetryConds(on)
}

// defaultConds and defaultCodes are defaultRetryOn's, written once.
var defaultConds, defaultCodes = parseRetryConds(defaultRetryOn)

func parseRetryConds(on string) (string, []uint32) {
	var conds []string
	var codes []uint32
	for _, c := range strings.Split(on, ",") {
		if n, err := strconv.ParseUint(c, 10, 32); err == nil {
			if len(codes) == 0 {
				conds = append(conds, "retriable-status-codes")
			}
			codes = append(codes, uint32(n))
			continue
		}
		conds = append(conds, c)
	}
	return strings.Join(conds, ","), codes
}

// routeMatch matches rp's requests: its path exactly, or the paths under
// its prefix.
func (rp RoutePolicy) routeMatch() *route.RouteMatch {
	if rp.Prefix {
		return &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: rp.Path}}
	}
	return &route.RouteMatch{PathSpecifier: &route.RouteMatch_Path{Path: rp.Path}}
}

// callerHeader carries the verified identity of the caller to the app.
const callerHeader = "x-mesh-caller"

// outboundRoute has one virtual host per service the proxy may call,
// matched by the authority the app uses ("name" or "name.namespace").
func (b *builder) outboundRoute(reachable []*Service) *route.RouteConfiguration {
	rc := &route.RouteConfiguration{Name: OutboundRoute}
	canReach := make(map[[2]string]bool, len(reachable))
	for _, s := range reachable {
		canReach[[2]string{s.Namespace, s.Name}] = true
	}
	for _, s := range reachable {
		pol := s.Policy
		// A route timeout bounds a whole request, stream included: gRPC
		// services get none (their callers' deadlines govern, and streams may
		// live long) unless a path asks for one; HTTP services get the
		// policy's.
		timeout := pol.Timeout
		if s.Protocol == ProtocolGRPC {
			timeout = 0
		}
		routes := make([]*route.Route, 0, len(s.Routes)+1)
		for _, rp := range s.Routes {
			action := routeAction(s, rp.Timeout, rp.PerTryTimeout, rp.Retries, rp.RetryOn)
			action.RequestMirrorPolicies = mirrorPolicies(s, rp.Mirror, canReach)
			routes = append(routes, withFault(rp.Fault, withVersionHeader(s, &route.Route{
				Match:  rp.routeMatch(),
				Action: &route.Route_Route{Route: action},
			}))...)
		}
		action := routeAction(s, timeout, pol.PerTryTimeout, pol.Retries, pol.RetryOn)
		action.RequestMirrorPolicies = mirrorPolicies(s, pol.Mirror, canReach)
		routes = append(routes, withFault(pol.Fault, withVersionHeader(s, &route.Route{
			Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
			Action: &route.Route_Route{Route: action},
		}))...)
		rc.VirtualHosts = append(rc.VirtualHosts, &route.VirtualHost{
			Name:    ClusterName(s.Namespace, s.Name),
			Domains: hostNames(b.proxy.Namespace, s.Namespace, s.Name),
			Routes:  routes,
		})
	}
	return rc
}

// withVersionHeader returns rt, preceded, when s's split has a version
// header, by a route per version the split names that sends the requests
// whose header names it to that version's cluster, whatever the shares
// (a canary's testers), with rt's match and policy.
func withVersionHeader(s *Service, rt *route.Route) []*route.Route {
	if s.SplitHeader == "" || len(s.Split) == 0 {
		return []*route.Route{rt}
	}
	out := make([]*route.Route, 0, len(s.Split)+1)
	for _, v := range s.Split {
		vr := proto.Clone(rt).(*route.Route)
		vr.Match.Headers = []*route.HeaderMatcher{{Name: s.SplitHeader, HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{
			StringMatch: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: v.Version}}}}}
		vr.GetRoute().ClusterSpecifier = &route.RouteAction_Cluster{Cluster: VersionClusterName(s.Namespace, s.Name, v.Version)}
		out = append(out, vr)
	}
	return append(out, rt)
}

// mirrorPolicies copies a share of s's requests to m's service (Envoy
// appends -shadow to the copies' authority, so the mirror's logs tell
// them apart): none when m mirrors nothing, names s itself, or names a
// service the proxy cannot reach (its cluster is not in the proxy's
// view; the mirror starts when the service appears).
func mirrorPolicies(s *Service, m Mirror, canReach map[[2]string]bool) []*route.RouteAction_RequestMirrorPolicy {
	if !m.Active() {
		return nil
	}
	ns := m.Namespace
	if ns == "" {
		ns = s.Namespace
	}
	if (ns == s.Namespace && m.Service == s.Name) || !canReach[[2]string{ns, m.Service}] {
		return nil
	}
	return []*route.RouteAction_RequestMirrorPolicy{{
		Cluster:         ClusterName(ns, m.Service),
		RuntimeFraction: &core.RuntimeFractionalPercent{DefaultValue: perMillion(m.Share)},
	}}
}

// routeAction sends to s's cluster (or its versions' clusters, by its
// split) with a timeout (0: none) and retries on retryOn (a policy's
// retry_on; "" for the default).
func routeAction(s *Service, timeout, perTry time.Duration, retries uint32, retryOn string) *route.RouteAction {
	action := &route.RouteAction{
		ClusterSpecifier: &route.RouteAction_Cluster{Cluster: ClusterName(s.Namespace, s.Name)},
		Timeout:          duration(timeout),
	}
	if vs := s.activeVersions(); len(vs) > 0 {
		// The split: each request picks a version's cluster by its share,
		// and its retries stay there.
		wc := &route.WeightedCluster{}
		for _, v := range vs {
			wc.Clusters = append(wc.Clusters, &route.WeightedCluster_ClusterWeight{
				Name: VersionClusterName(s.Namespace, s.Name, v.Version), Weight: u32(v.Weight),
			})
		}
		action.ClusterSpecifier = &route.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	if s.Protocol == ProtocolGRPC && timeout > 0 {
		// Proxyless gRPC clients read a route's deadline from here.
		action.MaxStreamDuration = &route.RouteAction_MaxStreamDuration{MaxStreamDuration: duration(timeout)}
	}
	if retries > 0 {
		on, codes := retryOnOf(retryOn)
		action.RetryPolicy = &route.RetryPolicy{
			RetryOn:              on,
			RetriableStatusCodes: codes,
			NumRetries:           u32(retries),
			PerTryTimeout:        duration(perTry),
			RetryBackOff:         &route.RetryPolicy_RetryBackOff{BaseInterval: duration(25 * time.Millisecond), MaxInterval: duration(250 * time.Millisecond)},
		}
	}
	return action
}

// inboundRoute sends everything to the local app, replacing any caller
// header a client sent with the verified peer's SPIFFE ID.
func (b *builder) inboundRoute() *route.RouteConfiguration {
	toApp := &route.Route_Route{Route: &route.RouteAction{
		ClusterSpecifier: &route.RouteAction_Cluster{Cluster: AppCluster},
		Timeout:          duration(0), // the caller's timeout governs
	}}
	var routes []*route.Route
	if b.proxy.AppProtocol == ProtocolTCP {
		// A TCP app takes tunnels only: a plain HTTP request finds no route.
		routes = append(routes, connectRoute())
	} else if s := b.ownService(); s != nil {
		// A path with a rate limit of its own: its requests draw from its
		// bucket, not the service's (Envoy's per-route filter settings).
		for i, rp := range s.Routes {
			if rp.RateLimit == 0 {
				continue
			}
			limit := localRateLimit(fmt.Sprintf("%s_path_%d", RateLimitStatPrefix, i), rp.RateLimit, rp.RateLimitBurst, rateLimitShare(s))
			routes = append(routes, &route.Route{Match: rp.routeMatch(), Action: toApp,
				TypedPerFilterConfig: map[string]*anypb.Any{RateLimitFilter: toAny(limit)}})
		}
	}
	if b.proxy.AppProtocol != ProtocolTCP {
		routes = append(routes, &route.Route{
			Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
			Action: toApp,
		})
	}
	return &route.RouteConfiguration{
		Name: InboundRoute,
		VirtualHosts: []*route.VirtualHost{{
			Name:                   "app",
			Domains:                []string{"*"},
			Routes:                 routes,
			RequestHeadersToRemove: []string{callerHeader},
			RequestHeadersToAdd: []*core.HeaderValueOption{{
				Header:       &core.HeaderValue{Key: callerHeader, Value: "%DOWNSTREAM_PEER_URI_SAN%"},
				AppendAction: core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}},
		}},
	}
}
