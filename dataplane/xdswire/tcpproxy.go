package xdswire

import "google.golang.org/protobuf/encoding/protowire"

// TCPProxyType is the tcp_proxy network filter's config.
const TCPProxyType = typePrefix + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"

// TCPProxy is envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy as
// the proxy takes it: every connection to the listener goes to Cluster,
// tunnelled in a CONNECT stream to TunnelingConfig.Hostname (the only way
// the mesh carries TCP between proxies).
type TCPProxy struct {
	StatPrefix string `json:"statPrefix,omitempty"`
	Cluster    string `json:"cluster,omitempty"`
	// WeightedClusters, the other cluster specifier, spreads connections
	// over clusters by weight (a service's versions).
	WeightedClusters *TCPWeightedCluster `json:"weightedClusters,omitempty"`
	TunnelingConfig  *TunnelingConfig    `json:"tunnelingConfig,omitempty"`
	// IdleTimeout ends a connection that carried nothing either way for
	// this long (0: never); unset: an hour, as Envoy.
	IdleTimeout *Duration `json:"idleTimeout,omitempty"`
	// MaxConnectAttempts bounds the tries to open the tunnel, each on
	// another endpoint if there is one (unset: one, as Envoy).
	MaxConnectAttempts *uint32 `json:"maxConnectAttempts,omitempty"`
	// Refused names the first field set that the proxy does not do
	// (on-demand clusters, subsets, access logs, connect retries, hashing,
	// connection lifetimes, PROXY protocol…).
	Refused   string `json:"-"`
	specifier oneof
}

var tcpProxyRefused = map[protowire.Number]string{
	14: "on_demand", 9: "metadata_match", 3: "downstream_idle_timeout", 4: "upstream_idle_timeout",
	5: "access_log", 18: "backoff_options", 11: "hash_policy",
	13: "max_downstream_connection_duration", 20: "max_downstream_connection_duration_jitter_percentage",
	15: "access_log_flush_interval", 16: "flush_access_log_on_connected", 17: "access_log_options",
	19: "proxy_protocol_tlvs", 23: "proxy_protocol_tlv_merge_policy", 21: "upstream_connect_mode",
	22: "max_early_data_bytes", 24: "check_drain_close",
}

func (m *TCPProxy) unmarshal(b []byte) error {
	err := fields(b, func(f field) error {
		if (f.num == 2 || f.num == 10) && !f.member() {
			return nil
		}
		if (f.num == 2 || f.num == 10) && m.specifier.to(f.num) {
			m.Cluster, m.WeightedClusters = "", nil
		}
		switch f.num {
		case 1:
			return f.str(&m.StatPrefix)
		case 2:
			return f.str(&m.Cluster)
		case 10:
			return msg(f, &m.WeightedClusters)
		case 12:
			return msg(f, &m.TunnelingConfig)
		case 8:
			return f.duration(&m.IdleTimeout)
		case 7:
			return f.uint32Value(&m.MaxConnectAttempts)
		}
		refuseSet(f, &m.Refused, tcpProxyRefused)
		return nil
	})
	if m.TunnelingConfig != nil {
		nested(&m.Refused, "tunneling_config", m.TunnelingConfig.Refused)
	}
	if m.WeightedClusters != nil {
		for _, c := range m.WeightedClusters.Clusters {
			nested(&m.Refused, "weighted_clusters", c.Refused)
		}
	}
	return err
}

// TCPWeightedCluster is TcpProxy.WeightedCluster: each connection goes to
// one of Clusters, picked at random in proportion to the weights.
type TCPWeightedCluster struct {
	Clusters []*TCPClusterWeight `json:"clusters,omitempty"`
}

func (m *TCPWeightedCluster) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 1 {
			return msgs(f, &m.Clusters)
		}
		return nil
	})
}

// TCPClusterWeight is TcpProxy.WeightedCluster.ClusterWeight.
type TCPClusterWeight struct {
	Name   string `json:"name,omitempty"`
	Weight uint32 `json:"weight,omitempty"`
	// Refused names metadata_match (subsets), which the proxy does not do.
	Refused string `json:"-"`
}

func (m *TCPClusterWeight) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&m.Name)
		case 2:
			return f.uint32(&m.Weight)
		}
		refuseSet(f, &m.Refused, map[protowire.Number]string{3: "metadata_match"})
		return nil
	})
}

// TunnelingConfig is TcpProxy.TunnelingConfig: CONNECT to Hostname.
type TunnelingConfig struct {
	Hostname string `json:"hostname,omitempty"`
	// Refused names the first field set that the proxy does not do
	// (POST instead of CONNECT, headers added, answers' headers kept…).
	Refused string `json:"-"`
}

var tunnelingConfigRefused = map[protowire.Number]string{
	2: "use_post", 3: "headers_to_add", 4: "propagate_response_headers", 5: "post_path",
	6: "propagate_response_trailers", 7: "request_id_extension", 8: "request_id_header", 9: "request_id_metadata_key",
}

func (m *TunnelingConfig) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 1 {
			return f.str(&m.Hostname)
		}
		refuseSet(f, &m.Refused, tunnelingConfigRefused)
		return nil
	})
}
