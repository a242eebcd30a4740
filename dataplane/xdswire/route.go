package xdswire

import (
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
)

// RouteConfiguration is envoy.config.route.v3.RouteConfiguration.
type RouteConfiguration struct {
	Name         string         `json:"name,omitempty"`
	VirtualHosts []*VirtualHost `json:"virtualHosts,omitempty"`
	// RequestMirrorPolicies are the mirrors of every route that names
	// none, in a virtual host that names none.
	RequestMirrorPolicies []*RequestMirrorPolicy `json:"requestMirrorPolicies,omitempty"`
	// Refused names the first field set that changes what Envoy does with
	// every request (header changes for the whole configuration, headers
	// only internal callers may send, mirrors, on-demand hosts, plugins…).
	Refused string `json:"-"`
}

var routeConfigurationRefused = map[protowire.Number]string{
	9: "vhds", 3: "internal_only_headers", 4: "response_headers_to_add", 5: "response_headers_to_remove",
	6: "request_headers_to_add", 8: "request_headers_to_remove", 12: "cluster_specifier_plugins",
	18: "vhost_header", 15: "ignore_path_parameters_in_path_matching",
	16: "typed_per_filter_config", 19: "route_specifiers",
}

func (m *RouteConfiguration) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&m.Name)
		case 2:
			return msgs(f, &m.VirtualHosts)
		case 13:
			return msgs(f, &m.RequestMirrorPolicies)
		}
		refuseSet(f, &m.Refused, routeConfigurationRefused)
		return nil
	})
}

// VirtualHost is envoy.config.route.v3.VirtualHost.
type VirtualHost struct {
	Name                   string               `json:"name,omitempty"`
	Domains                []string             `json:"domains,omitempty"`
	Routes                 []*Route             `json:"routes,omitempty"`
	RequestHeadersToAdd    []*HeaderValueOption `json:"requestHeadersToAdd,omitempty"`
	RequestHeadersToRemove []string             `json:"requestHeadersToRemove,omitempty"`
	// RequestMirrorPolicies are the mirrors of every route of the host
	// that names none.
	RequestMirrorPolicies []*RequestMirrorPolicy `json:"requestMirrorPolicies,omitempty"`
	// Refused names the first field set that changes what Envoy does with
	// a request and that the proxy does not do (response headers,
	// per-filter config, a host-wide retry policy…): refused, never read
	// as if unset.
	Refused string `json:"-"`
}

// virtualHostRefused are VirtualHost's fields the proxy refuses.
var virtualHostRefused = map[protowire.Number]string{
	21: "matcher", 6: "rate_limits", 10: "response_headers_to_add", 11: "response_headers_to_remove", 8: "cors",
	15: "typed_per_filter_config", 14: "include_request_attempt_count", 19: "include_attempt_count_in_response",
	16: "retry_policy", 20: "retry_policy_typed_config", 17: "hedge_policy",
	4: "require_tls",
}

func (m *VirtualHost) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&m.Name)
		case 2:
			return f.strs(&m.Domains)
		case 3:
			return msgs(f, &m.Routes)
		case 7:
			return msgs(f, &m.RequestHeadersToAdd)
		case 13:
			return f.strs(&m.RequestHeadersToRemove)
		case 22:
			return msgs(f, &m.RequestMirrorPolicies)
		}
		refuseSet(f, &m.Refused, virtualHostRefused)
		return nil
	})
}

// Route is envoy.config.route.v3.Route.
type Route struct {
	Name                   string               `json:"name,omitempty"`
	Match                  *RouteMatch          `json:"match,omitempty"`
	Route                  *RouteAction         `json:"route,omitempty"`
	RequestHeadersToAdd    []*HeaderValueOption `json:"requestHeadersToAdd,omitempty"`
	RequestHeadersToRemove []string             `json:"requestHeadersToRemove,omitempty"`
	// TypedPerFilterConfig holds HTTP filters' settings for this route,
	// by filter name (the compiler takes the local rate limit's only).
	TypedPerFilterConfig map[string]*Any `json:"typedPerFilterConfig,omitempty"`
	// Unsupported names another action than route.
	Unsupported string `json:"-"`
	// Refused names the first field set that the proxy does not do.
	Refused string `json:"-"`
	action  oneof
}

// routeRefused are Route's fields the proxy refuses.
var routeRefused = map[protowire.Number]string{
	10: "response_headers_to_add", 11: "response_headers_to_remove",
}

func (m *Route) unmarshal(b []byte) error {
	err := fields(b, func(f field) error {
		switch f.num {
		case 2, 3, 7, 17, 18:
			if !f.member() {
				return nil
			}
			if m.action.to(f.num) {
				m.Route, m.Unsupported = nil, ""
			}
		}
		switch f.num {
		case 14:
			return f.str(&m.Name)
		case 1:
			return msg(f, &m.Match)
		case 2:
			return msg(f, &m.Route)
		case 9:
			return msgs(f, &m.RequestHeadersToAdd)
		case 12:
			return f.strs(&m.RequestHeadersToRemove)
		case 3:
			m.Unsupported = "redirect"
		case 7:
			m.Unsupported = "direct_response"
		case 17:
			m.Unsupported = "filter_action"
		case 18:
			m.Unsupported = "non_forwarding_action"
		case 13:
			return mapEntry(f, &m.TypedPerFilterConfig)
		}
		refuseSet(f, &m.Refused, routeRefused)
		return nil
	})
	if err != nil {
		return err
	}
	for _, a := range m.TypedPerFilterConfig {
		if err := a.resolve(); err != nil {
			return err
		}
	}
	return nil
}

// RouteMatch is envoy.config.route.v3.RouteMatch: a prefix or an exact
// path, case-sensitive or not, and headers. Other path specifiers are
// named in Unsupported; other conditions (query parameters, …) in
// Conditions, so that a route is never taken for more than it says.
type RouteMatch struct {
	Prefix              *string                  `json:"prefix,omitempty"`
	Path                *string                  `json:"path,omitempty"`
	SafeRegex           *RegexMatcher            `json:"safeRegex,omitempty"`
	PathSeparatedPrefix *string                  `json:"pathSeparatedPrefix,omitempty"`
	CaseSensitive       *bool                    `json:"caseSensitive,omitempty"`
	Headers             []*HeaderMatcher         `json:"headers,omitempty"`
	QueryParameters     []*QueryParameterMatcher `json:"queryParameters,omitempty"`
	// GRPC matches gRPC requests only (content-type application/grpc…).
	GRPC *Unread `json:"grpc,omitempty"`
	// RuntimeFraction matches a share of the requests (its runtime key
	// overrides nothing: the proxy has no runtime).
	RuntimeFraction *RuntimeFractionalPercent `json:"runtimeFraction,omitempty"`
	// ConnectMatcher, the path specifier of CONNECT requests, matches
	// those alone (they have no path).
	ConnectMatcher *Unread `json:"connectMatcher,omitempty"`
	Unsupported    string  `json:"-"` // another path specifier
	Conditions     string  `json:"-"` // the first condition the proxy does not read
	path           oneof
}

func (m *RouteMatch) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1, 2, 10, 12, 14, 15:
			if !f.member() {
				return nil
			}
			if m.path.to(f.num) {
				m.Prefix, m.Path, m.SafeRegex, m.PathSeparatedPrefix, m.ConnectMatcher, m.Unsupported = nil, nil, nil, nil, nil, ""
			}
		}
		switch f.num {
		case 1:
			return f.strOpt(&m.Prefix)
		case 2:
			return f.strOpt(&m.Path)
		case 10:
			return msg(f, &m.SafeRegex)
		case 14:
			return f.strOpt(&m.PathSeparatedPrefix)
		case 4:
			return f.boolValue(&m.CaseSensitive)
		case 6:
			return msgs(f, &m.Headers)
		case 7:
			return msgs(f, &m.QueryParameters)
		case 8:
			return msg(f, &m.GRPC)
		case 9:
			return msg(f, &m.RuntimeFraction)
		case 12:
			return msg(f, &m.ConnectMatcher)
		case 15:
			m.Unsupported = "path_match_policy"
		case 11, 13, 16:
			if m.Conditions == "" {
				m.Conditions = routeConditions[f.num]
			}
		}
		return nil
	})
}

// routeConditions names RouteMatch's conditions the proxy does not read.
var routeConditions = map[protowire.Number]string{11: "tls_context", 13: "dynamic_metadata", 16: "filter_state"}

// QueryParameterMatcher is envoy.config.route.v3.QueryParameterMatcher.
type QueryParameterMatcher struct {
	Name         string         `json:"name,omitempty"`
	StringMatch  *StringMatcher `json:"stringMatch,omitempty"`
	PresentMatch *bool          `json:"presentMatch,omitempty"`
	specifier    oneof
}

func (m *QueryParameterMatcher) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if (f.num == 5 || f.num == 6) && f.member(6) && m.specifier.to(f.num) {
			m.StringMatch, m.PresentMatch = nil, nil
		}
		switch f.num {
		case 1:
			return f.str(&m.Name)
		case 5:
			return msg(f, &m.StringMatch)
		case 6:
			return f.boolOpt(&m.PresentMatch)
		}
		return nil
	})
}

// RouteAction is envoy.config.route.v3.RouteAction.
type RouteAction struct {
	Cluster           string             `json:"cluster,omitempty"`
	WeightedClusters  *WeightedCluster   `json:"weightedClusters,omitempty"`
	Timeout           *Duration          `json:"timeout,omitempty"`
	RetryPolicy       *RetryPolicy       `json:"retryPolicy,omitempty"`
	MaxStreamDuration *MaxStreamDuration `json:"maxStreamDuration,omitempty"`
	// RequestMirrorPolicies copy the route's requests to other clusters.
	RequestMirrorPolicies []*RequestMirrorPolicy `json:"requestMirrorPolicies,omitempty"`
	// HostRewriteLiteral replaces the request's authority upstream.
	HostRewriteLiteral string `json:"hostRewriteLiteral,omitempty"`
	// IdleTimeout ends a stream that carried nothing either way for this
	// long (0: never); unset: the connection manager's (5 minutes).
	IdleTimeout *Duration `json:"idleTimeout,omitempty"`
	// UpgradeConfigs: CONNECT alone, with connect_config (terminated here).
	UpgradeConfigs []*RouteUpgradeConfig `json:"upgradeConfigs,omitempty"`
	Unsupported    string                `json:"-"` // another cluster specifier
	// Refused names the first field set that the proxy does not do
	// (rewrites, mirrors, hedging, subsets…).
	Refused   string `json:"-"`
	specifier oneof
}

// routeActionRefused are RouteAction's fields the proxy refuses.
var routeActionRefused = map[protowire.Number]string{
	4: "metadata_match", 5: "prefix_rewrite", 32: "regex_rewrite", 41: "path_rewrite_policy", 45: "path_rewrite",
	7: "auto_host_rewrite", 29: "host_rewrite_header", 35: "host_rewrite_path_regex",
	33: "retry_policy_typed_config", 13: "rate_limits", 17: "cors",
	23: "max_grpc_timeout", 28: "grpc_timeout_offset", 34: "internal_redirect_policy",
	26: "internal_redirect_action", 27: "hedge_policy",
}

// RequestMirrorPolicy is RouteAction.RequestMirrorPolicy: a copy of a
// share of the route's requests goes to Cluster, its answer dropped.
type RequestMirrorPolicy struct {
	Cluster         string                    `json:"cluster,omitempty"`
	RuntimeFraction *RuntimeFractionalPercent `json:"runtimeFraction,omitempty"`
	// DisableShadowHostSuffixAppend keeps the copy's authority as it is
	// (Envoy appends -shadow).
	DisableShadowHostSuffixAppend bool   `json:"disableShadowHostSuffixAppend,omitempty"`
	HostRewriteLiteral            string `json:"hostRewriteLiteral,omitempty"`
	// Refused names the first field set that the proxy does not do (the
	// cluster from a header, header changes for the copies). trace_sampled
	// is read as unset: the proxy does not trace.
	Refused string `json:"-"`
}

var requestMirrorPolicyRefused = map[protowire.Number]string{5: "cluster_header", 7: "request_headers_mutations"}

func (m *RequestMirrorPolicy) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&m.Cluster)
		case 3:
			return msg(f, &m.RuntimeFraction)
		case 6:
			return f.boolean(&m.DisableShadowHostSuffixAppend)
		case 8:
			return f.str(&m.HostRewriteLiteral)
		}
		refuseSet(f, &m.Refused, requestMirrorPolicyRefused)
		return nil
	})
}

// MaxStreamDuration is RouteAction.MaxStreamDuration.
type MaxStreamDuration struct {
	MaxStreamDuration *Duration `json:"maxStreamDuration,omitempty"`
	// GRPCTimeoutHeader is set when grpc_timeout_header_max or _offset is
	// (Envoy then enforces the caller's grpc-timeout; the proxy does not).
	GRPCTimeoutHeader bool `json:"-"`
}

func (m *MaxStreamDuration) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.duration(&m.MaxStreamDuration)
		case 2, 3:
			m.GRPCTimeoutHeader = true
		}
		return nil
	})
}

func (m *RouteAction) unmarshal(b []byte) error {
	err := fields(b, func(f field) error {
		switch f.num {
		case 1, 2, 3, 37, 39:
			if !f.member() {
				return nil
			}
			if m.specifier.to(f.num) {
				m.Cluster, m.WeightedClusters, m.Unsupported = "", nil, ""
			}
		}
		switch f.num {
		case 1:
			return f.str(&m.Cluster)
		case 8:
			return f.duration(&m.Timeout)
		case 9:
			return msg(f, &m.RetryPolicy)
		case 36:
			return msg(f, &m.MaxStreamDuration)
		case 30:
			return msgs(f, &m.RequestMirrorPolicies)
		case 6:
			return f.str(&m.HostRewriteLiteral)
		case 24:
			return f.duration(&m.IdleTimeout)
		case 25:
			return msgs(f, &m.UpgradeConfigs)
		case 2:
			m.Unsupported = "cluster_header"
		case 3:
			return msg(f, &m.WeightedClusters)
		case 37:
			m.Unsupported = "cluster_specifier_plugin"
		case 39:
			m.Unsupported = "inline_cluster_specifier_plugin"
		}
		refuseSet(f, &m.Refused, routeActionRefused)
		return nil
	})
	for _, u := range m.UpgradeConfigs {
		nested(&m.Refused, "upgrade_configs", u.Refused)
	}
	return err
}

// RouteUpgradeConfig is RouteAction.UpgradeConfig. The proxy takes one
// kind of upgrade: CONNECT with connect_config, terminated (its stream's
// bytes go to the cluster over TCP).
type RouteUpgradeConfig struct {
	UpgradeType   string  `json:"upgradeType,omitempty"`
	Enabled       *bool   `json:"enabled,omitempty"`
	ConnectConfig *Unread `json:"connectConfig,omitempty"`
	// Refused names what the proxy does not do: another upgrade (a
	// WebSocket), CONNECT forwarded as a request (no connect_config), a
	// PROXY protocol header, CONNECT over POST.
	Refused string `json:"-"`
}

func (m *RouteUpgradeConfig) unmarshal(b []byte) error {
	var connect []byte
	err := fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&m.UpgradeType)
		case 2:
			return f.boolValue(&m.Enabled)
		case 3:
			if err := msg(f, &m.ConnectConfig); err != nil {
				return err
			}
			connect = append(connect, f.b...)
		}
		return nil
	})
	if err != nil {
		return err
	}
	switch {
	case !isConnect(m.UpgradeType):
		m.Refused = "upgrade_type " + strconv.Quote(m.UpgradeType)
	case m.ConnectConfig == nil && (m.Enabled == nil || *m.Enabled):
		m.Refused = "CONNECT without connect_config (forwarded as a request)"
	}
	_ = fields(connect, func(f field) error {
		refuseSet(f, &m.Refused, map[protowire.Number]string{1: "connect_config.proxy_protocol_config", 2: "connect_config.allow_post"})
		return nil
	})
	return nil
}

// WeightedCluster is envoy.config.route.v3.WeightedCluster: each request
// goes to one of Clusters, picked at random in proportion to the weights.
type WeightedCluster struct {
	Clusters []*ClusterWeight `json:"clusters,omitempty"`
	// TotalWeight is deprecated in Envoy: the sum of the weights decides;
	// when set, it must equal that sum.
	TotalWeight *uint32 `json:"totalWeight,omitempty"`
	// Refused names the first field set that the proxy does not do (how
	// the random value is picked).
	Refused string `json:"-"`
}

// weightedClusterRefused are WeightedCluster's fields the proxy refuses.
var weightedClusterRefused = map[protowire.Number]string{
	2: "runtime_key_prefix", 4: "header_name", 5: "use_hash_policy",
}

func (m *WeightedCluster) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return msgs(f, &m.Clusters)
		case 3:
			return f.uint32Value(&m.TotalWeight)
		}
		refuseSet(f, &m.Refused, weightedClusterRefused)
		return nil
	})
}

// ClusterWeight is WeightedCluster.ClusterWeight.
type ClusterWeight struct {
	Name   string  `json:"name,omitempty"`
	Weight *uint32 `json:"weight,omitempty"`
	// Refused names the first field set that the proxy does not do (a
	// cluster by header, header changes, subsets, per-filter settings,
	// host rewrites).
	Refused string `json:"-"`
}

// clusterWeightRefused are ClusterWeight's fields the proxy refuses.
var clusterWeightRefused = map[protowire.Number]string{
	12: "cluster_header", 3: "metadata_match", 4: "request_headers_to_add", 9: "request_headers_to_remove",
	5: "response_headers_to_add", 6: "response_headers_to_remove", 10: "typed_per_filter_config", 11: "host_rewrite_literal",
}

func (m *ClusterWeight) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&m.Name)
		case 2:
			return f.uint32Value(&m.Weight)
		}
		refuseSet(f, &m.Refused, clusterWeightRefused)
		return nil
	})
}

// RetryPolicy is envoy.config.route.v3.RetryPolicy. Conditions on
// headers (which widen or narrow what is retried) are named in
// Unsupported.
type RetryPolicy struct {
	RetryOn              string        `json:"retryOn,omitempty"`
	NumRetries           *uint32       `json:"numRetries,omitempty"`
	PerTryTimeout        *Duration     `json:"perTryTimeout,omitempty"`
	RetriableStatusCodes []uint32      `json:"retriableStatusCodes,omitempty"`
	RetryBackOff         *RetryBackOff `json:"retryBackOff,omitempty"`
	Unsupported          string        `json:"-"`
}

func (m *RetryPolicy) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&m.RetryOn)
		case 2:
			return f.uint32Value(&m.NumRetries)
		case 3:
			return f.duration(&m.PerTryTimeout)
		case 7:
			return f.uint32s(&m.RetriableStatusCodes)
		case 8:
			return msg(f, &m.RetryBackOff)
		case 9:
			m.Unsupported = "retriable_headers"
		case 10:
			m.Unsupported = "retriable_request_headers"
		}
		return nil
	})
}

// RetryBackOff is RetryPolicy.RetryBackOff.
type RetryBackOff struct {
	BaseInterval *Duration `json:"baseInterval,omitempty"`
	MaxInterval  *Duration `json:"maxInterval,omitempty"`
}

func (m *RetryBackOff) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.duration(&m.BaseInterval)
		case 2:
			return f.duration(&m.MaxInterval)
		}
		return nil
	})
}

// HeaderValueOption is envoy.config.core.v3.HeaderValueOption.
type HeaderValueOption struct {
	Header *HeaderValue `json:"header,omitempty"`
}

func (m *HeaderValueOption) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 1 {
			return msg(f, &m.Header)
		}
		return nil
	})
}

// HeaderValue is envoy.config.core.v3.HeaderValue.
type HeaderValue struct {
	Key   string `json:"key,omitempty"`
	Value string `json:"value,omitempty"`
}

func (m *HeaderValue) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&m.Key)
		case 2:
			return f.str(&m.Value)
		}
		return nil
	})
}
