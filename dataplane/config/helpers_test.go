package config

import (
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

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
	ctx := &tlsv3.DownstreamTlsContext{}
	mustUnpack(t, l.FilterChains[0].TransportSocket.GetTypedConfig(), ctx)
	ctx.RequireClientCertificate = wrapperspb.Bool(v)
	a, err := anypb.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l.FilterChains[0].TransportSocket.ConfigType = &core.TransportSocket_TypedConfig{TypedConfig: a}
}
