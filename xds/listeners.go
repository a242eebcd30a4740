package xds

import (
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	otelalsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/open_telemetry/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	rbacfilter "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	quicv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/quic/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// InboundQUICListener takes HTTP/3 traffic on the inbound port's UDP side
// (built-in sidecars only).
const InboundQUICListener = "inbound-quic"

func routerFilter() *hcm.HttpFilter {
	return &hcm.HttpFilter{
		Name:       wellknown.Router,
		ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: toAny(&routerv3.Router{})},
	}
}

func hcmFilter(m *hcm.HttpConnectionManager) *listener.Filter {
	return &listener.Filter{
		Name:       wellknown.HTTPConnectionManager,
		ConfigType: &listener.Filter_TypedConfig{TypedConfig: toAny(m)},
	}
}

// outboundListener takes the app's calls on loopback and routes them by
// authority (RDS "outbound").
func (b *builder) outboundListener() *listener.Listener {
	return &listener.Listener{
		Name:             OutboundListener,
		Address:          socketAddress("127.0.0.1", b.proxy.OutboundPort, false),
		TrafficDirection: core.TrafficDirection_OUTBOUND,
		FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{hcmFilter(&hcm.HttpConnectionManager{
			StatPrefix:    OutboundListener,
			CodecType:     hcm.HttpConnectionManager_AUTO,
			StripPortMode: &hcm.HttpConnectionManager_StripAnyHostPort{StripAnyHostPort: true},
			RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
				ConfigSource:    adsSource(),
				RouteConfigName: OutboundRoute,
			}},
			HttpFilters: []*hcm.HttpFilter{faultFilter(), routerFilter()},
			Tracing:     b.hcmTracing(),
		})}}},
	}
}

// inboundHCM authorizes each request (RBAC) and forwards it to the app.
func (b *builder) inboundHCM(codec hcm.HttpConnectionManager_CodecType) *hcm.HttpConnectionManager {
	var upgrades []*hcm.HttpConnectionManager_UpgradeConfig
	var h2 *core.Http2ProtocolOptions
	if b.proxy.AppProtocol == ProtocolTCP {
		// As Envoy's own example of ending CONNECT over HTTP/2
		// (configs/terminate_http2_connect.yaml).
		upgrades, h2 = connectUpgrade(), &core.Http2ProtocolOptions{AllowConnect: true}
	}
	return &hcm.HttpConnectionManager{
		UpgradeConfigs:           upgrades,
		Http2ProtocolOptions:     h2,
		StatPrefix:               InboundListener,
		CodecType:                codec,
		RouteSpecifier:           &hcm.HttpConnectionManager_RouteConfig{RouteConfig: b.inboundRoute()},
		HttpFilters:              b.inboundFilters(),
		ForwardClientCertDetails: hcm.HttpConnectionManager_SANITIZE_SET,
		SetCurrentClientCertDetails: &hcm.HttpConnectionManager_SetCurrentClientCertDetails{
			Uri: true,
		},
		Tracing:   b.hcmTracing(),
		AccessLog: b.inboundAccessLog(),
	}
}

// AccessLogger is the access logger of a service's inbound listeners when
// its policy says access_log=on; TapLogger sends the same requests to the
// control plane, for meshctl tap.
const (
	AccessLogger = "envoy.access_loggers.stdout"
	TapLogger    = "envoy.access_loggers.open_telemetry"
)

// TapLogName is the log name of TapLogger's records.
const TapLogName = "micromesh.tap"

// The keys of TapLogger's attributes (the control plane reads records by
// them).
const (
	TapKeySource     = "source.principal"
	TapKeyMethod     = "http.request.method"
	TapKeyPath       = "url.path"
	TapKeyCode       = "http.response.status_code"
	TapKeyGRPCStatus = "rpc.grpc.status_code"
	TapKeyDuration   = "duration_ms"
	TapKeyProtocol   = "network.protocol.name"
	TapKeyRequestID  = "request_id"
)

// TapAttributes are the attributes of each request TapLogger sends, as
// Envoy's command operators: the built-in sidecar knows these and no
// others.
var TapAttributes = []struct{ Key, Format string }{
	{TapKeySource, "%DOWNSTREAM_PEER_URI_SAN%"},
	{TapKeyMethod, "%REQ(:METHOD)%"},
	{TapKeyPath, "%REQ(:PATH)%"},
	{TapKeyCode, "%RESPONSE_CODE%"},
	{TapKeyGRPCStatus, "%GRPC_STATUS_NUMBER%"},
	{TapKeyDuration, "%DURATION%"},
	{TapKeyProtocol, "%PROTOCOL%"},
	{TapKeyRequestID, "%REQ(X-REQUEST-ID)%"},
}

// tapFlushInterval is how long TapLogger holds records before it sends them.
const tapFlushInterval = 500 * time.Millisecond

// inboundAccessLog is Envoy's stdout access logger in its default format
// when the service's policy asks for access logs, and its OpenTelemetry
// access logger to the control plane then and while the service is
// tapped; none otherwise.
func (b *builder) inboundAccessLog() []*accesslogv3.AccessLog {
	s := b.ownService()
	if s == nil || !s.Policy.AccessLog && !s.Tapped {
		return nil
	}
	attrs := &commonv1.KeyValueList{}
	for _, a := range TapAttributes {
		attrs.Values = append(attrs.Values, &commonv1.KeyValue{Key: a.Key, Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_StringValue{StringValue: a.Format}}})
	}
	tap := &otelalsv3.OpenTelemetryAccessLogConfig{
		GrpcService:         controlPlaneService(),
		LogName:             TapLogName,
		Attributes:          attrs,
		BufferFlushInterval: durationpb.New(tapFlushInterval),
	}
	toControlPlane := &accesslogv3.AccessLog{Name: TapLogger, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: toAny(tap)}}
	if !s.Policy.AccessLog {
		return []*accesslogv3.AccessLog{toControlPlane}
	}
	return []*accesslogv3.AccessLog{
		{Name: AccessLogger, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: toAny(&streamv3.StdoutAccessLog{})}},
		toControlPlane,
	}
}

// inboundFilters: when the service asks for accounts' tokens, the
// jwt_authn filter and the RBAC filter on accounts (accountFilters: a token
// that does not verify is refused first, 401); a DENY RBAC filter when the service or a path of it
// refuses callers (deny_from), the RBAC rules, then the local rate limit filter
// when the service or one of its paths has a limit (after RBAC: requests
// the rules deny draw no token), then the router.
func (b *builder) inboundFilters() []*hcm.HttpFilter {
	fs := b.accountFilters()
	if deny := b.denyRBAC(); deny != nil {
		fs = append(fs, &hcm.HttpFilter{Name: DenyFilter, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: toAny(&rbacfilter.RBAC{Rules: deny})}})
	}
	fs = append(fs, &hcm.HttpFilter{Name: wellknown.HTTPRoleBasedAccessControl, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: toAny(&rbacfilter.RBAC{Rules: b.inboundRBAC()})}})
	if s := b.ownService(); s != nil && (s.Policy.RateLimit > 0 || hasPathRateLimit(s)) {
		// Without a service-wide limit the filter has no bucket of its
		// own: only paths with a limit are limited.
		rl := &ratelimitv3.LocalRateLimit{StatPrefix: RateLimitStatPrefix}
		if s.Policy.RateLimit > 0 {
			rl = localRateLimit(RateLimitStatPrefix, s.Policy.RateLimit, s.Policy.RateLimitBurst, rateLimitShare(s))
		}
		fs = append(fs, &hcm.HttpFilter{Name: RateLimitFilter, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: toAny(rl)}})
	}
	return append(fs, routerFilter())
}

// DenyFilter is the name of the inbound listeners' DENY RBAC filter
// (deny_from), ahead of the rules.
const DenyFilter = "envoy.filters.http.rbac.deny"

// RateLimitFilter is the name of the inbound listeners' rate limit
// filter, which routes' own limits refer to.
const RateLimitFilter = "envoy.filters.http.local_ratelimit"

func hasPathRateLimit(s *Service) bool {
	for _, rp := range s.Routes {
		if rp.RateLimit > 0 {
			return true
		}
	}
	return false
}

// RateLimitStatPrefix names the inbound listeners' rate limit.
const RateLimitStatPrefix = "inbound_rate_limit"

// rateLimitShare is how many instances share s's rate limits: those that
// may take requests (all but the critical ones; at least one) when the
// limits are the service's, else 1.
func rateLimitShare(s *Service) uint32 {
	if !s.Policy.RateLimitShared {
		return 1
	}
	n := uint32(0)
	for _, e := range s.Endpoints {
		if e.Health != HealthCritical {
			n++
		}
	}
	return max(n, 1)
}

// localRateLimit is a rate limit as Envoy's local rate limit filter
// config: a bucket of the burst, refilled at the rate, each fill no larger
// than the bucket (older Envoys refill by timer, in whole fills); enforced
// on every request; gRPC callers get RESOURCE_EXHAUSTED, which they do not
// retry. Shared by share instances, each takes 1/share of the rate and of
// the burst (rounded up: at least one request), in fills of at least 50
// ms (Envoy's shortest fill interval; the policy's burst holds 50 ms of
// the rate, so a share's holds a fill).
func localRateLimit(statPrefix string, rate, burst, share uint32) *ratelimitv3.LocalRateLimit {
	if burst == 0 {
		burst = rate
	}
	perFill, every := rate, time.Second
	switch {
	case share > 1:
		burst = (burst + share - 1) / share
		perFill = min(max(1, (rate+20*share-1)/(20*share)), burst)
		every = time.Duration(uint64(time.Second) * uint64(perFill) * uint64(share) / uint64(rate))
	case burst < rate:
		perFill, every = burst, time.Duration(uint64(time.Second)*uint64(burst)/uint64(rate))
	}
	all := &core.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}}
	return &ratelimitv3.LocalRateLimit{
		StatPrefix:                     statPrefix,
		TokenBucket:                    &typev3.TokenBucket{MaxTokens: burst, TokensPerFill: wrapperspb.UInt32(perFill), FillInterval: durationpb.New(every)},
		FilterEnabled:                  all,
		FilterEnforced:                 all,
		RateLimitedAsResourceExhausted: true,
	}
}

// ownService is the proxy's own service in the mesh (nil before its first
// instance registers), found once per build: a scan of every service.
func (b *builder) ownService() *Service {
	if !b.ownLooked {
		b.ownLooked = true
		for i := range b.mesh.Services {
			if s := &b.mesh.Services[i]; s.Name == b.proxy.Service && s.Namespace == b.proxy.Namespace {
				b.own = s
				break
			}
		}
	}
	return b.own
}

// downstreamTLS requires a client certificate that chains to the trust
// bundle; authorization by identity is the RBAC filter's.
func downstreamTLS(alpn ...string) *tlsv3.DownstreamTlsContext {
	return &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapBool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams:                      tlsParams(),
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(CertSecret)},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
				ValidationContextSdsSecretConfig: sdsSecret(RootSecret),
			},
			AlpnProtocols: alpn,
		},
	}
}

// inboundListener takes mTLS over TCP (HTTP/2, HTTP/1.1) on the inbound port.
func (b *builder) inboundListener() *listener.Listener {
	return &listener.Listener{
		Name:             InboundListener,
		Address:          socketAddress("0.0.0.0", b.proxy.InboundPort, false),
		TrafficDirection: core.TrafficDirection_INBOUND,
		FilterChains: []*listener.FilterChain{{
			TransportSocket: &core.TransportSocket{
				Name:       wellknown.TransportSocketTLS,
				ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: toAny(downstreamTLS("h2", "http/1.1"))},
			},
			Filters: []*listener.Filter{hcmFilter(b.inboundHCM(hcm.HttpConnectionManager_AUTO))},
		}},
	}
}

// inboundQUICListener takes HTTP/3 over QUIC with mTLS on the inbound
// port's UDP side. Only built-in sidecars get it.
func (b *builder) inboundQUICListener() *listener.Listener {
	return &listener.Listener{
		Name:              InboundQUICListener,
		Address:           socketAddress("0.0.0.0", b.proxy.InboundPort, true),
		TrafficDirection:  core.TrafficDirection_INBOUND,
		UdpListenerConfig: &listener.UdpListenerConfig{QuicOptions: &listener.QuicProtocolOptions{}},
		FilterChains: []*listener.FilterChain{{
			TransportSocket: &core.TransportSocket{
				Name:       wellknown.TransportSocketQuic,
				ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: toAny(&quicv3.QuicDownstreamTransport{DownstreamTlsContext: downstreamTLS("h3")})},
			},
			Filters: []*listener.Filter{hcmFilter(b.inboundHCM(hcm.HttpConnectionManager_HTTP3))},
		}},
	}
}

// apiListener is what a proxyless gRPC client dialing xds:///<name> looks
// up (gRFC A27): an HTTP connection manager with RDS and the router.
func apiListener(name string) *listener.Listener {
	return &listener.Listener{
		Name: name,
		ApiListener: &listener.ApiListener{ApiListener: toAny(&hcm.HttpConnectionManager{
			StatPrefix: name,
			CodecType:  hcm.HttpConnectionManager_AUTO,
			RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
				ConfigSource:    adsSource(),
				RouteConfigName: OutboundRoute,
			}},
			HttpFilters: []*hcm.HttpFilter{faultFilter(), routerFilter()},
		})},
	}
}
