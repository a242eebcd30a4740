package config

import (
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/micromesh/micromesh/xds"
	"github.com/micromesh/micromesh/xds/bootstrap"
)

// The control plane's tracing config, as the sidecar reads it: both
// listeners trace, at the mesh's sampling, under the service's name.
func TestCompileTracing(t *testing.T) {
	if ControlPlaneCluster != bootstrap.XDSCluster {
		t.Fatalf("ControlPlaneCluster %q is not the bootstrap's %q", ControlPlaneCluster, bootstrap.XDSCluster)
	}
	m := &xds.Mesh{TrustDomain: "micromesh.local", Roots: []byte("x"), Tracing: &xds.Tracing{SamplingPercent: 2.5}}
	c := compiled(t, sidecarOf(t, m, "default", "client"))
	for name, tr := range map[string]*Tracing{"outbound": c.Outbound.Tracing, "inbound": c.Inbound.Tracing, "inbound-quic": c.InboundQUIC.Tracing} {
		if tr == nil || tr.Sampling != 0.025 || tr.Service != "client.default" {
			t.Errorf("%s: tracing %+v; want 2.5 %% under client.default", name, tr)
		}
	}
	m.Tracing = nil
	if c := compiled(t, sidecarOf(t, m, "default", "client")); c.Outbound.Tracing != nil || c.Inbound.Tracing != nil {
		t.Error("a mesh without tracing traced")
	}

	// overall_sampling multiplies; unset percentages are 100 %.
	r := sidecarOf(t, &xds.Mesh{TrustDomain: "micromesh.local", Roots: []byte("x"), Tracing: &xds.Tracing{SamplingPercent: 50}}, "default", "client")
	mutateHCM(t, findListener(&r, "outbound"), func(m *hcm.HttpConnectionManager) {
		m.Tracing.OverallSampling = &typev3.Percent{Value: 20}
	})
	mutateHCM(t, findListener(&r, "inbound"), func(m *hcm.HttpConnectionManager) { m.Tracing.RandomSampling = nil })
	c = compiled(t, r)
	if c.Outbound.Tracing.Sampling != 0.1 || c.Inbound.Tracing.Sampling != 1 {
		t.Errorf("sampling %v and %v, want 0.1 and 1", c.Outbound.Tracing.Sampling, c.Inbound.Tracing.Sampling)
	}
}

// What the proxy cannot do with traces is refused, not ignored.
func TestCompileTracingRefusals(t *testing.T) {
	tracing := func(change func(*hcm.HttpConnectionManager_Tracing, *tracev3.OpenTelemetryConfig)) func(*envoyResources) {
		return func(r *envoyResources) {
			mutateHCM(t, findListener(r, "outbound"), func(m *hcm.HttpConnectionManager) {
				otel := &tracev3.OpenTelemetryConfig{
					GrpcService: &core.GrpcService{TargetSpecifier: &core.GrpcService_EnvoyGrpc_{EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: ControlPlaneCluster}}},
					ServiceName: "client.default",
				}
				m.Tracing = &hcm.HttpConnectionManager_Tracing{}
				change(m.Tracing, otel)
				if m.Tracing.Provider == nil && otel != nil {
					m.Tracing.Provider = &tracev3.Tracing_Http{Name: OpenTelemetryTracer, ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(t, otel)}}
				}
			})
		}
	}
	refusals(t, []refusal{
		{"no gRPC service", tracing(func(_ *hcm.HttpConnectionManager_Tracing, o *tracev3.OpenTelemetryConfig) {
			*o = tracev3.OpenTelemetryConfig{}
		}), "grpc_service"},
		{"another tracer", tracing(func(tr *hcm.HttpConnectionManager_Tracing, _ *tracev3.OpenTelemetryConfig) {
			tr.Provider = &tracev3.Tracing_Http{Name: "envoy.tracers.zipkin", ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(t, &tracev3.ZipkinConfig{CollectorCluster: "z"})}}
		}), "envoy.tracers.zipkin"},
		{"another cluster", tracing(func(_ *hcm.HttpConnectionManager_Tracing, o *tracev3.OpenTelemetryConfig) {
			o.GrpcService.GetEnvoyGrpc().ClusterName = "otel-collector"
		}), `"otel-collector"`},
		{"OTLP over HTTP", tracing(func(_ *hcm.HttpConnectionManager_Tracing, o *tracev3.OpenTelemetryConfig) {
			o.HttpService = &core.HttpService{HttpUri: &core.HttpUri{Uri: "http://c/v1/traces"}}
		}), "http_service"},
		{"custom tags", tracing(func(tr *hcm.HttpConnectionManager_Tracing, _ *tracev3.OpenTelemetryConfig) {
			tr.MaxPathTagLength = wrapperspb.UInt32(10)
		}), "max_path_tag_length"},
		{"upstream spans", tracing(func(tr *hcm.HttpConnectionManager_Tracing, _ *tracev3.OpenTelemetryConfig) {
			tr.SpawnUpstreamSpan = wrapperspb.Bool(true)
		}), "spawn_upstream_span"},
		{"verbose", tracing(func(tr *hcm.HttpConnectionManager_Tracing, _ *tracev3.OpenTelemetryConfig) { tr.Verbose = true }), "verbose"},
	})
}
