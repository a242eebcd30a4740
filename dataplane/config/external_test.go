package config

import (
	"crypto/tls"
	"strings"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/micromesh/micromesh/internal/outsidetest"
	"github.com/micromesh/micromesh/xds"
)

// meshWithExternals is what a sidecar in default gets with two services
// outside the mesh: maps (its own CA, port 8443) and payments (the
// system's roots).
func meshWithExternals(t *testing.T) envoyResources {
	t.Helper()
	m := &xds.Mesh{TrustDomain: "micromesh.local", Roots: []byte("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"), Services: []xds.Service{
		{Name: "hello", Namespace: "default", Protocol: xds.ProtocolGRPC, Endpoints: []xds.Endpoint{
			{ID: "h1", Address: "10.0.0.1", Port: 8443, QUICPort: 8443, Kind: xds.KindBuiltin, Health: xds.HealthPassing},
		}},
	}, Externals: []xds.External{
		{Name: "maps", Namespace: "default", Host: "maps.example", Port: 8443, CA: outsidetest.NewCA(t).PEM()},
		{Name: "payments", Namespace: "default", Host: "api.payments.example", Port: 443},
		{Name: "rates", Namespace: "default", Host: "rates.example", Port: 443, Protocol: xds.ProtocolGRPC},
	}}
	return sidecarOf(t, m, "default", "client")
}

func TestCompilesServicesOutsideTheMesh(t *testing.T) {
	c := compiled(t, meshWithExternals(t))
	maps, pay := c.Clusters["maps.default"], c.Clusters["payments.default"]
	if maps == nil || pay == nil {
		t.Fatalf("clusters %v: want maps.default and payments.default", c.Clusters)
	}
	for _, tc := range []struct {
		cl         *Cluster
		addr, name string
		ownRoots   bool
	}{{maps, "maps.example:8443", "maps.example", true}, {pay, "api.payments.example:443", "api.payments.example", false}} {
		x := tc.cl.External
		switch {
		case tc.cl.Transport != TransportExternal || x == nil:
			t.Errorf("%s: transport %q, external %+v", tc.cl.Name, tc.cl.Transport, x)
		case len(tc.cl.Endpoints) != 1 || tc.cl.Endpoints[0].Address != tc.addr || !tc.cl.Endpoints[0].Healthy:
			t.Errorf("%s: endpoints %+v, want %s", tc.cl.Name, tc.cl.Endpoints, tc.addr)
		case x.ServerName != tc.name || x.MinVersion != tls.VersionTLS12 || x.MaxVersion != tls.VersionTLS13:
			t.Errorf("%s: %+v", tc.cl.Name, x)
		case (x.Roots != nil) != tc.ownRoots:
			t.Errorf("%s: roots %v, want its own: %v", tc.cl.Name, x.Roots, tc.ownRoots)
		}
	}
	if rates := c.Clusters["rates.default"]; rates == nil || rates.Transport != TransportExternal || !rates.HTTP2 || maps.HTTP2 {
		t.Errorf("rates.default (gRPC): %+v, want HTTP/2 over TLS; maps.default HTTP/2 %v", rates, maps.HTTP2)
	}
	if rt, _ := c.Routes["outbound"].Lookup("rates", "/pkg.Rates/Get"); rt == nil || rt.Timeout != 0 || rt.HostRewrite != "rates.example" {
		t.Errorf("route for rates: %+v, want no timeout (the callers' deadlines govern) and rates.example's authority", rt)
	}
	for host, want := range map[string]string{"maps": "maps.example:8443", "payments.default": "api.payments.example"} {
		rt, _ := c.Routes["outbound"].Lookup(host, "/v1/charges")
		if rt == nil || rt.HostRewrite != want || rt.Retry == nil || !rt.Retry.On.ConnectFailure || rt.Retry.On.Reset || rt.Retry.On.Status(503) {
			t.Errorf("route for %s: %+v, want authority %s, retries only when the connection failed", host, rt, want)
		}
	}
}

// A cluster outside the mesh is read only in the form the control plane
// builds: anything that would check the server less (no name, another
// name), show it the mesh's certificate, or speak another protocol is
// refused, not read as something else.
func TestRefusesExternalClustersItCannotHonour(t *testing.T) {
	toMaps := func(change func(*tlsv3.UpstreamTlsContext)) func(*envoyResources) {
		return func(r *envoyResources) { mutateUpstreamTLS(t, findCluster(t, r, "maps.default"), change) }
	}
	validation := func(c *tlsv3.UpstreamTlsContext) *tlsv3.CertificateValidationContext {
		return c.CommonTlsContext.GetValidationContext()
	}
	for _, tc := range []refusal{
		{"no SAN matcher", toMaps(func(c *tlsv3.UpstreamTlsContext) { validation(c).MatchTypedSubjectAltNames = nil }), "exactly one exact DNS SAN"},
		{"a SAN other than the SNI", toMaps(func(c *tlsv3.UpstreamTlsContext) { c.Sni = "other.example" }), "exactly one exact DNS SAN"},
		{"a URI SAN", toMaps(func(c *tlsv3.UpstreamTlsContext) {
			validation(c).MatchTypedSubjectAltNames[0].SanType = tlsv3.SubjectAltNameMatcher_URI
		}), "exactly one exact DNS SAN"},
		{"no SNI", toMaps(func(c *tlsv3.UpstreamTlsContext) { c.Sni = "" }), "needs sni"},
		{"the mesh certificate shown", toMaps(func(c *tlsv3.UpstreamTlsContext) {
			c.CommonTlsContext.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{{Name: "default"}}
		}), "presents no certificate outside the mesh"},
		{"roots from a file", toMaps(func(c *tlsv3.UpstreamTlsContext) {
			validation(c).TrustedCa = &core.DataSource{Specifier: &core.DataSource_Filename{Filename: "/etc/ssl/certs/ca-certificates.crt"}}
		}), "trusted_ca must be inline"},
		{"roots that are not PEM", toMaps(func(c *tlsv3.UpstreamTlsContext) {
			validation(c).TrustedCa = &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: []byte("roots")}}
		}), "no PEM certificate"},
		{"no roots at all", toMaps(func(c *tlsv3.UpstreamTlsContext) { validation(c).TrustedCa = nil }), "trusted_ca or system_root_certs"},
		{"ALPN h2", toMaps(func(c *tlsv3.UpstreamTlsContext) { c.CommonTlsContext.AlpnProtocols = []string{"h2"} }), `ALPN "h2"`},
		{"TLS 1.1", toMaps(func(c *tlsv3.UpstreamTlsContext) {
			c.CommonTlsContext.TlsParams.TlsMinimumProtocolVersion = tlsv3.TlsParameters_TLSv1_1
		}), "minimum TLS version"},
		{"plaintext", func(r *envoyResources) { findCluster(t, r, "maps.default").TransportSocket = nil }, "must be reached over TLS"},
		{"HTTP/2", func(r *envoyResources) {
			findCluster(t, r, "maps.default").TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(t, &httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &core.Http2ProtocolOptions{}}}}})}
		}, `ALPN "http/1.1" does not fit the cluster's protocol (h2)`},
		{"an IP address to resolve", func(r *envoyResources) {
			findCluster(t, r, "maps.default").LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().Address.GetSocketAddress().Address = "192.0.2.1"
		}, "must be a host name"},
		{"two endpoints", func(r *envoyResources) {
			la := findCluster(t, r, "maps.default").LoadAssignment
			la.Endpoints = append(la.Endpoints, la.Endpoints[0])
		}, "exactly one endpoint"},
		{"the system's roots for a mesh peer", func(r *envoyResources) {
			mutateUpstreamTLS(t, findCluster(t, r, "hello.default"), func(c *tlsv3.UpstreamTlsContext) {
				c.CommonTlsContext.GetCombinedValidationContext().DefaultValidationContext.SystemRootCerts = &tlsv3.CertificateValidationContext_SystemRootCerts{}
			})
		}, "system_root_certs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := meshWithExternals(t)
			tc.mutate(&r)
			if _, err := Compile(r.wire(t)); err == nil || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("Compile = %v; want an error mentioning %q", err, tc.mention)
			}
		})
	}
}
