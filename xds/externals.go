package xds

import (
	"net"
	"strconv"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
)

// External is a service outside the mesh that the sidecars of its
// namespace reach for their apps (registry.External): the app sends plain
// HTTP/1.1 for Name to its outbound listener, the sidecar opens TLS to
// Host:Port — SNI Host, the certificate checked for Host against CA —
// and sends the request with Host as its authority. The proxy never
// presents its mesh certificate there.
type External struct {
	Name      string
	Namespace string
	Host      string
	Port      uint32
	// CA is the PEM roots the server must chain to; nil: the system's.
	CA []byte
	// Protocol is ProtocolHTTP (HTTP/1.1) or ProtocolGRPC (HTTP/2).
	Protocol string
}

// externalTimeout bounds a request to an external service, retries
// included (the default policy's).
const externalTimeout = 15 * time.Second

// authority is the Host requests to e carry.
func (e *External) authority() string {
	if e.Port == 443 {
		return e.Host
	}
	return net.JoinHostPort(e.Host, strconv.Itoa(int(e.Port)))
}

// externals are the external services the builder's proxies call: those
// of their namespace, unless a mesh service there has the same name (the
// mesh service wins), and none for proxyless clients (they would need the
// roots as a certificate provider). Platform proxies (the gateway) reach
// none: the mesh is not a relay to the outside.
func (b *builder) externals() []*External {
	if b.proxy.Kind == KindProxyless {
		return nil
	}
	var out []*External
	for i := range b.mesh.Externals {
		e := &b.mesh.Externals[i]
		if e.Namespace == b.proxy.Namespace && !b.hasService(e.Namespace, e.Name) {
			out = append(out, e)
		}
	}
	return out
}

// hasService reports whether the mesh has service ns/name.
func (b *builder) hasService(ns, name string) bool {
	for i := range b.mesh.Services {
		if s := &b.mesh.Services[i]; s.Namespace == ns && s.Name == name {
			return true
		}
	}
	return false
}

// externalCluster reaches e: a LOGICAL_DNS cluster (Envoy's advice for
// a web service behind DNS: a new connection goes to what the name
// resolves to then), TLS 1.2 or 1.3 with the server's name checked,
// HTTP/1.1, or HTTP/2 for a gRPC service.
func externalCluster(e *External) *cluster.Cluster {
	alpn := "http/1.1"
	if e.Protocol == ProtocolGRPC {
		alpn = "h2"
	}
	validation := &tlsv3.CertificateValidationContext{
		MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
			SanType: tlsv3.SubjectAltNameMatcher_DNS,
			Matcher: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: e.Host}},
		}},
	}
	if len(e.CA) > 0 {
		validation.TrustedCa = &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: e.CA}}
	} else {
		validation.SystemRootCerts = &tlsv3.CertificateValidationContext_SystemRootCerts{}
	}
	upstream := &tlsv3.UpstreamTlsContext{
		Sni: e.Host,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams: &tlsv3.TlsParameters{
				TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2,
				TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
			},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: validation},
			AlpnProtocols:         []string{alpn},
		},
	}
	name := ClusterName(e.Namespace, e.Name)
	c := &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_LOGICAL_DNS},
		ConnectTimeout:       duration(connectTimeout),
		LoadAssignment:       staticAssignment(name, e.Host, e.Port),
		CircuitBreakers:      circuitBreakers(DefaultPolicy),
		TransportSocket: &core.TransportSocket{
			Name:       wellknown.TransportSocketTLS,
			ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: toAny(upstream)},
		},
	}
	if e.Protocol == ProtocolGRPC {
		c.TypedExtensionProtocolOptions = http2Options()
	}
	return c
}

// externalVirtualHost routes the app's requests for e (by its name, as
// for a mesh service) to its cluster with e's authority, retrying only
// what never reached the server: a request to the outside may not be
// safe to send twice.
func externalVirtualHost(callerNS string, e *External) *route.VirtualHost {
	timeout := externalTimeout
	if e.Protocol == ProtocolGRPC {
		timeout = 0 // as for the mesh's gRPC services: the callers' deadlines govern, and streams may live long
	}
	return &route.VirtualHost{
		Name:    ClusterName(e.Namespace, e.Name),
		Domains: hostNames(callerNS, e.Namespace, e.Name),
		Routes: []*route.Route{{
			Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
			Action: &route.Route_Route{Route: &route.RouteAction{
				ClusterSpecifier:     &route.RouteAction_Cluster{Cluster: ClusterName(e.Namespace, e.Name)},
				Timeout:              duration(timeout),
				HostRewriteSpecifier: &route.RouteAction_HostRewriteLiteral{HostRewriteLiteral: e.authority()},
				RetryPolicy: &route.RetryPolicy{
					RetryOn:      "connect-failure",
					NumRetries:   u32(2),
					RetryBackOff: &route.RetryPolicy_RetryBackOff{BaseInterval: duration(25 * time.Millisecond), MaxInterval: duration(250 * time.Millisecond)},
				},
			}},
		}},
	}
}
