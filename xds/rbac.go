package xds

import (
	rbac "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// inboundRBAC is the default rule set until rules are configurable: allow
// callers of the proxy's own namespace, deny other namespaces; a platform
// service (namespace micromesh) admits every identity of the trust domain.
// Everything else is denied.
func (b *builder) inboundRBAC() *rbac.RBAC {
	prefix := "spiffe://" + b.mesh.TrustDomain + "/ns/" + b.proxy.Namespace + "/"
	name := "same-namespace"
	if b.proxy.Namespace == SystemNamespace {
		prefix, name = "spiffe://"+b.mesh.TrustDomain+"/", "trust-domain"
	}
	return &rbac.RBAC{
		Action: rbac.RBAC_ALLOW,
		Policies: map[string]*rbac.Policy{name: {
			Permissions: []*rbac.Permission{{Rule: &rbac.Permission_Any{Any: true}}},
			Principals: []*rbac.Principal{{Identifier: &rbac.Principal_Authenticated_{Authenticated: &rbac.Principal_Authenticated{
				PrincipalName: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: prefix}},
			}}}},
		}},
	}
}
