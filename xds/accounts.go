package xds

import (
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbac "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbacfilter "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Accounts' access tokens at a service's inbound listeners, where its
// policy asks for them (Policy.Scopes): Envoy's jwt_authn filter verifies
// a token a request carries (401 if it does not verify) and puts its
// claims in the request's metadata; an RBAC filter then admits a request
// by those claims (403 without a token, or without the scopes). Both
// filters are Envoy's, so Envoy and the built-in proxy enforce the same
// thing.
const (
	// JWTFilter is the jwt_authn filter's name, and the metadata namespace
	// its claims are under.
	JWTFilter = "envoy.filters.http.jwt_authn"
	// JWTProvider is the provider of accounts' tokens in JWTFilter.
	JWTProvider = "micromesh-accounts"
	// JWTPayload is the metadata key of a verified token's claims.
	JWTPayload = "account"
	// AccountsFilter is the name of the RBAC filter on accounts.
	AccountsFilter = "envoy.filters.http.rbac.accounts"

	// The issuer and audience of accounts' tokens (service/auth's).
	accountsIssuer   = "micromesh-auth"
	accountsAudience = "micromesh"
	// AdminScope passes every scope list, in every namespace.
	AdminScope = "admin"
)

// needsAccounts reports whether the service or a path of it asks for
// accounts' tokens.
func (b *builder) needsAccounts() bool {
	s := b.ownService()
	if s == nil {
		return false
	}
	if s.Policy.Scopes != "" {
		return true
	}
	for _, rp := range s.Routes {
		if rp.Scopes != "" {
			return true
		}
	}
	return false
}

// accountFilters are the jwt_authn filter and the RBAC filter on its
// claims, for the head of the inbound listeners' filters; none when the
// service asks for no token. Without the accounts' keys (no auth service)
// there is no jwt_authn filter: no token verifies, and the requests the
// policy covers are refused.
func (b *builder) accountFilters() []*hcm.HttpFilter {
	if !b.needsAccounts() {
		return nil
	}
	var fs []*hcm.HttpFilter
	if len(b.mesh.AccountKeys) > 0 {
		fs = append(fs, &hcm.HttpFilter{Name: JWTFilter, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: toAny(b.jwtAuthn())}})
	}
	return append(fs, &hcm.HttpFilter{Name: AccountsFilter, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: toAny(&rbacfilter.RBAC{Rules: b.accountsRBAC()})}})
}

// jwtAuthn verifies the token in Authorization: Bearer with the accounts'
// keys, when a request carries one; a request without one passes on to
// the rules (allow_missing), which decide whether it needed one.
func (b *builder) jwtAuthn() *jwtv3.JwtAuthentication {
	provider := &jwtv3.JwtProvider{
		Issuer:    accountsIssuer,
		Audiences: []string{accountsAudience},
		JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &core.DataSource{
			Specifier: &core.DataSource_InlineString{InlineString: string(b.mesh.AccountKeys)},
		}},
		Forward:           true, // the service reads it too (service/auth.User)
		FromHeaders:       []*jwtv3.JwtHeader{{Name: "authorization", ValuePrefix: "Bearer "}},
		PayloadInMetadata: JWTPayload,
		ClockSkewSeconds:  30,
	}
	requires := &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{
		Requirements: []*jwtv3.JwtRequirement{
			{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: JWTProvider}},
			{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}},
		},
	}}}
	return &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{JWTProvider: provider},
		Rules: []*jwtv3.RequirementRule{{
			Match:           &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &jwtv3.RequirementRule_Requires{Requires: requires},
		}},
	}
}

// accountsRBAC admits each request by the scopes its path asks for (the
// most specific path's, as the routes are tried; else the service's):
// no list, anyone the other filters admit; "*", an account of the
// service's namespace; a list, such an account with one of its scopes;
// and an account with scope admin whatever the list. gRPC reflection and
// health need no account.
func (b *builder) accountsRBAC() *rbac.RBAC {
	s := b.ownService()
	r := rules{RBAC: &rbac.RBAC{Action: rbac.RBAC_ALLOW, Policies: map[string]*rbac.Policy{}}}
	var earlier []*rbac.Permission // the paths tried before: theirs
	for _, rp := range s.Routes {
		name, perm := pathPermission(rp)
		mine := perm
		if len(earlier) > 0 {
			mine = &rbac.Permission{Rule: &rbac.Permission_AndRules{AndRules: &rbac.Permission_Set{Rules: []*rbac.Permission{perm, notAny(earlier)}}}}
		}
		r.add("scopes "+name, mine, []*rbac.Principal{b.accountPrincipal(rp.Scopes)})
		earlier = append(earlier, perm)
	}
	rest := anyRequest()
	if len(earlier) > 0 {
		rest = notAny(earlier)
	}
	r.add("scopes", rest, []*rbac.Principal{b.accountPrincipal(s.Policy.Scopes)})
	// What describes the service, not its data: its gRPC reflection (what
	// meshctl call, describe and the gateway read to encode a call) and
	// health. The rules on callers still apply.
	var describe []*rbac.Permission
	for _, p := range serviceMetadataPaths {
		describe = append(describe, &rbac.Permission{Rule: &rbac.Permission_UrlPath{UrlPath: &matcher.PathMatcher{Rule: &matcher.PathMatcher_Path{Path: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: p}}}}}})
	}
	r.add("service metadata", &rbac.Permission{Rule: &rbac.Permission_OrRules{OrRules: &rbac.Permission_Set{Rules: describe}}},
		[]*rbac.Principal{{Identifier: &rbac.Principal_Any{Any: true}}})
	return r.RBAC
}

// serviceMetadataPaths are the gRPC services every caller may call
// whatever a service's scopes: reflection and health.
var serviceMetadataPaths = []string{"/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/", "/grpc.health.v1.Health/"}

// notAny matches the requests none of perms matches.
func notAny(perms []*rbac.Permission) *rbac.Permission {
	p := perms[0]
	if len(perms) > 1 {
		p = &rbac.Permission{Rule: &rbac.Permission_OrRules{OrRules: &rbac.Permission_Set{Rules: perms}}}
	}
	return &rbac.Permission{Rule: &rbac.Permission_NotRule{NotRule: p}}
}

// accountPrincipal matches the callers a scope list admits (Policy.Scopes).
func (b *builder) accountPrincipal(scopes string) *rbac.Principal {
	if scopes == "" {
		return &rbac.Principal{Identifier: &rbac.Principal_Any{Any: true}}
	}
	admin := claimHas("scopes", AdminScope)
	mine := claimIs("ns", b.proxy.Namespace)
	if scopes != "*" {
		var any []*rbac.Principal
		for _, sc := range strings.Split(scopes, ",") {
			any = append(any, claimHas("scopes", sc))
		}
		listed := any[0]
		if len(any) > 1 {
			listed = &rbac.Principal{Identifier: &rbac.Principal_OrIds{OrIds: &rbac.Principal_Set{Ids: any}}}
		}
		mine = &rbac.Principal{Identifier: &rbac.Principal_AndIds{AndIds: &rbac.Principal_Set{Ids: []*rbac.Principal{mine, listed}}}}
	}
	return &rbac.Principal{Identifier: &rbac.Principal_OrIds{OrIds: &rbac.Principal_Set{Ids: []*rbac.Principal{mine, admin}}}}
}

// claimIs matches a verified token whose claim is the string v.
func claimIs(claim, v string) *rbac.Principal {
	return claimMatch(claim, &matcher.ValueMatcher{MatchPattern: &matcher.ValueMatcher_StringMatch{StringMatch: exact(v)}})
}

// claimHas matches a verified token whose claim is a list holding v.
func claimHas(claim, v string) *rbac.Principal {
	return claimMatch(claim, &matcher.ValueMatcher{MatchPattern: &matcher.ValueMatcher_ListMatch{ListMatch: &matcher.ListMatcher{
		MatchPattern: &matcher.ListMatcher_OneOf{OneOf: &matcher.ValueMatcher{MatchPattern: &matcher.ValueMatcher_StringMatch{StringMatch: exact(v)}}},
	}}})
}

func claimMatch(claim string, v *matcher.ValueMatcher) *rbac.Principal {
	return &rbac.Principal{Identifier: &rbac.Principal_SourcedMetadata{SourcedMetadata: &rbac.SourcedMetadata{
		MetadataSource: rbac.MetadataSource_DYNAMIC, // what the filters before put there
		MetadataMatcher: &matcher.MetadataMatcher{
			Filter: JWTFilter,
			Path: []*matcher.MetadataMatcher_PathSegment{
				{Segment: &matcher.MetadataMatcher_PathSegment_Key{Key: JWTPayload}},
				{Segment: &matcher.MetadataMatcher_PathSegment_Key{Key: claim}},
			},
			Value: v,
		},
	}}}
}

func exact(v string) *matcher.StringMatcher {
	return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: v}}
}
