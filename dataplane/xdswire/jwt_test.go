package xdswire

import (
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbac "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbacfilter "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/micromesh/micromesh/xds"
)

// TestDecodesTheAccountFilters: the jwt_authn filter and the RBAC rules
// on its claims, as the control plane builds them for a service whose
// policy asks for accounts' tokens, decode as go-control-plane reads them.
func TestDecodesTheAccountFilters(t *testing.T) {
	m := &xds.Mesh{TrustDomain: "micromesh.local", Roots: []byte("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"),
		AccountKeys: []byte(`{"keys":[]}`),
		Services: []xds.Service{{Name: "hello", Namespace: "default", Protocol: xds.ProtocolGRPC, Policy: xds.Policy{Scopes: "*"},
			Routes:    []xds.RoutePolicy{{Path: "/admin/", Prefix: true, Scopes: "ops,root"}, {Path: "/pkg.A/B", Scopes: "x"}},
			Endpoints: []xds.Endpoint{{ID: "h1", Address: "10.0.0.1", Port: 8443, QUICPort: 8443, Kind: xds.KindBuiltin, Health: xds.HealthPassing}}}}}
	r, err := xds.Build(m, xds.Proxy{NodeID: "n", Namespace: "default", Service: "hello", Kind: xds.KindBuiltin,
		InboundPort: 18443, OutboundPort: 15001, AppPort: 8080, AppProtocol: xds.ProtocolGRPC, CertDir: "/certs"})
	if err != nil {
		t.Fatal(err)
	}
	jwts := 0
	for _, l := range r.Listeners {
		got := decodeLike(t, l).(*Listener)
		for _, fc := range got.FilterChains {
			for _, nf := range fc.Filters {
				h, ok := nf.TypedConfig.Msg.(*HTTPConnectionManager)
				if !ok {
					continue
				}
				for _, hf := range h.HTTPFilters {
					if j, ok := hf.TypedConfig.Msg.(*JWTAuthentication); ok {
						jwts++
						p := j.Providers[xds.JWTProvider]
						if p == nil || p.LocalJWKS == nil || p.PayloadInMetadata != xds.JWTPayload || p.Refused != "" {
							t.Errorf("provider decoded as %+v", p)
						}
					}
				}
			}
		}
	}
	if jwts != 2 { // the TLS and the QUIC inbound listeners
		t.Errorf("%d jwt_authn filters decoded; want 2", jwts)
	}
}

// TestDecodesEveryValueMatcher covers the metadata principal's value
// matchers the proxy compiles, and records those it does not.
func TestDecodesEveryValueMatcher(t *testing.T) {
	str := &matcher.ValueMatcher{MatchPattern: &matcher.ValueMatcher_StringMatch{StringMatch: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: "a"}}}}
	values := []*matcher.ValueMatcher{
		str,
		{MatchPattern: &matcher.ValueMatcher_BoolMatch{BoolMatch: false}},
		{MatchPattern: &matcher.ValueMatcher_PresentMatch{PresentMatch: true}},
		{MatchPattern: &matcher.ValueMatcher_ListMatch{ListMatch: &matcher.ListMatcher{MatchPattern: &matcher.ListMatcher_OneOf{OneOf: str}}}},
		{MatchPattern: &matcher.ValueMatcher_OrMatch{OrMatch: &matcher.OrMatcher{ValueMatchers: []*matcher.ValueMatcher{str, str}}}},
	}
	var prins []*rbac.Principal
	for _, v := range values {
		prins = append(prins, &rbac.Principal{Identifier: &rbac.Principal_SourcedMetadata{SourcedMetadata: &rbac.SourcedMetadata{MetadataMatcher: &matcher.MetadataMatcher{
			Filter: xds.JWTFilter, Invert: true, Value: v,
			Path: []*matcher.MetadataMatcher_PathSegment{{Segment: &matcher.MetadataMatcher_PathSegment_Key{Key: "k"}}},
		}}}})
	}
	f := &rbacfilter.RBAC{Rules: &rbac.RBAC{Policies: map[string]*rbac.Policy{"a": {Principals: prins}}}}
	got := decodeLike(t, f).(*RBACFilter)
	if n := len(got.Rules.Policies["a"].Principals); n != len(values) {
		t.Fatalf("decoded %d principals; want %d", n, len(values))
	}
	// The deprecated form, metadata, still decodes (Envoy reads it).
	null := &rbac.Principal{Identifier: &rbac.Principal_Metadata{Metadata: &matcher.MetadataMatcher{Filter: "f", //lint:ignore SA1019 the form before sourced_metadata
		Value: &matcher.ValueMatcher{MatchPattern: &matcher.ValueMatcher_NullMatch_{NullMatch: &matcher.ValueMatcher_NullMatch{}}}}}}
	route := &rbac.Principal{Identifier: &rbac.Principal_SourcedMetadata{SourcedMetadata: &rbac.SourcedMetadata{MetadataSource: rbac.MetadataSource_ROUTE,
		MetadataMatcher: &matcher.MetadataMatcher{Filter: "f", Value: str}}}}
	f = &rbacfilter.RBAC{Rules: &rbac.RBAC{Policies: map[string]*rbac.Policy{"a": {Principals: []*rbac.Principal{null, route}}}}}
	got = decodeLike(t, f).(*RBACFilter)
	if u := got.Rules.Policies["a"].Principals[0].Metadata.Value.Unsupported; u != "null_match" {
		t.Errorf("a null matcher decoded as unsupported %q; want null_match", u)
	}
	if s := got.Rules.Policies["a"].Principals[1].SourcedMetadata.MetadataSource; s != MetadataRoute {
		t.Errorf("metadata source decoded as %v; want ROUTE", s)
	}
}

// TestRecordsJWTFieldsItDoesNotApply: a provider that fetches its keys,
// or reads tokens from elsewhere than a header, is named, not half read.
func TestRecordsJWTFieldsItDoesNotApply(t *testing.T) {
	for want, p := range map[string]*jwtv3.JwtProvider{
		"remote_jwks":      {JwksSourceSpecifier: &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{}}},
		"from_params":      {FromParams: []string{"token"}},
		"claim_to_headers": {ClaimToHeaders: []*jwtv3.JwtClaimToHeader{{HeaderName: "x-sub", ClaimName: "sub"}}},
		"":                 {JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: "{}"}}}},
	} {
		got := decodeLike(t, &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": p}}).(*JWTAuthentication)
		if r := got.Providers["p"].Refused; r != want {
			t.Errorf("refused %q; want %q", r, want)
		}
	}
}
