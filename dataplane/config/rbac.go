package config

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	rbac "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// RBAC is a compiled Envoy RBAC rule set (envoy.filters.http.rbac).
type RBAC struct {
	allow    bool // ALLOW: a match admits; DENY: a match refuses
	policies []policy
}

type policy struct {
	name        string
	permissions []permission
	principals  []principal
}

// Request is what RBAC decides on.
type Request struct {
	Principal string // the caller's SPIFFE ID
	Method    string
	Path      string
	Header    func(name string) string
}

type permission func(Request) bool
type principal func(Request) bool

// Allowed reports whether req may pass, and the policy that decided ("" when
// none matched).
func (r *RBAC) Allowed(req Request) (bool, string) {
	for _, p := range r.policies {
		if p.matches(req) {
			return r.allow, p.name
		}
	}
	return !r.allow, ""
}

func (p policy) matches(req Request) bool {
	perm, prin := false, false
	for _, m := range p.permissions {
		if m(req) {
			perm = true
			break
		}
	}
	for _, m := range p.principals {
		if m(req) {
			prin = true
			break
		}
	}
	return perm && prin
}

func compileRBAC(rules *rbac.RBAC) (*RBAC, error) {
	if rules == nil {
		return &RBAC{allow: false}, nil // no rules: allow everything (a DENY with no policies)
	}
	out := &RBAC{}
	switch rules.GetAction() {
	case rbac.RBAC_ALLOW:
		out.allow = true
	case rbac.RBAC_DENY:
		out.allow = false
	default:
		return nil, fmt.Errorf("RBAC action %v is not supported (ALLOW or DENY)", rules.GetAction())
	}
	names := make([]string, 0, len(rules.GetPolicies()))
	for n := range rules.GetPolicies() {
		names = append(names, n)
	}
	sort.Strings(names) // Envoy evaluates in name order
	for _, n := range names {
		p := rules.GetPolicies()[n]
		cp := policy{name: n}
		for _, perm := range p.GetPermissions() {
			m, err := compilePermission(perm)
			if err != nil {
				return nil, fmt.Errorf("RBAC policy %q: %w", n, err)
			}
			cp.permissions = append(cp.permissions, m)
		}
		for _, prin := range p.GetPrincipals() {
			m, err := compilePrincipal(prin)
			if err != nil {
				return nil, fmt.Errorf("RBAC policy %q: %w", n, err)
			}
			cp.principals = append(cp.principals, m)
		}
		out.policies = append(out.policies, cp)
	}
	return out, nil
}

func compilePermission(p *rbac.Permission) (permission, error) {
	switch r := p.GetRule().(type) {
	case *rbac.Permission_Any:
		return func(Request) bool { return r.Any }, nil
	case *rbac.Permission_AndRules:
		ms, err := compilePermissions(r.AndRules.GetRules())
		if err != nil {
			return nil, err
		}
		return func(q Request) bool {
			for _, m := range ms {
				if !m(q) {
					return false
				}
			}
			return true
		}, nil
	case *rbac.Permission_OrRules:
		ms, err := compilePermissions(r.OrRules.GetRules())
		if err != nil {
			return nil, err
		}
		return func(q Request) bool {
			for _, m := range ms {
				if m(q) {
					return true
				}
			}
			return false
		}, nil
	case *rbac.Permission_NotRule:
		m, err := compilePermission(r.NotRule)
		if err != nil {
			return nil, err
		}
		return func(q Request) bool { return !m(q) }, nil
	case *rbac.Permission_UrlPath:
		sm, err := compileString(r.UrlPath.GetPath())
		if err != nil {
			return nil, err
		}
		return func(q Request) bool { return sm(q.Path) }, nil
	case *rbac.Permission_Header:
		hm, err := compileHeader(r.Header)
		if err != nil {
			return nil, err
		}
		return hm, nil
	default:
		return nil, fmt.Errorf("RBAC permission %T is not supported", r)
	}
}

func compilePermissions(ps []*rbac.Permission) ([]permission, error) {
	var out []permission
	for _, p := range ps {
		m, err := compilePermission(p)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

func compilePrincipal(p *rbac.Principal) (principal, error) {
	switch id := p.GetIdentifier().(type) {
	case *rbac.Principal_Any:
		return func(Request) bool { return id.Any }, nil
	case *rbac.Principal_Authenticated_:
		if id.Authenticated.GetPrincipalName() == nil {
			return func(q Request) bool { return q.Principal != "" }, nil
		}
		sm, err := compileString(id.Authenticated.GetPrincipalName())
		if err != nil {
			return nil, err
		}
		return func(q Request) bool { return q.Principal != "" && sm(q.Principal) }, nil
	case *rbac.Principal_AndIds:
		ms, err := compilePrincipals(id.AndIds.GetIds())
		if err != nil {
			return nil, err
		}
		return func(q Request) bool {
			for _, m := range ms {
				if !m(q) {
					return false
				}
			}
			return true
		}, nil
	case *rbac.Principal_OrIds:
		ms, err := compilePrincipals(id.OrIds.GetIds())
		if err != nil {
			return nil, err
		}
		return func(q Request) bool {
			for _, m := range ms {
				if m(q) {
					return true
				}
			}
			return false
		}, nil
	case *rbac.Principal_NotId:
		m, err := compilePrincipal(id.NotId)
		if err != nil {
			return nil, err
		}
		return func(q Request) bool { return !m(q) }, nil
	default:
		return nil, fmt.Errorf("RBAC principal %T is not supported", id)
	}
}

func compilePrincipals(ps []*rbac.Principal) ([]principal, error) {
	var out []principal
	for _, p := range ps {
		m, err := compilePrincipal(p)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// compileHeader supports the pseudo-headers :path and :method and plain
// headers, with string matchers or presence.
func compileHeader(h *route.HeaderMatcher) (permission, error) {
	name := strings.ToLower(h.GetName())
	get := func(q Request) string {
		switch name {
		case ":path":
			return q.Path
		case ":method":
			return q.Method
		}
		if q.Header == nil {
			return ""
		}
		return q.Header(name)
	}
	var m func(string) bool
	switch spec := h.GetHeaderMatchSpecifier().(type) {
	case *route.HeaderMatcher_StringMatch:
		sm, err := compileString(spec.StringMatch)
		if err != nil {
			return nil, err
		}
		m = sm
	case *route.HeaderMatcher_PresentMatch:
		m = func(s string) bool { return (s != "") == spec.PresentMatch }
	default:
		return nil, fmt.Errorf("RBAC header matcher %T is not supported", spec)
	}
	invert := h.GetInvertMatch()
	return func(q Request) bool { return m(get(q)) != invert }, nil
}

func compileString(sm *matcher.StringMatcher) (func(string) bool, error) {
	fold := func(s string) string { return s }
	if sm.GetIgnoreCase() {
		fold = strings.ToLower
	}
	switch p := sm.GetMatchPattern().(type) {
	case *matcher.StringMatcher_Exact:
		want := fold(p.Exact)
		return func(s string) bool { return fold(s) == want }, nil
	case *matcher.StringMatcher_Prefix:
		want := fold(p.Prefix)
		return func(s string) bool { return strings.HasPrefix(fold(s), want) }, nil
	case *matcher.StringMatcher_Suffix:
		want := fold(p.Suffix)
		return func(s string) bool { return strings.HasSuffix(fold(s), want) }, nil
	case *matcher.StringMatcher_Contains:
		want := fold(p.Contains)
		return func(s string) bool { return strings.Contains(fold(s), want) }, nil
	case *matcher.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$")
		if err != nil {
			return nil, fmt.Errorf("regex %q: %w", p.SafeRegex.GetRegex(), err)
		}
		return re.MatchString, nil
	default:
		return nil, fmt.Errorf("string matcher %T is not supported", p)
	}
}
