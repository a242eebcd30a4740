package config

import (
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// explicitHTTP sets cluster hello.default's protocol to cfg (its QUIC
// cluster: HTTP/3).
func explicitHTTP(t *testing.T, r *envoyResources, cfg *httpv3.HttpProtocolOptions_ExplicitHttpConfig) {
	t.Helper()
	c := findCluster(t, r, "hello.default")
	key := "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	po := &httpv3.HttpProtocolOptions{}
	mustUnpack(t, c.TypedExtensionProtocolOptions[key], po)
	po.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: cfg}
	c.TypedExtensionProtocolOptions[key] = mustAny(t, po)
}

func http3With(q *core.QuicProtocolOptions) *httpv3.HttpProtocolOptions_ExplicitHttpConfig {
	return &httpv3.HttpProtocolOptions_ExplicitHttpConfig{ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http3ProtocolOptions{
		Http3ProtocolOptions: &core.Http3ProtocolOptions{QuicProtocolOptions: q}}}
}

// quicListenerOptions sets the inbound QUIC listener's QUIC options.
func quicListenerOptions(r *envoyResources, q *listener.QuicProtocolOptions) {
	findListener(r, "inbound-quic").UdpListenerConfig = &listener.UdpListenerConfig{QuicOptions: q}
}

// The HTTP/1, HTTP/2, HTTP/3 and QUIC options of clusters, connection
// managers and QUIC listeners: what would change what a request gets or
// how long a connection lives is refused, named with its path; buffer,
// parser and flood settings are accepted.
func TestProtocolOptionsAsEnvoys(t *testing.T) {
	refusals(t, []refusal{
		{"a cluster's HTTP/3 stream limit", func(r *envoyResources) {
			explicitHTTP(t, r, http3With(&core.QuicProtocolOptions{MaxConcurrentStreams: wrapperspb.UInt32(10)}))
		}, "explicit_http_config.http3_protocol_options.quic_protocol_options.max_concurrent_streams is not supported"},
		{"a cluster's QUIC idle timeout", func(r *envoyResources) {
			explicitHTTP(t, r, http3With(&core.QuicProtocolOptions{IdleNetworkTimeout: durationpb.New(time.Second)}))
		}, "quic_protocol_options.idle_network_timeout"},
		{"a cluster's HTTP/3 extended CONNECT", func(r *envoyResources) {
			explicitHTTP(t, r, &httpv3.HttpProtocolOptions_ExplicitHttpConfig{ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http3ProtocolOptions{
				Http3ProtocolOptions: &core.Http3ProtocolOptions{AllowExtendedConnect: true}}})
		}, "http3_protocol_options.allow_extended_connect"},
		{"a cluster's HTTP/2 keepalive", func(r *envoyResources) {
			explicitHTTP(t, r, &httpv3.HttpProtocolOptions_ExplicitHttpConfig{ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
				Http2ProtocolOptions: &core.Http2ProtocolOptions{ConnectionKeepalive: &core.KeepaliveSettings{Interval: durationpb.New(time.Second)}}}})
		}, "http2_protocol_options.connection_keepalive"},
		{"a cluster's HTTP/1 absolute URLs", func(r *envoyResources) {
			explicitHTTP(t, r, &httpv3.HttpProtocolOptions_ExplicitHttpConfig{ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{
				HttpProtocolOptions: &core.Http1ProtocolOptions{SendFullyQualifiedUrl: true}}})
		}, "http_protocol_options.send_fully_qualified_url"},
		{"a connection manager's HTTP/2 stream limit", func(r *envoyResources) {
			mutateHCM(t, findListener(r, "inbound"), func(m *hcm.HttpConnectionManager) {
				m.Http2ProtocolOptions = &core.Http2ProtocolOptions{MaxConcurrentStreams: wrapperspb.UInt32(100)}
			})
		}, "http2_protocol_options.max_concurrent_streams is not supported"},
		{"a connection manager's HTTP/1.0 default host", func(r *envoyResources) {
			mutateHCM(t, findListener(r, "outbound"), func(m *hcm.HttpConnectionManager) {
				m.HttpProtocolOptions = &core.Http1ProtocolOptions{AcceptHttp_10: true, DefaultHostForHttp_10: "x"}
			})
		}, "http_protocol_options.accept_http_10"},
		{"a connection manager's HTTP/3 metadata", func(r *envoyResources) {
			mutateHCM(t, findListener(r, "inbound-quic"), func(m *hcm.HttpConnectionManager) {
				m.Http3ProtocolOptions = &core.Http3ProtocolOptions{AllowMetadata: true}
			})
		}, "http3_protocol_options.allow_metadata"},
		{"a connection manager's connection lifetime", func(r *envoyResources) {
			mutateHCM(t, findListener(r, "inbound"), func(m *hcm.HttpConnectionManager) {
				m.CommonHttpProtocolOptions = &core.HttpProtocolOptions{MaxConnectionDuration: durationpb.New(time.Minute)}
			})
		}, "common_http_protocol_options.max_connection_duration"},
		{"a QUIC listener turned off", func(r *envoyResources) {
			quicListenerOptions(r, &listener.QuicProtocolOptions{Enabled: &core.RuntimeFeatureFlag{DefaultValue: wrapperspb.Bool(false), RuntimeKey: "k"}})
		}, "udp_listener_config.quic_options.enabled false"},
		{"a QUIC listener's handshake timeout", func(r *envoyResources) {
			quicListenerOptions(r, &listener.QuicProtocolOptions{CryptoHandshakeTimeout: durationpb.New(time.Second)})
		}, "udp_listener_config.quic_options.crypto_handshake_timeout"},
		{"a QUIC listener's stream limit", func(r *envoyResources) {
			quicListenerOptions(r, &listener.QuicProtocolOptions{QuicProtocolOptions: &core.QuicProtocolOptions{MaxConcurrentStreams: wrapperspb.UInt32(100)}})
		}, "udp_listener_config.quic_options.quic_protocol_options.max_concurrent_streams"},
		{"a UDP listener that is not QUIC", func(r *envoyResources) {
			findListener(r, "inbound-quic").UdpListenerConfig = &listener.UdpListenerConfig{}
		}, "a UDP listener needs udp_listener_config.quic_options"},
	})

	// Tuning that changes nothing a request gets is accepted.
	r := meshFor(t, "default", "client")
	explicitHTTP(t, &r, http3With(&core.QuicProtocolOptions{InitialStreamWindowSize: wrapperspb.UInt32(1 << 20), MaxPacketLength: wrapperspb.UInt64(1350)}))
	mutateHCM(t, findListener(&r, "inbound"), func(m *hcm.HttpConnectionManager) {
		m.Http2ProtocolOptions = &core.Http2ProtocolOptions{HpackTableSize: wrapperspb.UInt32(8192), InitialConnectionWindowSize: wrapperspb.UInt32(1 << 20),
			MaxOutboundFrames: wrapperspb.UInt32(5000)}
		m.CommonHttpProtocolOptions = &core.HttpProtocolOptions{IdleTimeout: durationpb.New(time.Hour)}
	})
	mutateHCM(t, findListener(&r, "inbound-quic"), func(m *hcm.HttpConnectionManager) {
		m.Http3ProtocolOptions = &core.Http3ProtocolOptions{DisableQpack: true}
	})
	quicListenerOptions(&r, &listener.QuicProtocolOptions{PacketsToReadToConnectionCountRatio: wrapperspb.UInt32(32), SendDisableActiveMigration: wrapperspb.Bool(true),
		Enabled: &core.RuntimeFeatureFlag{DefaultValue: wrapperspb.Bool(true), RuntimeKey: "k"}})
	if _, err := Compile(r.wire(t)); err != nil {
		t.Errorf("tuning only: %v", err)
	} else if !strings.Contains(findCluster(t, &r, "hello.default").String(), "initial_stream_window_size") {
		t.Error("the tuning did not reach the cluster")
	}
}
