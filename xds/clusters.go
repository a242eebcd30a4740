package xds

import (
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	quicv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/quic/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/anypb"
)

const (
	connectTimeout = 5 * time.Second
	// httpProtocolOptionsKey names the upstream HTTP protocol options extension.
	httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// transport is how a proxy reaches a service.
type transport int

const (
	transportTLS  transport = iota // HTTP/2 over TLS (TCP)
	transportQUIC                  // HTTP/3 over QUIC (UDP)
)

// transportFor picks the transport from proxy p to service s: HTTP/3 over
// QUIC when both sides are built-in sidecars (every endpoint serving QUIC),
// HTTP/2 over TLS otherwise.
func transportFor(p Proxy, s *Service) transport {
	if p.Kind != KindBuiltin || len(s.Endpoints) == 0 {
		return transportTLS
	}
	for _, e := range s.Endpoints {
		if e.Kind != KindBuiltin || e.QUICPort == 0 {
			return transportTLS
		}
	}
	return transportQUIC
}

// outboundCluster is the cluster, named name, through which proxy p calls
// service s (or the instances of one of its versions: ofVersion).
func (b *builder) outboundCluster(s *Service, name string) *cluster.Cluster {
	pol := s.Policy
	c := &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
		EdsClusterConfig:     &cluster.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
		ConnectTimeout:       duration(connectTimeout),
		LbPolicy:             cluster.Cluster_ROUND_ROBIN,
		CircuitBreakers:      circuitBreakers(pol),
		OutlierDetection: &cluster.OutlierDetection{
			Consecutive_5Xx:                u32(pol.Consecutive5xx),
			ConsecutiveGatewayFailure:      u32(pol.Consecutive5xx),
			ConsecutiveLocalOriginFailure:  u32(pol.Consecutive5xx),
			SplitExternalLocalOriginErrors: true,
			// Envoy runs success-rate detection unless told not to; the
			// built-in sidecar does not run it: the same for both.
			EnforcingSuccessRate:            u32(0),
			EnforcingLocalOriginSuccessRate: u32(0),
			Interval:                        duration(10 * time.Second),
			BaseEjectionTime:                duration(pol.BaseEjectionTime),
			MaxEjectionTime:                 duration(10 * pol.BaseEjectionTime),
			MaxEjectionPercent:              u32(pol.MaxEjectionPercent),
		},
	}
	if pol.LoadBalancer == "least_request" && b.proxy.Kind != KindProxyless {
		c.LbPolicy = cluster.Cluster_LEAST_REQUEST
	}
	spiffe := b.mesh.SPIFFEID(s.Namespace, s.Name)
	if b.proxy.Kind == KindProxyless {
		c.TransportSocket = &core.TransportSocket{
			Name:       wellknown.TransportSocketTLS,
			ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: toAny(proxylessUpstreamTLS(spiffe))},
		}
		return c
	}
	upstream := sidecarUpstreamTLS(spiffe)
	switch transportFor(b.proxy, s) {
	case transportQUIC:
		upstream.CommonTlsContext.AlpnProtocols = []string{"h3"}
		c.TransportSocket = &core.TransportSocket{
			Name:       wellknown.TransportSocketQuic,
			ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: toAny(&quicv3.QuicUpstreamTransport{UpstreamTlsContext: upstream})},
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: toAny(&httpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http3ProtocolOptions{Http3ProtocolOptions: &core.Http3ProtocolOptions{}},
			}},
		})}
	default:
		upstream.CommonTlsContext.AlpnProtocols = []string{"h2"}
		c.TransportSocket = &core.TransportSocket{
			Name:       wellknown.TransportSocketTLS,
			ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: toAny(upstream)},
		}
		c.TypedExtensionProtocolOptions = http2Options()
	}
	return c
}

// http2Options has a cluster speak HTTP/2 to its endpoints.
func http2Options() map[string]*anypb.Any {
	return map[string]*anypb.Any{httpProtocolOptionsKey: toAny(&httpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &core.Http2ProtocolOptions{}},
		}},
	})}
}

// circuitBreakers are a policy's limits, per caller.
func circuitBreakers(pol Policy) *cluster.CircuitBreakers {
	return &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{
		Priority:           core.RoutingPriority_DEFAULT,
		MaxConnections:     u32(pol.MaxConnections),
		MaxPendingRequests: u32(pol.MaxPendingRequests),
		MaxRequests:        u32(pol.MaxRequests),
		MaxRetries:         u32(pol.MaxRetries),
	}}}
}

// sidecarUpstreamTLS: the proxy's certificate and the trust bundle from
// SDS; the server must be exactly the target's SPIFFE ID.
func sidecarUpstreamTLS(spiffe string) *tlsv3.UpstreamTlsContext {
	return &tlsv3.UpstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams:                      tlsParams(),
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(CertSecret)},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{exactURISAN(spiffe)}},
				ValidationContextSdsSecretConfig: sdsSecret(RootSecret),
			}},
		},
	}
}

// proxylessUpstreamTLS follows gRFC A29: certificates from the bootstrap's
// certificate-provider instance; SANs matched with match_subject_alt_names.
func proxylessUpstreamTLS(spiffe string) *tlsv3.UpstreamTlsContext {
	provider := &tlsv3.CertificateProviderPluginInstance{InstanceName: CertProviderInstance}
	return &tlsv3.UpstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateProviderInstance: provider,
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				CaCertificateProviderInstance: provider,
				//lint:ignore SA1019 gRPC's xDS client (A29) reads only this field, not match_typed_subject_alt_names.
				MatchSubjectAltNames: []*matcher.StringMatcher{{
					MatchPattern: &matcher.StringMatcher_Exact{Exact: spiffe},
				}},
			}},
		},
	}
}

// appCluster is the local app on loopback, plaintext (it never leaves the host).
func (b *builder) appCluster() *cluster.Cluster {
	c := &cluster.Cluster{
		Name:                 AppCluster,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
		ConnectTimeout:       duration(connectTimeout),
		LoadAssignment:       staticAssignment(AppCluster, "127.0.0.1", b.proxy.AppPort),
	}
	if b.proxy.AppProtocol == ProtocolGRPC {
		c.TypedExtensionProtocolOptions = http2Options()
	}
	return c
}
