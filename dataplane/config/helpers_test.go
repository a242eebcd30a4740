package config

import (
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacfilter "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	quicv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/quic/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/micromesh/micromesh/dataplane/xdswire"
	"github.com/micromesh/micromesh/dataplane/xdswire/xdswiretest"
	"github.com/micromesh/micromesh/xds"
)

// envoyResources are resources as the control plane builds them, with
// go-control-plane's types; wire gives them as the sidecar receives them.
type envoyResources struct {
	Listeners []*listener.Listener
	Routes    []*route.RouteConfiguration
	Clusters  []*cluster.Cluster
	Endpoints []*endpoint.ClusterLoadAssignment
	Secrets   []*tlsv3.Secret
}

func (r envoyResources) wire(t *testing.T) Resources {
	t.Helper()
	return Resources{
		Listeners: xdswiretest.DecodeAll[*xdswire.Listener](t, r.Listeners),
		Routes:    xdswiretest.DecodeAll[*xdswire.RouteConfiguration](t, r.Routes),
		Clusters:  xdswiretest.DecodeAll[*xdswire.Cluster](t, r.Clusters),
		Endpoints: xdswiretest.DecodeAll[*xdswire.ClusterLoadAssignment](t, r.Endpoints),
		Secrets:   xdswiretest.DecodeAll[*xdswire.Secret](t, r.Secrets),
	}
}

// sidecarOf is what the control plane serves a built-in sidecar of service
// svc in namespace ns of m (a gRPC app behind it).
func sidecarOf(t *testing.T, m *xds.Mesh, ns, svc string) envoyResources {
	t.Helper()
	r, err := xds.Build(m, xds.Proxy{NodeID: "n", Namespace: ns, Service: svc, Kind: xds.KindBuiltin,
		InboundPort: 18443, OutboundPort: 15001, AppPort: 8080, AppProtocol: xds.ProtocolGRPC, CertDir: "/certs"})
	if err != nil {
		t.Fatal(err)
	}
	return envoyResources{Listeners: r.Listeners, Routes: r.Routes, Clusters: r.Clusters, Endpoints: r.Endpoints, Secrets: r.Secrets}
}

// compiled compiles r as the sidecar receives it; an error fails the test.
func compiled(t *testing.T, r envoyResources) *Config {
	t.Helper()
	c, err := Compile(r.wire(t))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustUnpack(t *testing.T, a *anypb.Any, m proto.Message) {
	t.Helper()
	if err := a.UnmarshalTo(m); err != nil {
		t.Fatal(err)
	}
}

func typedConfig(m proto.Message) *listener.Filter_TypedConfig {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return &listener.Filter_TypedConfig{TypedConfig: a}
}

// luaConfig stands in for an HTTP filter the proxy does not know.
func luaConfig() *hcm.HttpFilter_TypedConfig {
	a, err := anypb.New(&structpb.Struct{})
	if err != nil {
		panic(err)
	}
	return &hcm.HttpFilter_TypedConfig{TypedConfig: a}
}

func setRequireClientCert(t *testing.T, l *listener.Listener, v bool) {
	t.Helper()
	mutateDownstreamTLS(t, l, func(ctx *tlsv3.DownstreamTlsContext) { ctx.RequireClientCertificate = wrapperspb.Bool(v) })
}

// mutateDownstreamTLS changes the TLS context of l's transport socket
// (plain TLS or QUIC's).
func mutateDownstreamTLS(t *testing.T, l *listener.Listener, change func(*tlsv3.DownstreamTlsContext)) {
	t.Helper()
	ts := l.FilterChains[0].TransportSocket
	q := &quicv3.QuicDownstreamTransport{}
	if ts.GetTypedConfig().MessageIs(q) {
		mustUnpack(t, ts.GetTypedConfig(), q)
		change(q.DownstreamTlsContext)
		ts.ConfigType = &core.TransportSocket_TypedConfig{TypedConfig: mustAny(t, q)}
		return
	}
	ctx := &tlsv3.DownstreamTlsContext{}
	mustUnpack(t, ts.GetTypedConfig(), ctx)
	change(ctx)
	ts.ConfigType = &core.TransportSocket_TypedConfig{TypedConfig: mustAny(t, ctx)}
}

// mutateUpstreamTLS changes the TLS context of cluster c's transport
// socket (plain TLS or QUIC's).
func mutateUpstreamTLS(t *testing.T, c *cluster.Cluster, change func(*tlsv3.UpstreamTlsContext)) {
	t.Helper()
	ts := c.TransportSocket
	q := &quicv3.QuicUpstreamTransport{}
	if ts.GetTypedConfig().MessageIs(q) {
		mustUnpack(t, ts.GetTypedConfig(), q)
		change(q.UpstreamTlsContext)
		ts.ConfigType = &core.TransportSocket_TypedConfig{TypedConfig: mustAny(t, q)}
		return
	}
	ctx := &tlsv3.UpstreamTlsContext{}
	mustUnpack(t, ts.GetTypedConfig(), ctx)
	change(ctx)
	ts.ConfigType = &core.TransportSocket_TypedConfig{TypedConfig: mustAny(t, ctx)}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// findCluster returns the cluster named name.
func findCluster(t *testing.T, r *envoyResources, name string) *cluster.Cluster {
	t.Helper()
	for _, c := range r.Clusters {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no cluster %s", name)
	return nil
}

// findSecret returns the secret named name.
func findSecret(t *testing.T, r *envoyResources, name string) *tlsv3.Secret {
	t.Helper()
	for _, s := range r.Secrets {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no secret %s", name)
	return nil
}

// mutateRBAC changes the RBAC filter of listener l's connection manager.
func mutateRBAC(t *testing.T, l *listener.Listener, change func(*rbacfilter.RBAC)) {
	t.Helper()
	m := &hcm.HttpConnectionManager{}
	mustUnpack(t, l.FilterChains[0].Filters[0].GetTypedConfig(), m)
	for _, f := range m.HttpFilters {
		r := &rbacfilter.RBAC{}
		if f.GetTypedConfig().UnmarshalTo(r) != nil {
			continue
		}
		change(r)
		a, err := anypb.New(r)
		if err != nil {
			t.Fatal(err)
		}
		f.ConfigType = &hcm.HttpFilter_TypedConfig{TypedConfig: a}
		l.FilterChains[0].Filters[0].ConfigType = typedConfig(m)
		return
	}
	t.Fatal("the listener has no RBAC filter")
}
