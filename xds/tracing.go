package xds

import (
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// ControlPlaneCluster is the bootstrap's cluster of the control plane
// (xDS, and the spans, metrics and access logs proxies export).
const ControlPlaneCluster = "xds_cluster"

// OpenTelemetryTracer names Envoy's OpenTelemetry tracer.
const OpenTelemetryTracer = "envoy.tracers.opentelemetry"

// Tracing is the mesh's distributed tracing: proxies record a span of each
// request of a recorded trace and export it over OTLP/gRPC to the control
// plane. A request that brings a W3C traceparent keeps its trace and its
// decision; one that brings none starts a trace, recorded with
// probability SamplingPercent / 100.
type Tracing struct {
	SamplingPercent float64
}

// tracingExportTimeout bounds one export of spans.
const tracingExportTimeout = 10 * time.Second

// controlPlaneService is the gRPC service proxies export telemetry to:
// the control plane, through the bootstrap's cluster.
func controlPlaneService() *core.GrpcService {
	return &core.GrpcService{
		TargetSpecifier: &core.GrpcService_EnvoyGrpc_{EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: ControlPlaneCluster}},
		Timeout:         durationpb.New(tracingExportTimeout),
	}
}

// hcmTracing is a connection manager's tracing for the proxy, nil when
// the mesh traces nothing. Spans carry the service as "name.namespace".
func (b *builder) hcmTracing() *hcm.HttpConnectionManager_Tracing {
	t := b.mesh.Tracing
	if t == nil {
		return nil
	}
	otel := &tracev3.OpenTelemetryConfig{
		GrpcService: controlPlaneService(),
		ServiceName: b.proxy.Service + "." + b.proxy.Namespace,
	}
	return &hcm.HttpConnectionManager_Tracing{
		RandomSampling: &typev3.Percent{Value: t.SamplingPercent},
		Provider: &tracev3.Tracing_Http{
			Name:       OpenTelemetryTracer,
			ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: toAny(otel)},
		},
	}
}
