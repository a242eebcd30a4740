package xdswire

import "google.golang.org/protobuf/encoding/protowire"

// DiscoveryType is envoy.config.cluster.v3.Cluster.DiscoveryType.
type DiscoveryType int32

// Discovery types.
const (
	Static      DiscoveryType = 0
	StrictDNS   DiscoveryType = 1
	LogicalDNS  DiscoveryType = 2
	EDS         DiscoveryType = 3
	OriginalDst DiscoveryType = 4
)

var discoveryTypeNames = []string{"STATIC", "STRICT_DNS", "LOGICAL_DNS", "EDS", "ORIGINAL_DST"}

func (t DiscoveryType) String() string               { return enumName(discoveryTypeNames, int32(t)) }
func (t DiscoveryType) MarshalJSON() ([]byte, error) { return enumJSON(discoveryTypeNames, int32(t)) }

// LBPolicy is envoy.config.cluster.v3.Cluster.LbPolicy.
type LBPolicy int32

// Load-balancing policies.
const (
	RoundRobin   LBPolicy = 0
	LeastRequest LBPolicy = 1
)

var lbPolicyNames = []string{"ROUND_ROBIN", "LEAST_REQUEST", "RING_HASH", "RANDOM", "", "MAGLEV", "CLUSTER_PROVIDED", "LOAD_BALANCING_POLICY_CONFIG"}

func (p LBPolicy) String() string               { return enumName(lbPolicyNames, int32(p)) }
func (p LBPolicy) MarshalJSON() ([]byte, error) { return enumJSON(lbPolicyNames, int32(p)) }

// Cluster is envoy.config.cluster.v3.Cluster.
type Cluster struct {
	Name                          string                 `json:"name,omitempty"`
	Type                          DiscoveryType          `json:"type,omitempty"`
	EDSClusterConfig              *EDSClusterConfig      `json:"edsClusterConfig,omitempty"`
	ConnectTimeout                *Duration              `json:"connectTimeout,omitempty"`
	LBPolicy                      LBPolicy               `json:"lbPolicy,omitempty"`
	LoadAssignment                *ClusterLoadAssignment `json:"loadAssignment,omitempty"`
	CircuitBreakers               *CircuitBreakers       `json:"circuitBreakers,omitempty"`
	OutlierDetection              *OutlierDetection      `json:"outlierDetection,omitempty"`
	TransportSocket               *TransportSocket       `json:"transportSocket,omitempty"`
	TypedExtensionProtocolOptions map[string]*Any        `json:"typedExtensionProtocolOptions,omitempty"`
	CommonLBConfig                *CommonLBConfig        `json:"commonLbConfig,omitempty"`
	LeastRequestLBConfig          *LeastRequestLBConfig  `json:"leastRequestLbConfig,omitempty"`
	Unsupported                   string                 `json:"-"` // cluster_type (a custom discovery type)
	// Refused names the first field set that would change where or how
	// Envoy sends requests in a way the proxy does not: active health
	// checks, subsets, a typed load-balancing policy, upstream filters,
	// per-endpoint transport sockets, the downstream's protocol, the
	// deprecated protocol options.
	Refused string `json:"-"`
}

// clusterRefused are the cluster's fields refused when set to more than
// their default; clusterRefusedPresent those refused whenever present (an
// empty http2_protocol_options still means HTTP/2).
var (
	clusterRefused = map[protowire.Number]string{
		8: "health_checks", 22: "lb_subset_config", 41: "load_balancing_policy", 40: "filters",
		26: "protocol_selection", 48: "upstream_config", 43: "transport_socket_matches", 59: "transport_socket_matcher",
		9: "max_requests_per_connection", 29: "common_http_protocol_options", 46: "upstream_http_protocol_options",
		51: "connection_pool_per_downstream_connection", 62: "queuing_policies",
	}
	clusterRefusedPresent = map[protowire.Number]string{13: "http_protocol_options", 14: "http2_protocol_options"}
)

// CommonLBConfig is Cluster.CommonLbConfig: only the panic threshold.
type CommonLBConfig struct {
	HealthyPanicThreshold *Percent `json:"healthyPanicThreshold,omitempty"`
}

func (m *CommonLBConfig) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 1 {
			return msg(f, &m.HealthyPanicThreshold)
		}
		return nil
	})
}

// Percent is envoy.type.v3.Percent.
type Percent struct {
	Value float64 `json:"value,omitempty"`
}

func (m *Percent) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 1 {
			return f.double(&m.Value)
		}
		return nil
	})
}

// LeastRequestLBConfig is Cluster.LeastRequestLbConfig: the number of
// random choices; its other fields are named in Unsupported.
type LeastRequestLBConfig struct {
	ChoiceCount *uint32 `json:"choiceCount,omitempty"`
	Unsupported string  `json:"-"`
}

func (m *LeastRequestLBConfig) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.uint32Value(&m.ChoiceCount)
		case 2:
			m.Unsupported = "active_request_bias"
		case 3:
			m.Unsupported = "slow_start_config"
		}
		return nil
	})
}

func (m *Cluster) unmarshal(b []byte) error {
	err := fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&m.Name)
		case 2:
			if !f.member(2) {
				return nil
			}
			m.Unsupported = ""
			return enum(f, &m.Type)
		case 38:
			if f.member() {
				m.Type, m.Unsupported = Static, "cluster_type"
			}
		case 3:
			return msg(f, &m.EDSClusterConfig)
		case 4:
			return f.duration(&m.ConnectTimeout)
		case 6:
			return enum(f, &m.LBPolicy)
		case 33:
			return msg(f, &m.LoadAssignment)
		case 10:
			return msg(f, &m.CircuitBreakers)
		case 19:
			return msg(f, &m.OutlierDetection)
		case 24:
			return msg(f, &m.TransportSocket)
		case 36:
			return mapEntry(f, &m.TypedExtensionProtocolOptions)
		case 27:
			return msg(f, &m.CommonLBConfig)
		case 37:
			return msg(f, &m.LeastRequestLBConfig)
		}
		if name, ok := clusterRefusedPresent[f.num]; ok && m.Refused == "" && f.member() {
			m.Refused = name
		}
		refuseSet(f, &m.Refused, clusterRefused)
		return nil
	})
	if err != nil {
		return err
	}
	for _, a := range m.TypedExtensionProtocolOptions {
		if err := a.resolve(); err != nil {
			return err
		}
	}
	return nil
}

// EDSClusterConfig is Cluster.EdsClusterConfig.
type EDSClusterConfig struct {
	ServiceName string `json:"serviceName,omitempty"`
}

func (m *EDSClusterConfig) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 2 {
			return f.str(&m.ServiceName)
		}
		return nil
	})
}

// CircuitBreakers is envoy.config.cluster.v3.CircuitBreakers.
type CircuitBreakers struct {
	Thresholds []*Thresholds `json:"thresholds,omitempty"`
}

func (m *CircuitBreakers) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 1 {
			return msgs(f, &m.Thresholds)
		}
		return nil
	})
}

// RoutingPriority is envoy.config.core.v3.RoutingPriority.
type RoutingPriority int32

// Routing priorities.
const (
	PriorityDefault RoutingPriority = 0
	PriorityHigh    RoutingPriority = 1
)

var routingPriorityNames = []string{"DEFAULT", "HIGH"}

func (p RoutingPriority) String() string { return enumName(routingPriorityNames, int32(p)) }
func (p RoutingPriority) MarshalJSON() ([]byte, error) {
	return enumJSON(routingPriorityNames, int32(p))
}

var thresholdsRefused = map[protowire.Number]string{8: "retry_budget", 7: "max_connection_pools"}

// Thresholds is CircuitBreakers.Thresholds.
type Thresholds struct {
	Priority           RoutingPriority `json:"priority,omitempty"`
	MaxConnections     *uint32         `json:"maxConnections,omitempty"`
	MaxPendingRequests *uint32         `json:"maxPendingRequests,omitempty"`
	MaxRequests        *uint32         `json:"maxRequests,omitempty"`
	MaxRetries         *uint32         `json:"maxRetries,omitempty"`
	// Refused: retry_budget (Envoy then bounds retries by a share of the
	// requests in flight instead of max_retries), max_connection_pools.
	Refused string `json:"-"`
}

func (m *Thresholds) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return enum(f, &m.Priority)
		case 2:
			return f.uint32Value(&m.MaxConnections)
		case 3:
			return f.uint32Value(&m.MaxPendingRequests)
		case 4:
			return f.uint32Value(&m.MaxRequests)
		case 5:
			return f.uint32Value(&m.MaxRetries)
		}
		refuseSet(f, &m.Refused, thresholdsRefused)
		return nil
	})
}

// OutlierDetection is envoy.config.cluster.v3.OutlierDetection.
type OutlierDetection struct {
	Consecutive5xx                         *uint32   `json:"consecutive5xx,omitempty"`
	Interval                               *Duration `json:"interval,omitempty"`
	BaseEjectionTime                       *Duration `json:"baseEjectionTime,omitempty"`
	MaxEjectionPercent                     *uint32   `json:"maxEjectionPercent,omitempty"`
	EnforcingConsecutive5xx                *uint32   `json:"enforcingConsecutive5xx,omitempty"`
	EnforcingSuccessRate                   *uint32   `json:"enforcingSuccessRate,omitempty"`
	EnforcingConsecutiveGatewayFailure     *uint32   `json:"enforcingConsecutiveGatewayFailure,omitempty"`
	SplitExternalLocalOriginErrors         bool      `json:"splitExternalLocalOriginErrors,omitempty"`
	ConsecutiveLocalOriginFailure          *uint32   `json:"consecutiveLocalOriginFailure,omitempty"`
	EnforcingConsecutiveLocalOriginFailure *uint32   `json:"enforcingConsecutiveLocalOriginFailure,omitempty"`
	EnforcingLocalOriginSuccessRate        *uint32   `json:"enforcingLocalOriginSuccessRate,omitempty"`
	EnforcingFailurePercentage             *uint32   `json:"enforcingFailurePercentage,omitempty"`
	EnforcingFailurePercentageLocalOrigin  *uint32   `json:"enforcingFailurePercentageLocalOrigin,omitempty"`
	MaxEjectionTime                        *Duration `json:"maxEjectionTime,omitempty"`
}

func (m *OutlierDetection) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.uint32Value(&m.Consecutive5xx)
		case 2:
			return f.duration(&m.Interval)
		case 3:
			return f.duration(&m.BaseEjectionTime)
		case 4:
			return f.uint32Value(&m.MaxEjectionPercent)
		case 5:
			return f.uint32Value(&m.EnforcingConsecutive5xx)
		case 6:
			return f.uint32Value(&m.EnforcingSuccessRate)
		case 11:
			return f.uint32Value(&m.EnforcingConsecutiveGatewayFailure)
		case 12:
			return f.boolean(&m.SplitExternalLocalOriginErrors)
		case 13:
			return f.uint32Value(&m.ConsecutiveLocalOriginFailure)
		case 14:
			return f.uint32Value(&m.EnforcingConsecutiveLocalOriginFailure)
		case 15:
			return f.uint32Value(&m.EnforcingLocalOriginSuccessRate)
		case 17:
			return f.uint32Value(&m.EnforcingFailurePercentage)
		case 18:
			return f.uint32Value(&m.EnforcingFailurePercentageLocalOrigin)
		case 21:
			return f.duration(&m.MaxEjectionTime)
		}
		return nil
	})
}

// ClusterLoadAssignment is envoy.config.endpoint.v3.ClusterLoadAssignment.
type ClusterLoadAssignment struct {
	ClusterName string                 `json:"clusterName,omitempty"`
	Endpoints   []*LocalityLBEndpoints `json:"endpoints,omitempty"`
	// Refused names the first policy the proxy does not apply: dropping a
	// share of requests (drop_overloads), dropping endpoints not refreshed
	// in time (endpoint_stale_after).
	Refused string `json:"-"`
}

var claPolicyRefused = map[protowire.Number]string{2: "drop_overloads", 4: "endpoint_stale_after"}

func (m *ClusterLoadAssignment) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&m.ClusterName)
		case 2:
			return msgs(f, &m.Endpoints)
		case 4:
			if err := f.want(protowire.BytesType); err != nil {
				return err
			}
			return fields(f.b, func(g field) error {
				refuseSet(g, &m.Refused, claPolicyRefused)
				return nil
			})
		}
		return nil
	})
}

// LocalityLBEndpoints is envoy.config.endpoint.v3.LocalityLbEndpoints.
type LocalityLBEndpoints struct {
	Locality    *Locality     `json:"locality,omitempty"`
	LBEndpoints []*LBEndpoint `json:"lbEndpoints,omitempty"`
	// Refused names what the proxy does not do: priorities other than 0
	// (Envoy keeps lower ones for failover), endpoints given another way
	// (load_balancer_endpoints, LEDS).
	Refused string `json:"-"`
}

var localityRefused = map[protowire.Number]string{5: "priority", 7: "load_balancer_endpoints", 8: "leds_cluster_locality_config"}

func (m *LocalityLBEndpoints) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return msg(f, &m.Locality)
		case 2:
			return msgs(f, &m.LBEndpoints)
		}
		refuseSet(f, &m.Refused, localityRefused)
		return nil
	})
}

// Locality is envoy.config.core.v3.Locality.
type Locality struct {
	Region  string `json:"region,omitempty"`
	Zone    string `json:"zone,omitempty"`
	SubZone string `json:"subZone,omitempty"`
}

func (m *Locality) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&m.Region)
		case 2:
			return f.str(&m.Zone)
		case 3:
			return f.str(&m.SubZone)
		}
		return nil
	})
}

// HealthStatus is envoy.config.core.v3.HealthStatus.
type HealthStatus int32

// Health statuses.
const (
	HealthUnknown   HealthStatus = 0
	HealthHealthy   HealthStatus = 1
	HealthUnhealthy HealthStatus = 2
	HealthDraining  HealthStatus = 3
	HealthTimeout   HealthStatus = 4
	HealthDegraded  HealthStatus = 5
)

var healthStatusNames = []string{"UNKNOWN", "HEALTHY", "UNHEALTHY", "DRAINING", "TIMEOUT", "DEGRADED"}

func (h HealthStatus) String() string               { return enumName(healthStatusNames, int32(h)) }
func (h HealthStatus) MarshalJSON() ([]byte, error) { return enumJSON(healthStatusNames, int32(h)) }

// LBEndpoint is envoy.config.endpoint.v3.LbEndpoint.
type LBEndpoint struct {
	Endpoint            *Endpoint    `json:"endpoint,omitempty"`
	HealthStatus        HealthStatus `json:"healthStatus,omitempty"`
	LoadBalancingWeight *uint32      `json:"loadBalancingWeight,omitempty"`
}

func (m *LBEndpoint) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 5:
			if f.member() {
				m.Endpoint = nil // endpoint_name, the other host identifier
			}
		case 1:
			return msg(f, &m.Endpoint)
		case 2:
			return enum(f, &m.HealthStatus)
		case 4:
			return f.uint32Value(&m.LoadBalancingWeight)
		}
		return nil
	})
}

// Endpoint is envoy.config.endpoint.v3.Endpoint.
type Endpoint struct {
	Address *Address `json:"address,omitempty"`
}

func (m *Endpoint) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 1 {
			return msg(f, &m.Address)
		}
		return nil
	})
}

// HTTPProtocolOptions is envoy.extensions.upstreams.http.v3.HttpProtocolOptions.
type HTTPProtocolOptions struct {
	CommonHTTPProtocolOptions *CommonHTTPProtocolOptions `json:"commonHttpProtocolOptions,omitempty"`
	ExplicitHTTPConfig        *ExplicitHTTPConfig        `json:"explicitHttpConfig,omitempty"`
	// Unsupported names the protocol's other choices: the downstream's
	// (use_downstream_protocol_config) or ALPN's (auto_config).
	Unsupported string `json:"-"`
	// Refused names the first other field set: automatic SNI and SAN
	// checks, upstream HTTP filters, header validation, cluster-wide
	// outlier, mirror, hash and retry policies.
	Refused  string `json:"-"`
	protocol oneof
}

var httpProtocolOptionsRefused = map[protowire.Number]string{
	2: "upstream_http_protocol_options", 6: "http_filters", 7: "header_validation_config",
	8: "outlier_detection", 9: "request_mirror_policies", 10: "hash_policy", 11: "retry_policy",
}

func (m *HTTPProtocolOptions) unmarshal(b []byte) error {
	err := fields(b, func(f field) error {
		if f.num >= 3 && f.num <= 5 {
			if !f.member() {
				return nil
			}
			if m.protocol.to(f.num) {
				m.ExplicitHTTPConfig, m.Unsupported = nil, ""
			}
		}
		switch f.num {
		case 1:
			return msg(f, &m.CommonHTTPProtocolOptions)
		case 3:
			return msg(f, &m.ExplicitHTTPConfig)
		case 4:
			m.Unsupported = "use_downstream_protocol_config"
		case 5:
			m.Unsupported = "auto_config"
		}
		refuseSet(f, &m.Refused, httpProtocolOptionsRefused)
		return nil
	})
	if e := m.ExplicitHTTPConfig; e != nil {
		nested(&m.Refused, "explicit_http_config", e.Refused)
	}
	return err
}

// CommonHTTPProtocolOptions is envoy.config.core.v3.HttpProtocolOptions:
// the idle timeout is the pool's business (the proxy closes idle
// connections on its own clock); every limit on a connection or stream
// Envoy would apply is named in Refused.
type CommonHTTPProtocolOptions struct {
	IdleTimeout *Duration `json:"idleTimeout,omitempty"`
	Refused     string    `json:"-"`
}

var commonHTTPProtocolOptionsRefused = map[protowire.Number]string{
	2: "max_headers_count", 3: "max_connection_duration", 4: "max_stream_duration",
	5: "headers_with_underscores_action", 6: "max_requests_per_connection", 7: "max_response_headers_kb",
	8: "max_connection_duration_jitter",
}

func (m *CommonHTTPProtocolOptions) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 1 {
			return f.duration(&m.IdleTimeout)
		}
		refuseSet(f, &m.Refused, commonHTTPProtocolOptionsRefused)
		return nil
	})
}

// ExplicitHTTPConfig is HttpProtocolOptions.ExplicitHttpConfig.
type ExplicitHTTPConfig struct {
	HTTPProtocolOptions  *HTTP1Options `json:"httpProtocolOptions,omitempty"`
	HTTP2ProtocolOptions *HTTP2Options `json:"http2ProtocolOptions,omitempty"`
	HTTP3ProtocolOptions *HTTP3Options `json:"http3ProtocolOptions,omitempty"`
	// Refused names the first option set that the proxy does not honour,
	// with its path.
	Refused string `json:"-"`
}

func (m *ExplicitHTTPConfig) unmarshal(b []byte) error {
	err := fields(b, func(f field) error {
		if f.num <= 3 && !f.member() {
			return nil
		}
		if f.num <= 3 {
			*m = ExplicitHTTPConfig{} // one protocol: the last one wins
		}
		switch f.num {
		case 1:
			return msg(f, &m.HTTPProtocolOptions)
		case 2:
			return msg(f, &m.HTTP2ProtocolOptions)
		case 3:
			return msg(f, &m.HTTP3ProtocolOptions)
		}
		return nil
	})
	switch {
	case m.HTTPProtocolOptions != nil:
		nested(&m.Refused, "http_protocol_options", m.HTTPProtocolOptions.Refused)
	case m.HTTP2ProtocolOptions != nil:
		nested(&m.Refused, "http2_protocol_options", m.HTTP2ProtocolOptions.Refused)
	case m.HTTP3ProtocolOptions != nil:
		nested(&m.Refused, "http3_protocol_options", m.HTTP3ProtocolOptions.Refused)
	}
	return err
}
