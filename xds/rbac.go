package xds

import (
	rbac "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// inboundRBAC admits callers of the proxy's own namespace and the
// platform's identities (namespace micromesh: the CLI, the runtime, the
// API gateway), those its service's allow_from names, and on a path those
// the path's allow_from names; it refuses those its deny_from names,
// whatever else admits them. A platform service
// admits every identity of the trust domain. Everything else is denied:
// across namespaces only a rule allows.
func (b *builder) inboundRBAC() *rbac.RBAC {
	td := "spiffe://" + b.mesh.TrustDomain + "/"
	var own Policy
	if s := b.ownService(); s != nil {
		own = s.Policy
	}
	allow := map[string][]*rbac.Principal{}
	if b.proxy.Namespace == SystemNamespace {
		allow["trust-domain"] = []*rbac.Principal{idPrefix(td)}
	} else {
		allow["same-namespace"] = []*rbac.Principal{idPrefix(td + "ns/" + b.proxy.Namespace + "/")}
		allow["platform"] = []*rbac.Principal{idPrefix(td + "ns/" + SystemNamespace + "/")}
	}
	if ids := callerPrincipals(td, own.AllowFrom); len(ids) > 0 {
		allow["allow-from"] = ids
	}
	// A path's allow_from admits its callers on that path alone.
	onPath := map[string]*rbac.Permission{}
	if s := b.ownService(); s != nil {
		for _, rp := range s.Routes {
			if ids := callerPrincipals(td, rp.AllowFrom); len(ids) > 0 {
				path, perm := pathPermission(rp)
				allow["allow-from "+path] = ids
				onPath["allow-from "+path] = perm
			}
		}
	}
	deny := callerPrincipals(td, own.DenyFrom)
	r := &rbac.RBAC{Action: rbac.RBAC_ALLOW, Policies: map[string]*rbac.Policy{}}
	for name, ids := range allow {
		p := &rbac.Principal{Identifier: &rbac.Principal_OrIds{OrIds: &rbac.Principal_Set{Ids: ids}}}
		if len(ids) == 1 {
			p = ids[0]
		}
		if len(deny) > 0 {
			p = &rbac.Principal{Identifier: &rbac.Principal_AndIds{AndIds: &rbac.Principal_Set{Ids: []*rbac.Principal{p,
				{Identifier: &rbac.Principal_NotId{NotId: &rbac.Principal{Identifier: &rbac.Principal_OrIds{OrIds: &rbac.Principal_Set{Ids: deny}}}}},
			}}}}
		}
		perm := onPath[name]
		if perm == nil {
			perm = &rbac.Permission{Rule: &rbac.Permission_Any{Any: true}}
		}
		r.Policies[name] = &rbac.Policy{Permissions: []*rbac.Permission{perm}, Principals: []*rbac.Principal{p}}
	}
	return r
}

// pathDenyRBAC refuses, on each path of the service with a deny_from, the
// callers it names (a DENY filter ahead of the rules: Envoy runs both);
// nil when no path refuses anyone.
func (b *builder) pathDenyRBAC() *rbac.RBAC {
	s := b.ownService()
	if s == nil {
		return nil
	}
	td := "spiffe://" + b.mesh.TrustDomain + "/"
	var r *rbac.RBAC
	for _, rp := range s.Routes {
		ids := callerPrincipals(td, rp.DenyFrom)
		if len(ids) == 0 {
			continue
		}
		if r == nil {
			r = &rbac.RBAC{Action: rbac.RBAC_DENY, Policies: map[string]*rbac.Policy{}}
		}
		name, perm := pathPermission(rp)
		r.Policies["deny-from "+name] = &rbac.Policy{Permissions: []*rbac.Permission{perm},
			Principals: []*rbac.Principal{{Identifier: &rbac.Principal_OrIds{OrIds: &rbac.Principal_Set{Ids: ids}}}}}
	}
	return r
}

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
