package xdswire

import (
	"encoding/json"

	"google.golang.org/protobuf/encoding/protowire"
)

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

// OpenTelemetryAccessLogType is the typed config of Envoy's OpenTelemetry
// access logger.
const OpenTelemetryAccessLogType = typePrefix + "envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig"

// OpenTelemetryAccessLog is envoy.extensions.access_loggers.open_telemetry.v3's
// OpenTelemetryAccessLogConfig: each request as an OTLP log record whose
// attributes are Envoy command operators, exported over OTLP/gRPC to a
// cluster. The proxy writes the attributes it is given, as strings; a
// body, resource attributes, formatters, custom tags, filter state or an
// exporter other than Envoy's gRPC client are refused.
type OpenTelemetryAccessLog struct {
	GRPCService   *GRPCService `json:"grpcService,omitempty"`
	LogName       string       `json:"logName,omitempty"`
	Attributes    KeyFormats   `json:"attributes,omitempty"`
	FlushInterval *Duration    `json:"bufferFlushInterval,omitempty"`
	Refused       string       `json:"-"`
}

// KeyFormat is an attribute of an access log record: a key and the
// format of its value.
type KeyFormat struct {
	Key    string
	Format string
}

// KeyFormats are a record's attributes; in JSON, the KeyValueList they
// came as.
type KeyFormats []KeyFormat

// MarshalJSON writes the attributes as proto JSON of a KeyValueList.
func (k KeyFormats) MarshalJSON() ([]byte, error) {
	type value struct {
		StringValue string `json:"stringValue"`
	}
	type keyValue struct {
		Key   string `json:"key"`
		Value value  `json:"value"`
	}
	list := struct {
		Values []keyValue `json:"values"`
	}{}
	for _, a := range k {
		list.Values = append(list.Values, keyValue{a.Key, value{a.Format}})
	}
	return json.Marshal(list)
}

var otelAccessLogRefused = map[protowire.Number]string{1: "common_config", 2: "body", 4: "resource_attributes", 7: "formatters",
	8: "http_service", 13: "filter_state_objects_to_log", 14: "custom_tags", 15: "resource_detectors"}

func (m *OpenTelemetryAccessLog) unmarshal(b []byte) error {
	err := fields(b, func(f field) error {
		switch f.num {
		case 9:
			return msg(f, &m.GRPCService)
		case 10:
			return f.str(&m.LogName)
		case 11:
			return f.duration(&m.FlushInterval)
		case 3: // an opentelemetry.proto.common.v1.KeyValueList
			if err := f.want(protowire.BytesType); err != nil {
				return err
			}
			return fields(f.b, func(kv field) error {
				if kv.num != 1 {
					return nil
				}
				a := &keyFormat{}
				if err := msg(kv, &a); err != nil {
					return err
				}
				if a.refused != "" && m.Refused == "" {
					m.Refused = "attributes: " + a.refused
				}
				m.Attributes = append(m.Attributes, a.KeyFormat)
				return nil
			})
		}
		refuseSet(f, &m.Refused, otelAccessLogRefused)
		return nil
	})
	if g := m.GRPCService; g != nil {
		nested(&m.Refused, "grpc_service", g.Refused)
	}
	return err
}

// keyFormat decodes an opentelemetry.proto.common.v1.KeyValue whose value
// is a string (AnyValue.string_value).
type keyFormat struct {
	KeyFormat
	refused string
}

func (m *keyFormat) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&m.Key)
		case 2:
			if err := f.want(protowire.BytesType); err != nil {
				return err
			}
			return fields(f.b, func(v field) error {
				if v.num == 1 {
					return v.str(&m.Format)
				}
				if m.refused == "" {
					m.refused = "a value other than a string"
				}
				return nil
			})
		}
		return nil
	})
}
