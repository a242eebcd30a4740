package config

import (
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/micromesh/micromesh/dataplane/xdswire"
)

// ControlPlaneCluster is the bootstrap's name of the control plane's
// cluster (xds/bootstrap.XDSCluster): an OpenTelemetry tracer pointed at
// it exports spans over the sidecar's own connection to the control plane.
const ControlPlaneCluster = "xds_cluster"

// OpenTelemetryTracer is the tracer's extension name.
const OpenTelemetryTracer = "envoy.tracers.opentelemetry"

// Tracing is a listener's tracing: which requests that bring no trace
// context start a recorded trace, and the service name spans carry. A
// request that brings one (a W3C traceparent) keeps its trace and its
// decision (recorded or not), so a trace is recorded whole or not at all.
type Tracing struct {
	// Sampling is the share of new traces recorded, 0 to 1
	// (random_sampling × overall_sampling).
	Sampling float64
	// Service is the spans' service.name.
	Service string
}

// Sample decides whether a new trace is recorded.
func (t *Tracing) Sample() bool {
	switch {
	case t.Sampling >= 1:
		return true
	case t.Sampling <= 0:
		return false
	}
	return rand.Float64() < t.Sampling
}

// compileTracing reads a connection manager's tracing (nil: none).
func compileTracing(t *xdswire.Tracing) (*Tracing, error) {
	if t == nil {
		return nil, nil
	}
	if t.Provider == nil {
		// Envoy would take the bootstrap's tracer; the built-in proxy has none.
		return nil, errors.New("tracing without a provider is not supported (name envoy.tracers.opentelemetry)")
	}
	if t.Provider.Name != OpenTelemetryTracer {
		return nil, fmt.Errorf("tracer %q is not supported (only %s)", t.Provider.Name, OpenTelemetryTracer)
	}
	otel, err := typed[*xdswire.OpenTelemetryConfig](t.Provider.TypedConfig, xdswire.OpenTelemetryConfigType)
	if err != nil {
		return nil, fmt.Errorf("tracer %s: %w", t.Provider.Name, err)
	}
	g := otel.GRPCService
	if g == nil || g.EnvoyGRPC == nil {
		return nil, fmt.Errorf("tracer %s: spans go over gRPC to a cluster (grpc_service.envoy_grpc)", t.Provider.Name)
	}
	if g.EnvoyGRPC.ClusterName != ControlPlaneCluster {
		return nil, fmt.Errorf("tracer %s: cluster %q: the built-in proxy exports spans to the control plane only (cluster %s)",
			t.Provider.Name, g.EnvoyGRPC.ClusterName, ControlPlaneCluster)
	}
	out := &Tracing{Sampling: share(t.RandomSampling) * share(t.OverallSampling), Service: otel.ServiceName}
	if out.Service == "" {
		out.Service = "unknown_service:micromesh-sidecar" // as Envoy's default names itself
	}
	return out, nil
}

// share is a Percent as a share (unset: all, as Envoy reads tracing's).
func share(p *xdswire.Percent) float64 {
	if p == nil {
		return 1
	}
	return min(max(p.Value, 0), 100) / 100
}
