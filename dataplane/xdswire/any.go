package xdswire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// Type URLs of the resources and typed configs this package decodes.
const (
	typePrefix = "type.googleapis.com/"

	ListenerType = typePrefix + "envoy.config.listener.v3.Listener"
	RouteType    = typePrefix + "envoy.config.route.v3.RouteConfiguration"
	ClusterType  = typePrefix + "envoy.config.cluster.v3.Cluster"
	EndpointType = typePrefix + "envoy.config.endpoint.v3.ClusterLoadAssignment"
	SecretType   = typePrefix + "envoy.extensions.transport_sockets.tls.v3.Secret"

	HTTPConnectionManagerType = typePrefix + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	RouterType                = typePrefix + "envoy.extensions.filters.http.router.v3.Router"
	RBACFilterType            = typePrefix + "envoy.extensions.filters.http.rbac.v3.RBAC"
	LocalRateLimitType        = typePrefix + "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
	HTTPFaultType             = typePrefix + "envoy.extensions.filters.http.fault.v3.HTTPFault"
	JWTAuthenticationType     = typePrefix + "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
	DownstreamTLSType         = typePrefix + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
	UpstreamTLSType           = typePrefix + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
	QUICDownstreamType        = typePrefix + "envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport"
	QUICUpstreamType          = typePrefix + "envoy.extensions.transport_sockets.quic.v3.QuicUpstreamTransport"
	HTTPProtocolOptionsType   = typePrefix + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// Router is envoy.extensions.filters.http.router.v3.Router. The proxy
// reads none of its settings: statistics and tracing spans change nothing
// a request gets, and the proxy never adds Envoy's informational x-envoy-*
// headers (suppress_envoy_headers or not); what would change a request is
// refused.
type Router struct {
	// Refused names the first field set that would: upstream access logs,
	// upstream HTTP filters, header checks that refuse requests, a timeout
	// taken from the caller's x-envoy-expected-rq-timeout-ms.
	Refused string `json:"-"`
}

var routerRefused = map[protowire.Number]string{
	3: "upstream_log", 9: "upstream_log_options", 8: "upstream_http_filters", 5: "strict_check_headers",
	6: "respect_expected_rq_timeout",
}

func (m *Router) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		refuseSet(f, &m.Refused, routerRefused)
		return nil
	})
}

// decoders make the message of each type URL this package knows.
var decoders = map[string]func() unmarshaler{
	ListenerType:               func() unmarshaler { return &Listener{} },
	RouteType:                  func() unmarshaler { return &RouteConfiguration{} },
	ClusterType:                func() unmarshaler { return &Cluster{} },
	EndpointType:               func() unmarshaler { return &ClusterLoadAssignment{} },
	SecretType:                 func() unmarshaler { return &Secret{} },
	HTTPConnectionManagerType:  func() unmarshaler { return &HTTPConnectionManager{} },
	TCPProxyType:               func() unmarshaler { return &TCPProxy{} },
	RouterType:                 func() unmarshaler { return &Router{} },
	RBACFilterType:             func() unmarshaler { return &RBACFilter{} },
	LocalRateLimitType:         func() unmarshaler { return &LocalRateLimit{} },
	HTTPFaultType:              func() unmarshaler { return &HTTPFault{} },
	JWTAuthenticationType:      func() unmarshaler { return &JWTAuthentication{} },
	DownstreamTLSType:          func() unmarshaler { return &DownstreamTLSContext{} },
	UpstreamTLSType:            func() unmarshaler { return &UpstreamTLSContext{} },
	QUICDownstreamType:         func() unmarshaler { return &QUICDownstreamTransport{} },
	QUICUpstreamType:           func() unmarshaler { return &QUICUpstreamTransport{} },
	HTTPProtocolOptionsType:    func() unmarshaler { return &HTTPProtocolOptions{} },
	OpenTelemetryConfigType:    func() unmarshaler { return &OpenTelemetryConfig{} },
	StdoutAccessLogType:        func() unmarshaler { return &StreamAccessLog{} },
	StderrAccessLogType:        func() unmarshaler { return &StreamAccessLog{Stderr: true} },
	OpenTelemetryAccessLogType: func() unmarshaler { return &OpenTelemetryAccessLog{} },
}

// Any is google.protobuf.Any. Inside resources (typed configs), Msg holds
// the decoded message when this package knows its type, else nil; in the
// protocol messages it is left for Decode. Once decoded, Value is dropped:
// the message is what stays in force, not its bytes too.
type Any struct {
	TypeURL string
	Value   []byte
	Msg     any
}

func (a *Any) unmarshal(b []byte) error {
	a.Msg = nil // a second occurrence on the wire replaces the value: decode again
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&a.TypeURL)
		case 2:
			return f.bytes(&a.Value)
		}
		return nil
	})
}

// resolve decodes the value when its type is known.
func (a *Any) resolve() error {
	mk, ok := decoders[a.TypeURL]
	if !ok || a.Msg != nil { // unknown, or decoded already
		return nil
	}
	m := mk()
	if err := m.unmarshal(a.Value); err != nil {
		return fmt.Errorf("%s: %w", shortType(a.TypeURL), err)
	}
	a.Msg, a.Value = m, nil
	return nil
}

// typedConfig reads a typed_config field and decodes what it holds.
func (f field) typedConfig(dst **Any) error {
	if err := msg(f, dst); err != nil {
		return err
	}
	return (*dst).resolve()
}

// Decode decodes a resource of a type this package knows: *Listener,
// *RouteConfiguration, *Cluster, *ClusterLoadAssignment or *Secret (and the
// typed configs inside them).
func Decode(a *Any) (any, error) {
	if a == nil {
		return nil, fmt.Errorf("no resource")
	}
	if _, ok := decoders[a.TypeURL]; !ok {
		return nil, fmt.Errorf("type %s is not one the built-in proxy reads", a.TypeURL)
	}
	if err := a.resolve(); err != nil {
		return nil, err
	}
	return a.Msg, nil
}

// MarshalJSON writes the Any as proto JSON does: "@type" and the
// message's own fields (only "@type" for a type this package does not
// know).
func (a Any) MarshalJSON() ([]byte, error) {
	t := []byte(`{"@type":` + strconv.Quote(a.TypeURL))
	if a.Msg == nil {
		return append(t, '}'), nil
	}
	inner, err := json.Marshal(a.Msg)
	if err != nil {
		return nil, err
	}
	inner = bytes.TrimPrefix(inner, []byte("{"))
	if !bytes.HasPrefix(inner, []byte("}")) {
		t = append(t, ',')
	}
	return append(t, inner...), nil
}

func shortType(url string) string {
	return strings.TrimPrefix(url, typePrefix)
}

// mapEntry reads one entry of a map<string, V> field.
func mapEntry[T any, P interface {
	*T
	unmarshaler
}](f field, dst *map[string]*T) error {
	if err := f.want(protowire.BytesType); err != nil {
		return err
	}
	var key string
	var v *T
	err := fields(f.b, func(g field) error {
		switch g.num {
		case 1:
			return g.str(&key)
		case 2:
			return msg[T, P](g, &v)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if v == nil {
		v = new(T) // an entry with no value holds the default message
	}
	if *dst == nil {
		*dst = map[string]*T{}
	}
	(*dst)[key] = v
	return nil
}
