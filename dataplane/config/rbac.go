package config

import (
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/micromesh/micromesh/dataplane/xdswire"
)

// RBAC is a compiled Envoy RBAC rule set (envoy.filters.http.rbac), or a
// listener's chain of them: each filter decides in turn, and a request
// passes only if every one admits it (Istio, say, puts a DENY filter ahead
// of an ALLOW one).
type RBAC struct {
	allow    bool // ALLOW: a match admits; DENY: a match refuses
	claims   bool // a principal matches a verified token's claims
	policies []policy
	next     *RBAC // the listener's next RBAC filter, or nil
}

// then appends next to r's chain.
func (r *RBAC) then(next *RBAC) {
	for r.next != nil {
		r = r.next
	}
	r.next = next
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
	// Header returns a header's values joined by "," (as Envoy matches
	// them) and whether the request has it.
	Header func(name string) (string, bool)
	// Query is the request's raw query string (routes' query parameter
	// conditions read it).
	Query string
	// Claims are the claims of the access token the jwt_authn filter
	// verified (nil: none), under ClaimsKey in its metadata (JWT.PayloadKey).
	Claims    map[string]any
	ClaimsKey string
}

// HeaderOf is Request.Header over h (names in canonical or lower case).
func HeaderOf(h http.Header) func(string) (string, bool) {
	return func(name string) (string, bool) {
		vs := h.Values(name)
		if len(vs) == 0 {
			return "", false
		}
		if len(vs) == 1 {
			return vs[0], true
		}
		return strings.Join(vs, ","), true
	}
}

type permission func(Request) bool
type principal func(Request) bool

// Allowed reports whether req may pass every filter of the chain, and the
// policy that decided last ("" when none matched).
func (r *RBAC) Allowed(req Request) (bool, string) {
	ok, name, _ := r.Decide(req)
	return ok, name
}

// Decide is Allowed, and also reports whether the filter that decided
// last matches accounts' claims (a refusal then is about the request's
// access token, not its caller).
func (r *RBAC) Decide(req Request) (ok bool, policy string, claims bool) {
	ok, policy = r.decide(req)
	f := r
	for f.next != nil && ok {
		f = f.next
		ok, policy = f.decide(req)
	}
	return ok, policy, f.claims
}

// decide is one filter's decision.
func (r *RBAC) decide(req Request) (bool, string) {
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

func compileRBAC(rules *xdswire.RBAC) (*RBAC, error) {
	if rules == nil {
		return &RBAC{allow: false}, nil // no rules: allow everything (a DENY with no policies)
	}
	out := &RBAC{}
	switch rules.Action {
	case xdswire.RBACAllow:
		out.allow = true
	case xdswire.RBACDeny:
		out.allow = false
	default:
		return nil, fmt.Errorf("RBAC action %v is not supported (ALLOW or DENY)", rules.Action)
	}
	names := make([]string, 0, len(rules.Policies))
	for n := range rules.Policies {
		names = append(names, n)
	}
	sort.Strings(names) // Envoy evaluates in name order
	for _, n := range names {
		p := rules.Policies[n]
		if p.Unsupported != "" {
			return nil, fmt.Errorf("RBAC policy %q: %s is not supported", n, p.Unsupported)
		}
		cp := policy{name: n}
		for _, perm := range p.Permissions {
			m, err := compilePermission(perm)
			if err != nil {
				return nil, fmt.Errorf("RBAC policy %q: %w", n, err)
			}
			cp.permissions = append(cp.permissions, m)
		}
		for _, prin := range p.Principals {
			out.claims = out.claims || hasMetadata(prin)
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

// all and anyOf combine matchers.
func all[M ~func(Request) bool](ms []M) func(Request) bool {
	return func(q Request) bool {
		for _, m := range ms {
			if !m(q) {
				return false
			}
		}
		return true
	}
}

func anyOf[M ~func(Request) bool](ms []M) func(Request) bool {
	return func(q Request) bool {
		for _, m := range ms {
			if m(q) {
				return true
			}
		}
		return false
	}
}

func compilePermission(p *xdswire.Permission) (permission, error) {
	switch {
	case p.Unsupported != "":
		return nil, fmt.Errorf("RBAC permission %s is not supported", p.Unsupported)
	case p.Any != nil:
		v := *p.Any
		return func(Request) bool { return v }, nil
	case p.AndRules != nil:
		ms, err := compilePermissions(p.AndRules.Rules)
		return all(ms), err
	case p.OrRules != nil:
		ms, err := compilePermissions(p.OrRules.Rules)
		return anyOf(ms), err
	case p.NotRule != nil:
		m, err := compilePermission(p.NotRule)
		if err != nil {
			return nil, err
		}
		return func(q Request) bool { return !m(q) }, nil
	case p.URLPath != nil:
		if p.URLPath.Path == nil {
			return nil, fmt.Errorf("RBAC url_path has no path matcher")
		}
		sm, err := compileString(p.URLPath.Path)
		if err != nil {
			return nil, err
		}
		return func(q Request) bool { return sm(q.Path) }, nil
	case p.Header != nil:
		return compileHeader(p.Header)
	}
	return nil, fmt.Errorf("RBAC permission has no rule")
}

func compilePermissions(ps []*xdswire.Permission) ([]permission, error) {
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

func compilePrincipal(p *xdswire.Principal) (principal, error) {
	switch {
	case p.Unsupported != "":
		return nil, fmt.Errorf("RBAC principal %s is not supported", p.Unsupported)
	case p.Any != nil:
		v := *p.Any
		return func(Request) bool { return v }, nil
	case p.Authenticated != nil:
		if p.Authenticated.PrincipalName == nil {
			return func(q Request) bool { return q.Principal != "" }, nil
		}
		sm, err := compileString(p.Authenticated.PrincipalName)
		if err != nil {
			return nil, err
		}
		return func(q Request) bool { return q.Principal != "" && sm(q.Principal) }, nil
	case p.AndIDs != nil:
		ms, err := compilePrincipals(p.AndIDs.IDs)
		return all(ms), err
	case p.OrIDs != nil:
		ms, err := compilePrincipals(p.OrIDs.IDs)
		return anyOf(ms), err
	case p.NotID != nil:
		m, err := compilePrincipal(p.NotID)
		if err != nil {
			return nil, err
		}
		return func(q Request) bool { return !m(q) }, nil
	case p.Metadata != nil:
		return compileMetadata(p.Metadata)
	case p.SourcedMetadata != nil:
		if p.SourcedMetadata.MetadataSource != xdswire.MetadataDynamic {
			return nil, fmt.Errorf("RBAC principal sourced_metadata from %v is not supported (DYNAMIC only)", p.SourcedMetadata.MetadataSource)
		}
		if p.SourcedMetadata.MetadataMatcher == nil {
			return nil, fmt.Errorf("RBAC principal sourced_metadata has no matcher")
		}
		return compileMetadata(p.SourcedMetadata.MetadataMatcher)
	}
	return nil, fmt.Errorf("RBAC principal has no identifier")
}

// hasMetadata reports whether a principal matches metadata anywhere.
func hasMetadata(p *xdswire.Principal) bool {
	switch {
	case p.Metadata != nil || p.SourcedMetadata != nil:
		return true
	case p.NotID != nil:
		return hasMetadata(p.NotID)
	case p.AndIDs != nil || p.OrIDs != nil:
		set := p.AndIDs
		if set == nil {
			set = p.OrIDs
		}
		for _, id := range set.IDs {
			if hasMetadata(id) {
				return true
			}
		}
	}
	return false
}

// compileMetadata matches the jwt_authn filter's metadata — a verified
// token's claims under its payload key —, as Envoy's MetadataMatcher: the
// value at the path (a missing one is null), matched, then inverted.
func compileMetadata(m *xdswire.MetadataMatcher) (principal, error) {
	if m.Filter != jwtFilter {
		return nil, fmt.Errorf("RBAC metadata of filter %q is not supported (only %s's)", m.Filter, jwtFilter)
	}
	if len(m.Path) == 0 || m.Value == nil {
		return nil, fmt.Errorf("RBAC metadata matcher needs a path and a value")
	}
	path := make([]string, len(m.Path))
	for i, s := range m.Path {
		path[i] = s.Key
	}
	match, err := compileValue(m.Value)
	if err != nil {
		return nil, err
	}
	invert := m.Invert
	return func(q Request) bool {
		v, ok := claimAt(q, path)
		return (ok && match(v)) != invert
	}, nil
}

// jwtFilter is the metadata namespace of the jwt_authn filter.
const jwtFilter = "envoy.filters.http.jwt_authn"

// claimAt walks the claims: path[0] is the payload key.
func claimAt(q Request, path []string) (any, bool) {
	if q.Claims == nil || path[0] != q.ClaimsKey {
		return nil, false
	}
	var v any = q.Claims
	for _, k := range path[1:] {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, v != nil
}

func compileValue(m *xdswire.ValueMatcher) (func(any) bool, error) {
	switch {
	case m.Unsupported != "":
		return nil, fmt.Errorf("RBAC value matcher %s is not supported", m.Unsupported)
	case m.StringMatch != nil:
		sm, err := compileString(m.StringMatch)
		if err != nil {
			return nil, err
		}
		return func(v any) bool { s, ok := v.(string); return ok && sm(s) }, nil
	case m.BoolMatch != nil:
		want := *m.BoolMatch
		return func(v any) bool { b, ok := v.(bool); return ok && b == want }, nil
	case m.PresentMatch != nil:
		want := *m.PresentMatch
		return func(any) bool { return want }, nil // reached only for a present value
	case m.ListMatch != nil:
		if m.ListMatch.OneOf == nil {
			return nil, fmt.Errorf("RBAC list matcher has no one_of")
		}
		one, err := compileValue(m.ListMatch.OneOf)
		if err != nil {
			return nil, err
		}
		return func(v any) bool {
			l, ok := v.([]any)
			if !ok {
				return false
			}
			for _, x := range l {
				if x != nil && one(x) {
					return true
				}
			}
			return false
		}, nil
	case m.OrMatch != nil:
		var ms []func(any) bool
		for _, vm := range m.OrMatch.ValueMatchers {
			f, err := compileValue(vm)
			if err != nil {
				return nil, err
			}
			ms = append(ms, f)
		}
		return func(v any) bool {
			for _, f := range ms {
				if f(v) {
					return true
				}
			}
			return false
		}, nil
	}
	return nil, fmt.Errorf("RBAC value matcher has no pattern")
}

func compilePrincipals(ps []*xdswire.Principal) ([]principal, error) {
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
// headers, with string matchers or presence, as Envoy's
// HeaderUtility::matchHeaders: the values of a header given several times
// joined by ","; a missing header matches only a presence rule
// (present_match false, or true inverted) unless
// treat_missing_header_as_empty says to match it as "".
func compileHeader(h *xdswire.HeaderMatcher) (permission, error) {
	name := strings.ToLower(h.Name)
	get := func(q Request) (string, bool) {
		switch name {
		case ":path":
			return q.Path, true
		case ":method":
			return q.Method, true
		}
		if q.Header == nil {
			return "", false
		}
		return q.Header(name)
	}
	var m func(v string, present bool) bool
	value := func(match func(string) bool) func(v string, present bool) bool {
		return func(v string, present bool) bool {
			// Missing: no match, inverted or not, unless read as "".
			return (present || h.TreatMissingAsEmpty) && match(v) != h.InvertMatch
		}
	}
	sm := h.StringMatch
	switch { // the deprecated specifiers, as the string matcher reads them
	case h.ExactMatch != nil:
		sm = &xdswire.StringMatcher{Exact: h.ExactMatch}
	case h.PrefixMatch != nil:
		sm = &xdswire.StringMatcher{Prefix: h.PrefixMatch}
	case h.SuffixMatch != nil:
		sm = &xdswire.StringMatcher{Suffix: h.SuffixMatch}
	case h.ContainsMatch != nil:
		sm = &xdswire.StringMatcher{Contains: h.ContainsMatch}
	case h.SafeRegexMatch != nil:
		sm = &xdswire.StringMatcher{SafeRegex: h.SafeRegexMatch}
	}
	switch {
	case sm != nil:
		match, err := compileString(sm)
		if err != nil {
			return nil, err
		}
		m = value(match)
	case h.RangeMatch != nil:
		// Envoy: the value is a base-10 integer in [start, end).
		lo, hi := h.RangeMatch.Start, h.RangeMatch.End
		m = value(func(v string) bool {
			n, err := strconv.ParseInt(v, 10, 64)
			return err == nil && n >= lo && n < hi
		})
	default:
		// present_match, or no specifier at all: Envoy reads a bare name as
		// present_match true.
		want := h.PresentMatch == nil || *h.PresentMatch
		m = func(_ string, present bool) bool {
			if !present && !h.TreatMissingAsEmpty {
				return !want != h.InvertMatch
			}
			return want != h.InvertMatch // present (or read as ""): Envoy's present_match is then its own value
		}
	}
	return func(q Request) bool { return m(get(q)) }, nil
}

func compileString(sm *xdswire.StringMatcher) (func(string) bool, error) {
	fold := func(s string) string { return s }
	if sm.IgnoreCase {
		fold = strings.ToLower
	}
	switch {
	case sm.Unsupported != "":
		return nil, fmt.Errorf("string matcher %s is not supported", sm.Unsupported)
	case sm.Exact != nil:
		want := fold(*sm.Exact)
		return func(s string) bool { return fold(s) == want }, nil
	case sm.Prefix != nil:
		want := fold(*sm.Prefix)
		return func(s string) bool { return strings.HasPrefix(fold(s), want) }, nil
	case sm.Suffix != nil:
		want := fold(*sm.Suffix)
		return func(s string) bool { return strings.HasSuffix(fold(s), want) }, nil
	case sm.Contains != nil:
		want := fold(*sm.Contains)
		return func(s string) bool { return strings.Contains(fold(s), want) }, nil
	case sm.SafeRegex != nil:
		re, err := regexp.Compile("^(?:" + sm.SafeRegex.Regex + ")$")
		if err != nil {
			return nil, fmt.Errorf("regex %q: %w", sm.SafeRegex.Regex, err)
		}
		return re.MatchString, nil
	}
	return nil, fmt.Errorf("string matcher has no pattern")
}
