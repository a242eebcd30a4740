package xds

import (
	rbac "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// inboundRBAC admits callers of the proxy's own namespace and the
// platform's identities (namespace micromesh: the CLI, the runtime, the
// API gateway), those its service's allow_from names, and on a path those
// the path's allow_from names. A platform service admits every identity
// of the trust domain. Everything else is denied: across namespaces only
// a rule allows. (deny_from is denyRBAC's, a filter ahead of this one.)
func (b *builder) inboundRBAC() *rbac.RBAC {
	td := "spiffe://" + b.mesh.TrustDomain + "/"
	r := rules{RBAC: &rbac.RBAC{Action: rbac.RBAC_ALLOW, Policies: map[string]*rbac.Policy{}}}
	if b.proxy.Namespace == SystemNamespace {
		r.add("trust-domain", anyRequest(), []*rbac.Principal{idPrefix(td)})
	} else {
		r.add("same-namespace", anyRequest(), []*rbac.Principal{idPrefix(td + "ns/" + b.proxy.Namespace + "/")})
		r.add("platform", anyRequest(), []*rbac.Principal{idPrefix(td + "ns/" + SystemNamespace + "/")})
	}
	if s := b.ownService(); s != nil {
		r.add("allow-from", anyRequest(), callerPrincipals(td, s.Policy.AllowFrom))
		for _, rp := range s.Routes {
			name, perm := pathPermission(rp)
			r.add("allow-from "+name, perm, callerPrincipals(td, rp.AllowFrom))
		}
	}
	return r.RBAC
}

// denyRBAC refuses the callers the service's deny_from names, and on a
// path those the path's deny_from names, whatever admits them: a DENY
// filter ahead of the rules (Envoy runs both). Nil when it refuses no one.
func (b *builder) denyRBAC() *rbac.RBAC {
	s := b.ownService()
	if s == nil {
		return nil
	}
	td := "spiffe://" + b.mesh.TrustDomain + "/"
	r := rules{RBAC: &rbac.RBAC{Action: rbac.RBAC_DENY, Policies: map[string]*rbac.Policy{}}}
	r.add("deny-from", anyRequest(), callerPrincipals(td, s.Policy.DenyFrom))
	for _, rp := range s.Routes {
		name, perm := pathPermission(rp)
		r.add("deny-from "+name, perm, callerPrincipals(td, rp.DenyFrom))
	}
	if len(r.Policies) == 0 {
		return nil
	}
	return r.RBAC
}

// rules builds an RBAC rule set policy by policy.
type rules struct{ *rbac.RBAC }

// add makes a policy of the requests perm matches from any of callers;
// none when callers is empty.
func (r rules) add(name string, perm *rbac.Permission, callers []*rbac.Principal) {
	if len(callers) == 0 {
		return
	}
	p := callers[0]
	if len(callers) > 1 {
		p = &rbac.Principal{Identifier: &rbac.Principal_OrIds{OrIds: &rbac.Principal_Set{Ids: callers}}}
	}
	r.Policies[name] = &rbac.Policy{Permissions: []*rbac.Permission{perm}, Principals: []*rbac.Principal{p}}
}

func anyRequest() *rbac.Permission { return &rbac.Permission{Rule: &rbac.Permission_Any{Any: true}} }

// pathPermission matches a path policy's requests (exact, or the prefix),
// with its name in policies (the path, * after a prefix).
func pathPermission(rp RoutePolicy) (string, *rbac.Permission) {
	name := rp.Path
	pm := &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: rp.Path}}
	if rp.Prefix {
		name += "*"
		pm = &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: rp.Path}}
	}
	return name, &rbac.Permission{Rule: &rbac.Permission_UrlPath{UrlPath: &matcher.PathMatcher{Rule: &matcher.PathMatcher_Path{Path: pm}}}}
}

// callerPrincipals matches the callers of a list (AllowFrom, DenyFrom):
// a service by its SPIFFE ID, a namespace by its IDs' prefix.
func callerPrincipals(td, list string) []*rbac.Principal {
	services, namespaces := Callers(list)
	var out []*rbac.Principal
	for _, s := range services {
		out = append(out, idMatch(&matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: td + "ns/" + s[0] + "/svc/" + s[1]}}))
	}
	for _, ns := range namespaces {
		out = append(out, idPrefix(td+"ns/"+ns+"/"))
	}
	return out
}

// idPrefix matches callers whose SPIFFE ID starts with prefix.
func idPrefix(prefix string) *rbac.Principal {
	return idMatch(&matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: prefix}})
}

func idMatch(m *matcher.StringMatcher) *rbac.Principal {
	return &rbac.Principal{Identifier: &rbac.Principal_Authenticated_{Authenticated: &rbac.Principal_Authenticated{PrincipalName: m}}}
}
