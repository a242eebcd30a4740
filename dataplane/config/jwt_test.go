package config

import (
	"net/http"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/micromesh/micromesh/internal/tokentest"
	"github.com/micromesh/micromesh/xds"
)

func newIssuer(t *testing.T, kid string) *tokentest.Issuer { return tokentest.New(t, kid) }

func account(now time.Time, ns, name string, scopes ...string) map[string]any {
	return tokentest.Account(now, "micromesh.local", ns, name, scopes...)
}

// A sidecar of a service whose policy asks for accounts' tokens verifies
// them (signature, key, issuer, audience, times) and admits requests by
// their claims, as the control plane's jwt_authn filter and RBAC rules on
// its metadata say: "*" any account of the namespace, a path's scopes
// there, admin everywhere.
func TestAccountsTokensAtTheInbound(t *testing.T) {
	is := newIssuer(t, "k1")
	m := &xds.Mesh{TrustDomain: "micromesh.local", Roots: []byte("-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"), AccountKeys: is.JWKS,
		Services: []xds.Service{{Name: "hello", Namespace: "default", Protocol: xds.ProtocolGRPC, Policy: xds.Policy{Scopes: "*"},
			Routes:    []xds.RoutePolicy{{Path: "/admin/open", Scopes: "*"}, {Path: "/admin/", Prefix: true, Scopes: "ops"}}, // as PolicyFromMetadata sorts them
			Endpoints: []xds.Endpoint{{ID: "h1", Address: "10.0.0.1", Port: 8443, QUICPort: 8443, Kind: xds.KindBuiltin, Health: xds.HealthPassing}}}}}
	c := compiled(t, sidecarOf(t, m, "default", "hello"))
	in := c.Inbound
	if in.JWT == nil || c.InboundQUIC.JWT == nil {
		t.Fatal("no jwt_authn filter compiled on the inbound listeners")
	}
	now := time.Now()
	other := newIssuer(t, "k1") // the same kid, another key
	at := func(d time.Duration, claims map[string]any) map[string]any {
		claims["exp"] = now.Add(d).Unix()
		return claims
	}
	with := func(claims map[string]any, k string, v any) map[string]any { claims[k] = v; return claims }
	for _, tc := range []struct {
		name, path, token string
		refused           string // Check's error
		admitted          bool
	}{
		{"no token", "/x", "", "", false},
		{"gRPC reflection needs none", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "", "", true},
		{"nor health", "/grpc.health.v1.Health/Check", "", "", true},
		{"an account of the namespace", "/x", is.Sign(t, account(now, "default", "alice")), "", true},
		{"no scope ops on /admin/", "/admin/reset", is.Sign(t, account(now, "default", "alice")), "", false},
		{"scope ops on /admin/", "/admin/reset", is.Sign(t, account(now, "default", "carol", "ops")), "", true},
		{"the most specific path: /admin/open is any account's", "/admin/open", is.Sign(t, account(now, "default", "alice")), "", true},
		{"another namespace", "/x", is.Sign(t, account(now, "shop", "bob", "ops")), "", false},
		{"admin, of another namespace", "/admin/reset", is.Sign(t, account(now, "shop", "root", "admin")), "", true},
		{"expired beyond the skew", "/x", is.Sign(t, at(-31*time.Second, account(now, "default", "alice"))), "expired at", false},
		{"expired within the skew", "/x", is.Sign(t, at(-20*time.Second, account(now, "default", "alice"))), "", true},
		{"not yet valid", "/x", is.Sign(t, with(account(now, "default", "alice"), "nbf", now.Add(time.Minute).Unix())), "not valid before", false},
		{"another issuer", "/x", is.Sign(t, with(account(now, "default", "alice"), "iss", "someone")), `issued by "someone"`, false},
		{"another audience", "/x", is.Sign(t, with(account(now, "default", "alice"), "aud", []string{"a", "b"})), "not for audience micromesh", false},
		{"an audience among others", "/x", is.Sign(t, with(account(now, "default", "alice"), "aud", []string{"a", "micromesh"})), "", true},
		{"another key with the same kid", "/x", other.Sign(t, account(now, "default", "alice")), "bad signature", false},
		{"an unknown kid", "/x", newIssuer(t, "k2").Sign(t, account(now, "default", "alice")), "key the mesh does not know", false},
		{"alg none", "/x", "eyJhbGciOiJub25lIn0." + strings.Split(is.Sign(t, account(now, "default", "alice")), ".")[1] + ".", "key the mesh does not know", false},
		{"not a JWT", "/x", "abc.def", "not a JWT", false},
		{"garbage parts", "/x", "a.b.c", "header", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.token != "" {
				h.Set("Authorization", "Bearer "+tc.token)
			}
			claims, err := in.JWT.Check(tc.path, h, now)
			if tc.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("Check = %v; want refused, saying %q", err, tc.refused)
				}
				return
			}
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if h.Get("Authorization") != "" != (tc.token != "") {
				t.Error("the token was not passed on (forward)")
			}
			ok, _, byClaims := in.RBAC.Decide(Request{Principal: "spiffe://micromesh.local/ns/default/svc/web", Method: "GET", Path: tc.path,
				Claims: claims, ClaimsKey: in.JWT.PayloadKey()})
			if ok != tc.admitted {
				t.Errorf("admitted %v; want %v", ok, tc.admitted)
			}
			if !ok && !byClaims {
				t.Error("refused by a rule on callers, not on accounts")
			}
		})
	}

	// A verified token is kept, but not past its expiry.
	tok := is.Sign(t, at(10*time.Minute, account(now, "default", "alice")))
	h := http.Header{"Authorization": {"Bearer " + tok}}
	if _, err := in.JWT.Check("/x", h, now); err != nil {
		t.Fatal(err)
	}
	if _, err := in.JWT.Check("/x", h, now.Add(11*time.Minute)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("a cached token past its expiry: %v; want expired", err)
	}
}

// The jwt_authn settings the proxy does not apply are refused (a NACK),
// never half applied.
func TestJWTRefusals(t *testing.T) {
	is := newIssuer(t, "k1")
	provider := func() *jwtv3.JwtProvider {
		return &jwtv3.JwtProvider{JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: string(is.JWKS)}}}}
	}
	withJWT := func(j *jwtv3.JwtAuthentication, last bool) func(*envoyResources) {
		return func(r *envoyResources) {
			mutateHCM(t, findListener(r, "inbound"), func(m *hcm.HttpConnectionManager) {
				f := &hcm.HttpFilter{Name: "jwt", ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(t, j)}}
				if last {
					m.HttpFilters = append(m.HttpFilters[:len(m.HttpFilters)-1:len(m.HttpFilters)-1], f, m.HttpFilters[len(m.HttpFilters)-1])
					return
				}
				m.HttpFilters = append([]*hcm.HttpFilter{f}, m.HttpFilters...)
			})
		}
	}
	remote := provider()
	remote.JwksSourceSpecifier = &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{}}
	params := provider()
	params.FromParams = []string{"access_token"}
	rsa := provider()
	rsa.JwksSourceSpecifier = &jwtv3.JwtProvider_LocalJwks{LocalJwks: &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: `{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`}}}
	refusals(t, []refusal{
		{"keys fetched from a URL", withJWT(&jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": remote}}, false), "remote_jwks is not supported"},
		{"tokens from query parameters", withJWT(&jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": params}}, false), "from_params is not supported"},
		{"an RSA key", withJWT(&jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": rsa}}, false), `key type "RSA" is not supported`},
		{"two providers", withJWT(&jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": provider(), "q": provider()}}, false), "2 providers"},
		{"after the RBAC filter", withJWT(&jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": provider()}}, true), "ahead of the other HTTP filters"},
		{"a rule matching headers", withJWT(&jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": provider()},
			Rules: []*jwtv3.RequirementRule{{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}, Headers: []*route.HeaderMatcher{{Name: "x-a"}}}}}}, false),
			"a match on more than the path"},
		{"a requirement naming another provider", withJWT(&jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": provider()},
			Rules: []*jwtv3.RequirementRule{{Match: prefixMatch("/"), RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{
				RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: "q"}}}}}}, false), `provider "q"`},
	})
}

// A requirement of the provider alone refuses a request without a token
// (401); allow_missing_or_failed lets a bad one through unverified.
func TestJWTRequirements(t *testing.T) {
	is := newIssuer(t, "k1")
	jwks := &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: string(is.JWKS)}}
	compile := func(req *jwtv3.JwtRequirement, forward bool) *JWT {
		j := &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": {Forward: forward, PayloadInMetadata: "pl", JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: jwks}}},
			Rules: []*jwtv3.RequirementRule{{Match: prefixMatch("/api/"), RequirementType: &jwtv3.RequirementRule_Requires{Requires: req}}}}
		r := meshFor(t, "default", "client")
		mutateHCM(t, findListener(&r, "inbound"), func(m *hcm.HttpConnectionManager) {
			m.HttpFilters = append([]*hcm.HttpFilter{{Name: "jwt", ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(t, j)}}}, m.HttpFilters...)
		})
		return compiled(t, r).Inbound.JWT
	}
	now := time.Now()
	good := is.Sign(t, account(now, "default", "alice"))
	provider := compile(&jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: "p"}}, false)
	if _, err := provider.Check("/api/x", http.Header{}, now); err != ErrNoToken {
		t.Errorf("no token where the provider is required: %v; want ErrNoToken", err)
	}
	if _, err := provider.Check("/other", http.Header{}, now); err != nil {
		t.Errorf("no token where no rule matches: %v", err)
	}
	h := http.Header{"Authorization": {"Bearer " + good}}
	claims, err := provider.Check("/api/x", h, now)
	if err != nil || claims["name"] != "alice" {
		t.Fatalf("a good token: %v %v", claims, err)
	}
	if h.Get("Authorization") != "" {
		t.Error("forward false: the token reached the app")
	}
	lenient := compile(&jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_AllowMissingOrFailed{}}, true)
	claims, err = lenient.Check("/api/x", http.Header{"Authorization": {"Bearer x.y.z"}}, now)
	if err != nil || claims != nil {
		t.Errorf("allow_missing_or_failed with a bad token: %v %v; want no claims, no error", claims, err)
	}
}

func prefixMatch(p string) *route.RouteMatch {
	return &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: p}}
}
