package config

import (
	"fmt"
	"time"

	"github.com/micromesh/micromesh/dataplane/xdswire"
)

// Access loggers the built-in proxy writes.
const (
	StdoutAccessLogger = "envoy.access_loggers.stdout"
	TapAccessLogger    = "envoy.access_loggers.open_telemetry"
)

// Tap is a listener's OpenTelemetry access logger: each request, as an
// OTLP log record with the attributes asked for, to the control plane.
type Tap struct {
	LogName    string
	Attributes []TapAttribute
	// FlushInterval is how long records wait before they are sent (Envoy's
	// default, 1 s, when unset).
	FlushInterval time.Duration
}

// TapAttribute is an attribute of a tap record: its key and the request
// field its value is.
type TapAttribute struct {
	Key   string
	Field TapField
}

// TapField is a request field, as one of Envoy's command operators names it.
type TapField int

// The fields an attribute may carry: an attribute's format is exactly one
// of these operators (nothing around it), or the logger is refused.
const (
	TapSource     TapField = iota // %DOWNSTREAM_PEER_URI_SAN%: the caller's SPIFFE ID
	TapMethod                     // %REQ(:METHOD)%
	TapPath                       // %REQ(:PATH)%
	TapCode                       // %RESPONSE_CODE%
	TapGRPCStatus                 // %GRPC_STATUS_NUMBER%
	TapDurationMS                 // %DURATION%: milliseconds
	TapProtocol                   // %PROTOCOL%: HTTP/1.1, HTTP/2, HTTP/3
	TapRequestID                  // %REQ(X-REQUEST-ID)%
)

// TapFormats maps each operator the proxy writes to its field.
var TapFormats = map[string]TapField{
	"%DOWNSTREAM_PEER_URI_SAN%": TapSource,
	"%REQ(:METHOD)%":            TapMethod,
	"%REQ(:PATH)%":              TapPath,
	"%RESPONSE_CODE%":           TapCode,
	"%GRPC_STATUS_NUMBER%":      TapGRPCStatus,
	"%DURATION%":                TapDurationMS,
	"%PROTOCOL%":                TapProtocol,
	"%REQ(X-REQUEST-ID)%":       TapRequestID,
}

// defaultTapFlush is Envoy's buffer_flush_interval default.
const defaultTapFlush = time.Second

// compileAccessLogs reads a connection manager's access loggers: the
// proxy logs every request (one structured line, info level) when it has
// Envoy's stdout or stderr logger, and sends it to the control plane when
// it has Envoy's OpenTelemetry logger pointed there; anything it would not
// do as asked (a filter, a format of one's own, another logger, an
// operator it does not know) is refused.
func compileAccessLogs(logs []*xdswire.AccessLog) (stdout bool, tap *Tap, err error) {
	for _, l := range logs {
		if l.Refused != "" {
			return false, nil, fmt.Errorf("access log %q: %s is not supported (the sidecar logs every request, in its own format)", l.Name, l.Refused)
		}
		var msg any
		if l.TypedConfig != nil {
			msg = l.TypedConfig.Msg
		}
		switch c := msg.(type) {
		case *xdswire.StreamAccessLog:
			if c.Refused != "" {
				return false, nil, fmt.Errorf("access log %q: %s is not supported (the sidecar logs every request in its own format)", l.Name, c.Refused)
			}
			stdout = true
		case *xdswire.OpenTelemetryAccessLog:
			if tap != nil {
				return false, nil, fmt.Errorf("access log %q: a second OpenTelemetry access logger is not supported", l.Name)
			}
			if tap, err = compileTap(l.Name, c); err != nil {
				return false, nil, err
			}
		default:
			typ := "none"
			if l.TypedConfig != nil {
				typ = l.TypedConfig.TypeURL
			}
			return false, nil, fmt.Errorf("access log %q: type %s is not supported (the sidecar writes %s, stderr and %s)", l.Name, typ, StdoutAccessLogger, TapAccessLogger)
		}
	}
	return stdout, tap, nil
}

func compileTap(name string, c *xdswire.OpenTelemetryAccessLog) (*Tap, error) {
	if c.Refused != "" {
		return nil, fmt.Errorf("access log %q: %s is not supported (the sidecar sends attributes only)", name, c.Refused)
	}
	g := c.GRPCService
	if g == nil || g.EnvoyGRPC == nil {
		return nil, fmt.Errorf("access log %q: records go over gRPC to a cluster (grpc_service.envoy_grpc)", name)
	}
	if g.EnvoyGRPC.ClusterName != ControlPlaneCluster {
		return nil, fmt.Errorf("access log %q: cluster %q: the built-in proxy sends access logs to the control plane only (cluster %s)",
			name, g.EnvoyGRPC.ClusterName, ControlPlaneCluster)
	}
	t := &Tap{LogName: c.LogName, FlushInterval: c.FlushInterval.D()}
	if t.FlushInterval <= 0 {
		t.FlushInterval = defaultTapFlush
	}
	for _, a := range c.Attributes {
		f, ok := TapFormats[a.Format]
		if !ok {
			return nil, fmt.Errorf("access log %q: attribute %q: format %q is not supported (one of Envoy's operators the sidecar writes, alone: %%REQ(:PATH)%%, %%RESPONSE_CODE%%, …)", name, a.Key, a.Format)
		}
		t.Attributes = append(t.Attributes, TapAttribute{Key: a.Key, Field: f})
	}
	return t, nil
}
