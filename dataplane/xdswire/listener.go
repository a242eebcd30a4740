package xdswire

import (
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// Listener is envoy.config.listener.v3.Listener.
type Listener struct {
	Name         string         `json:"name,omitempty"`
	Address      *Address       `json:"address,omitempty"`
	FilterChains []*FilterChain `json:"filterChains,omitempty"`
	// APIListener is set for proxyless gRPC clients' listeners.
	APIListener *Unread `json:"apiListener,omitempty"`
	// UDPListenerConfig makes a UDP listener a QUIC one (QUICOptions).
	UDPListenerConfig *UDPListenerConfig `json:"udpListenerConfig,omitempty"`
	// Refused names the first field set that would change what Envoy
	// accepts or how (more addresses, listener filters, original
	// destinations, socket options, a listener not bound, access logs…).
	Refused string `json:"-"`
}

var (
	listenerRefused = map[protowire.Number]string{
		33: "additional_addresses", 36: "fcds_config", 32: "filter_chain_matcher", 25: "default_filter_chain",
		9: "listener_filters", 13: "socket_options", 22: "access_log", 30: "enable_mptcp", 27: "internal_listener",
	}
	listenerRefusedTrue = map[protowire.Number]string{4: "use_original_dst", 10: "transparent", 11: "freebind"}
)

func (m *Listener) unmarshal(b []byte) error {
	err := fields(b, func(f field) error {
		switch f.num {
		case 18:
			return msg(f, &m.UDPListenerConfig)
		case 1:
			return f.str(&m.Name)
		case 2:
			return msg(f, &m.Address)
		case 3:
			return msgs(f, &m.FilterChains)
		case 19:
			return msg(f, &m.APIListener)
		case 26: // bind_to_port: false leaves the port to another listener
			var bind *bool
			if err := f.boolValue(&bind); err != nil {
				return err
			}
			if !*bind && m.Refused == "" {
				m.Refused = "bind_to_port false"
			}
			return nil
		}
		if name, ok := listenerRefusedTrue[f.num]; ok {
			return refuseTrue(f, &m.Refused, name)
		}
		refuseSet(f, &m.Refused, listenerRefused)
		return nil
	})
	if u := m.UDPListenerConfig; u != nil {
		nested(&m.Refused, "udp_listener_config", u.Refused)
	}
	return err
}

// Unread is a message whose presence is all the proxy reads of it.
type Unread struct{}

func (*Unread) unmarshal([]byte) error { return nil }

// Address is envoy.config.core.v3.Address; only socket addresses are
// decoded.
type Address struct {
	SocketAddress *SocketAddress `json:"socketAddress,omitempty"`
	Unsupported   string         `json:"-"` // a pipe or an internal address
	address       oneof
}

func (m *Address) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num <= 3 && !f.member() {
			return nil
		}
		if f.num <= 3 && m.address.to(f.num) {
			m.SocketAddress, m.Unsupported = nil, ""
		}
		switch f.num {
		case 1:
			return msg(f, &m.SocketAddress)
		case 2:
			m.Unsupported = "pipe"
		case 3:
			m.Unsupported = "envoy_internal_address"
		}
		return nil
	})
}

// Protocol is envoy.config.core.v3.SocketAddress.Protocol.
type Protocol int32

// Socket protocols.
const (
	TCP Protocol = 0
	UDP Protocol = 1
)

var protocolNames = []string{"TCP", "UDP"}

func (p Protocol) String() string               { return enumName(protocolNames, int32(p)) }
func (p Protocol) MarshalJSON() ([]byte, error) { return enumJSON(protocolNames, int32(p)) }

// SocketAddress is envoy.config.core.v3.SocketAddress.
type SocketAddress struct {
	Protocol  Protocol `json:"protocol,omitempty"`
	Address   string   `json:"address,omitempty"`
	PortValue uint32   `json:"portValue,omitempty"`
	port      oneof
}

func (m *SocketAddress) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if (f.num == 3 || f.num == 4) && !f.member(3) {
			return nil
		}
		if (f.num == 3 || f.num == 4) && m.port.to(f.num) {
			m.PortValue = 0 // a named port: the proxy has no port
		}
		switch f.num {
		case 1:
			return enum(f, &m.Protocol)
		case 2:
			return f.str(&m.Address)
		case 3:
			return f.uint32(&m.PortValue)
		}
		return nil
	})
}

// FilterChain is envoy.config.listener.v3.FilterChain.
type FilterChain struct {
	FilterChainMatch *Unread          `json:"filterChainMatch,omitempty"`
	Filters          []*Filter        `json:"filters,omitempty"`
	TransportSocket  *TransportSocket `json:"transportSocket,omitempty"`
	Name             string           `json:"name,omitempty"`
}

func (m *FilterChain) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return msg(f, &m.FilterChainMatch)
		case 3:
			return msgs(f, &m.Filters)
		case 6:
			return msg(f, &m.TransportSocket)
		case 7:
			return f.str(&m.Name)
		}
		return nil
	})
}

// Filter is envoy.config.listener.v3.Filter (a network filter).
type Filter struct {
	Name        string `json:"name,omitempty"`
	TypedConfig *Any   `json:"typedConfig,omitempty"`
}

func (m *Filter) unmarshal(b []byte) error {
	return namedTypedConfig(b, 4, 5, &m.Name, &m.TypedConfig)
}

// namedTypedConfig reads a message made of a name (field 1) and a typed
// config (field typed), as filters and transport sockets are; other, if
// not 0, is the typed config's alternative in their oneof
// (config_discovery), which the proxy does not read.
func namedTypedConfig(b []byte, typed, other protowire.Number, name *string, tc **Any) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(name)
		case typed:
			return f.typedConfig(tc)
		case other:
			if f.member() {
				*tc = nil
			}
		}
		return nil
	})
}

// TransportSocket is envoy.config.core.v3.TransportSocket.
type TransportSocket struct {
	Name        string `json:"name,omitempty"`
	TypedConfig *Any   `json:"typedConfig,omitempty"`
}

func (m *TransportSocket) unmarshal(b []byte) error {
	return namedTypedConfig(b, 3, 0, &m.Name, &m.TypedConfig)
}

// HTTPConnectionManager is
// envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.
type HTTPConnectionManager struct {
	StatPrefix  string              `json:"statPrefix,omitempty"`
	RDS         *RDS                `json:"rds,omitempty"`
	RouteConfig *RouteConfiguration `json:"routeConfig,omitempty"`
	HTTPFilters []*HTTPFilter       `json:"httpFilters,omitempty"`
	Unsupported string              `json:"-"` // scoped_routes
	// ForwardClientCertDetails is the XFCC mode (0 SANITIZE … 4
	// ALWAYS_FORWARD_ONLY); SetCurrentClientCertDetails what SANITIZE_SET
	// and APPEND_FORWARD put in it.
	ForwardClientCertDetails    ForwardClientCertDetails     `json:"forwardClientCertDetails,omitempty"`
	SetCurrentClientCertDetails *SetCurrentClientCertDetails `json:"setCurrentClientCertDetails,omitempty"`
	// GenerateRequestID is generate_request_id: unset means true (Envoy
	// sets x-request-id on a request that has none).
	GenerateRequestID *bool `json:"generateRequestId,omitempty"`
	// The protocol options, read for what they would change (named in
	// Refused).
	HTTP1Options  *HTTP1Options              `json:"httpProtocolOptions,omitempty"`
	HTTP2Options  *HTTP2Options              `json:"http2ProtocolOptions,omitempty"`
	HTTP3Options  *HTTP3Options              `json:"http3ProtocolOptions,omitempty"`
	CommonOptions *CommonHTTPProtocolOptions `json:"commonHttpProtocolOptions,omitempty"`
	// Tracing, if set, makes the proxy trace requests and export spans.
	Tracing *Tracing `json:"tracing,omitempty"`
	// AccessLogs, if any, make the proxy log every request.
	AccessLogs []*AccessLog `json:"accessLog,omitempty"`
	// UpgradeConfigs: CONNECT alone (routes with connect_config end the
	// tunnels).
	UpgradeConfigs []*HCMUpgradeConfig `json:"upgradeConfigs,omitempty"`
	// Refused names the first field set to something the proxy does not
	// do (slash merging, escaped-slash handling, other upgrades, extensions…).
	Refused string `json:"-"`
	routes  oneof
}

// ForwardClientCertDetails is the connection manager's XFCC mode.
type ForwardClientCertDetails int32

// XFCC modes.
const (
	XFCCSanitize    ForwardClientCertDetails = 0
	XFCCSanitizeSet ForwardClientCertDetails = 3
)

var xfccNames = []string{"SANITIZE", "FORWARD_ONLY", "APPEND_FORWARD", "SANITIZE_SET", "ALWAYS_FORWARD_ONLY"}

func (d ForwardClientCertDetails) String() string { return enumName(xfccNames, int32(d)) }
func (d ForwardClientCertDetails) MarshalJSON() ([]byte, error) {
	return enumJSON(xfccNames, int32(d))
}

// SetCurrentClientCertDetails is the connection manager's
// SetCurrentClientCertDetails.
type SetCurrentClientCertDetails struct {
	Subject *bool      `json:"subject,omitempty"`
	Cert    bool       `json:"cert,omitempty"`
	Chain   bool       `json:"chain,omitempty"`
	DNS     bool       `json:"dns,omitempty"`
	URI     bool       `json:"uri,omitempty"`
	Format  XFCCFormat `json:"format,omitempty"` // TEXT (0) or JSON
	Issuer  bool       `json:"issuer,omitempty"`
}

// XFCCFormat is the XFCC header's format.
type XFCCFormat int32

var xfccFormatNames = []string{"TEXT", "JSON"}

func (f XFCCFormat) MarshalJSON() ([]byte, error) { return enumJSON(xfccFormatNames, int32(f)) }

func (m *SetCurrentClientCertDetails) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.boolValue(&m.Subject)
		case 3:
			return f.boolean(&m.Cert)
		case 4:
			return f.boolean(&m.DNS)
		case 5:
			return f.boolean(&m.URI)
		case 6:
			return f.boolean(&m.Chain)
		case 7:
			return enum(f, &m.Format)
		case 8:
			return f.boolean(&m.Issuer)
		}
		return nil
	})
}

// hcmRefused are the connection manager's fields the proxy refuses when
// set (messages) or not zero (enums, booleans).
var hcmRefused = map[protowire.Number]string{
	60: "forward_client_cert_matcher",
	33: "merge_slashes", 36: "request_id_extension",
	38: "local_reply_config", 52: "early_header_mutation_extensions", 46: "original_ip_detection_extensions",
	50: "typed_header_validation_config",
	// Headers Envoy would add or change: x-request-id in answers, Via,
	// x-envoy-downstream-service-cluster/node (add_user_agent, below).
	37: "always_set_request_id_in_response", 22: "via",
}

// hcmRefusedTrue are the connection manager's BoolValue fields the proxy
// refuses when true: use_remote_address makes Envoy append the peer to
// x-forwarded-for and treat requests as from the edge (a new x-request-id
// for each); add_user_agent adds Envoy's own headers.
var hcmRefusedTrue = map[protowire.Number]string{14: "use_remote_address", 6: "add_user_agent"}

func (m *HTTPConnectionManager) unmarshal(b []byte) error {
	err := fields(b, func(f field) error {
		switch f.num {
		case 3, 4, 31:
			if !f.member() {
				return nil
			}
			if m.routes.to(f.num) {
				m.RDS, m.RouteConfig, m.Unsupported = nil, nil, ""
			}
		}
		switch f.num {
		case 2:
			return f.str(&m.StatPrefix)
		case 3:
			return msg(f, &m.RDS)
		case 4:
			return msg(f, &m.RouteConfig)
		case 5:
			return msgs(f, &m.HTTPFilters)
		case 13:
			return msgs(f, &m.AccessLogs)
		case 31:
			m.Unsupported = "scoped_routes"
		case 16:
			return enum(f, &m.ForwardClientCertDetails)
		case 17:
			return msg(f, &m.SetCurrentClientCertDetails)
		case 15:
			return f.boolValue(&m.GenerateRequestID)
		case 8:
			return msg(f, &m.HTTP1Options)
		case 9:
			return msg(f, &m.HTTP2Options)
		case 44:
			return msg(f, &m.HTTP3Options)
		case 35:
			return msg(f, &m.CommonOptions)
		case 7:
			return msg(f, &m.Tracing)
		case 23:
			return msgs(f, &m.UpgradeConfigs)
		}
		if name, ok := hcmRefusedTrue[f.num]; ok {
			return refuseTrue(f, &m.Refused, name)
		}
		refuseSet(f, &m.Refused, hcmRefused)
		// Escaped slashes kept as they are (0, 1) is what the proxy does;
		// rejecting, unescaping or redirecting is not.
		if f.num == 45 && f.typ == protowire.VarintType && f.u > 1 && m.Refused == "" {
			m.Refused = "path_with_escaped_slashes_action"
		}
		return nil
	})
	if m.HTTP1Options != nil {
		nested(&m.Refused, "http_protocol_options", m.HTTP1Options.Refused)
	}
	if m.HTTP2Options != nil {
		nested(&m.Refused, "http2_protocol_options", m.HTTP2Options.Refused)
	}
	if m.HTTP3Options != nil {
		nested(&m.Refused, "http3_protocol_options", m.HTTP3Options.Refused)
	}
	if m.CommonOptions != nil {
		nested(&m.Refused, "common_http_protocol_options", m.CommonOptions.Refused)
	}
	if m.Tracing != nil {
		nested(&m.Refused, "tracing", m.Tracing.Refused)
	}
	for _, u := range m.UpgradeConfigs {
		nested(&m.Refused, "upgrade_configs", u.Refused)
	}
	return err
}

// HCMUpgradeConfig is the connection manager's UpgradeConfig: the proxy
// takes CONNECT, with no filter chain of its own.
type HCMUpgradeConfig struct {
	UpgradeType string `json:"upgradeType,omitempty"`
	Enabled     *bool  `json:"enabled,omitempty"`
	// Refused names another upgrade type (a WebSocket), or filters.
	Refused string `json:"-"`
}

func (m *HCMUpgradeConfig) unmarshal(b []byte) error {
	err := fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&m.UpgradeType)
		case 3:
			return f.boolValue(&m.Enabled)
		}
		refuseSet(f, &m.Refused, map[protowire.Number]string{2: "filters"})
		return nil
	})
	if !isConnect(m.UpgradeType) && m.Refused == "" {
		m.Refused = "upgrade_type " + strconv.Quote(m.UpgradeType)
	}
	return err
}

// isConnect reports whether an upgrade type is CONNECT (Envoy compares
// them without case), the only upgrade the proxy takes.
func isConnect(upgradeType string) bool { return strings.EqualFold(upgradeType, "CONNECT") }

// ConnectEnabled reports whether the connection manager takes CONNECT
// requests (an upgrade config says so and is not disabled).
func (m *HTTPConnectionManager) ConnectEnabled() bool {
	for _, u := range m.UpgradeConfigs {
		if isConnect(u.UpgradeType) && (u.Enabled == nil || *u.Enabled) {
			return true
		}
	}
	return false
}

// RDS is the connection manager's Rds.
type RDS struct {
	RouteConfigName string `json:"routeConfigName,omitempty"`
}

func (m *RDS) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 2 {
			return f.str(&m.RouteConfigName)
		}
		return nil
	})
}

// HTTPFilter is the connection manager's HttpFilter.
type HTTPFilter struct {
	Name        string `json:"name,omitempty"`
	TypedConfig *Any   `json:"typedConfig,omitempty"`
	IsOptional  bool   `json:"isOptional,omitempty"`
}

func (m *HTTPFilter) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&m.Name)
		case 4:
			return f.typedConfig(&m.TypedConfig)
		case 5:
			m.TypedConfig = nil // config_discovery, the other config_type
		case 6:
			return f.boolean(&m.IsOptional)
		}
		return nil
	})
}
