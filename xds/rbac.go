package xds

import (
	rbac "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// inboundRBAC is the default rule set until rules are configurable: allow
// callers of the proxy's own namespace and the platform's identities
// (namespace micromesh: the CLI, the runtime, the API gateway), deny other
// namespaces; a platform service admits every identity of the trust
// domain. Everything else is denied.
func (b *builder) inboundRBAC() *rbac.RBAC {
	td := "spiffe://" + b.mesh.TrustDomain + "/"
	if b.proxy.Namespace == SystemNamespace {
		return allowPrefixes(map[string]string{"trust-domain": td})
	}
	return allowPrefixes(map[string]string{
		"same-namespace": td + "ns/" + b.proxy.Namespace + "/",
		"platform":       td + "ns/" + SystemNamespace + "/",
	})
}

// allowPrefixes allows, per named policy, callers whose SPIFFE ID starts
// with the prefix.
func allowPrefixes(policies map[string]string) *rbac.RBAC {
	r := &rbac.RBAC{Action: rbac.RBAC_ALLOW, Policies: map[string]*rbac.Policy{}}
	for name, prefix := range policies {
		r.Policies[name] = &rbac.Policy{
			Permissions: []*rbac.Permission{{Rule: &rbac.Permission_Any{Any: true}}},
			Principals: []*rbac.Principal{{Identifier: &rbac.Principal_Authenticated_{Authenticated: &rbac.Principal_Authenticated{
				PrincipalName: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: prefix}},
			}}}},
		}
	}
	return r
}
