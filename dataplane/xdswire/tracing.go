package xdswire

import "google.golang.org/protobuf/encoding/protowire"

// OpenTelemetryConfigType is the typed config of Envoy's OpenTelemetry
// tracer (envoy.tracers.opentelemetry), the one provider the built-in
// proxy speaks.
const OpenTelemetryConfigType = typePrefix + "envoy.config.trace.v3.OpenTelemetryConfig"

// Tracing is the connection manager's Tracing: which requests start a
// trace (RandomSampling; unset means 100 %, as Envoy) and where spans go
// (Provider).
type Tracing struct {
	ClientSampling  *Percent    `json:"clientSampling,omitempty"`
	RandomSampling  *Percent    `json:"randomSampling,omitempty"`
	OverallSampling *Percent    `json:"overallSampling,omitempty"`
	Provider        *TracerHTTP `json:"provider,omitempty"`
	// Refused names the first field set that the proxy does not do
	// (custom tags, verbose spans, upstream spans…).
	Refused string `json:"-"`
}

var tracingRefused = map[protowire.Number]string{8: "custom_tags", 7: "max_path_tag_length", 10: "spawn_upstream_span"}

func (m *Tracing) unmarshal(b []byte) error {
	err := fields(b, func(f field) error {
		switch f.num {
		case 3:
			return msg(f, &m.ClientSampling)
		case 4:
			return msg(f, &m.RandomSampling)
		case 5:
			return msg(f, &m.OverallSampling)
		case 9:
			return msg(f, &m.Provider)
		case 6:
			var verbose bool
			if err := f.boolean(&verbose); err != nil {
				return err
			}
			if verbose && m.Refused == "" {
				m.Refused = "verbose"
			}
			return nil
		}
		refuseSet(f, &m.Refused, tracingRefused)
		return nil
	})
	if p := m.Provider; p != nil {
		nested(&m.Refused, "provider", p.Refused)
	}
	return err
}

// TracerHTTP is envoy.config.trace.v3.Tracing.Http: a tracer by name and
// typed config.
type TracerHTTP struct {
	Name        string `json:"name,omitempty"`
	TypedConfig *Any   `json:"typedConfig,omitempty"`
	Refused     string `json:"-"`
}

func (m *TracerHTTP) unmarshal(b []byte) error {
	if err := namedTypedConfig(b, 3, 0, &m.Name, &m.TypedConfig); err != nil {
		return err
	}
	if m.TypedConfig != nil {
		if o, ok := m.TypedConfig.Msg.(*OpenTelemetryConfig); ok {
			nested(&m.Refused, "opentelemetry", o.Refused)
		}
	}
	return nil
}

// OpenTelemetryConfig is envoy.config.trace.v3.OpenTelemetryConfig: spans
// exported over OTLP/gRPC to a cluster, under a service name.
type OpenTelemetryConfig struct {
	GRPCService *GRPCService `json:"grpcService,omitempty"`
	ServiceName string       `json:"serviceName,omitempty"`
	// Refused names the first field set that the proxy does not do: OTLP
	// over HTTP, other exporters, samplers or resource detectors.
	Refused string `json:"-"`
}

var otelRefused = map[protowire.Number]string{3: "http_service", 10: "exporter", 4: "resource_detectors", 5: "sampler"}

func (m *OpenTelemetryConfig) unmarshal(b []byte) error {
	err := fields(b, func(f field) error {
		switch f.num {
		case 1:
			return msg(f, &m.GRPCService)
		case 2:
			return f.str(&m.ServiceName)
		}
		refuseSet(f, &m.Refused, otelRefused)
		return nil
	})
	if g := m.GRPCService; g != nil {
		nested(&m.Refused, "grpc_service", g.Refused)
	}
	return err
}

// GRPCService is envoy.config.core.v3.GrpcService; only Envoy's own gRPC
// client to a named cluster is read.
type GRPCService struct {
	EnvoyGRPC *EnvoyGRPC `json:"envoyGrpc,omitempty"`
	Timeout   *Duration  `json:"timeout,omitempty"`
	Refused   string     `json:"-"`
}

var grpcServiceRefused = map[protowire.Number]string{2: "google_grpc", 5: "initial_metadata", 6: "retry_policy"}

func (m *GRPCService) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return msg(f, &m.EnvoyGRPC)
		case 3:
			return f.duration(&m.Timeout)
		}
		refuseSet(f, &m.Refused, grpcServiceRefused)
		return nil
	})
}

// EnvoyGRPC is GrpcService.EnvoyGrpc.
type EnvoyGRPC struct {
	ClusterName string `json:"clusterName,omitempty"`
	Authority   string `json:"authority,omitempty"`
}

func (m *EnvoyGRPC) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&m.ClusterName)
		case 2:
			return f.str(&m.Authority)
		}
		return nil
	})
}
