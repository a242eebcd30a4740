package xdswire

import "google.golang.org/protobuf/encoding/protowire"

// Access loggers the proxy writes: Envoy's stream loggers.
const (
	StdoutAccessLogType = typePrefix + "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
	StderrAccessLogType = typePrefix + "envoy.extensions.access_loggers.stream.v3.StderrAccessLog"
)

// AccessLog is envoy.config.accesslog.v3.AccessLog: a logger, by its
// typed config. A filter (which requests are logged) is refused: the
// proxy logs every request or none.
type AccessLog struct {
	Name        string `json:"name,omitempty"`
	TypedConfig *Any   `json:"typedConfig,omitempty"`
	Refused     string `json:"-"`
}

func (m *AccessLog) unmarshal(b []byte) error {
	if err := namedTypedConfig(b, 4, 0, &m.Name, &m.TypedConfig); err != nil {
		return err
	}
	return fields(b, func(f field) error {
		refuseSet(f, &m.Refused, map[protowire.Number]string{2: "filter"})
		return nil
	})
}

// StreamAccessLog is envoy.extensions.access_loggers.stream.v3's
// StdoutAccessLog or StderrAccessLog: the proxy writes its own line (the
// access log's fields as structured log attributes); a format of one's
// own is refused.
type StreamAccessLog struct {
	Stderr  bool   `json:"-"`
	Refused string `json:"-"`
}

func (m *StreamAccessLog) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		refuseSet(f, &m.Refused, map[protowire.Number]string{1: "log_format"})
		return nil
	})
}
