package config

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/micromesh/micromesh/dataplane/xdswire"
)

// compilePathMatch reads a route's path specifier as Envoy matches it, on
// the path without its query: exact, prefix, prefix of whole segments
// (path_separated_prefix) — with case_sensitive — or a regular expression
// the whole path matches (safe_regex; case_sensitive does not apply).
func compilePathMatch(m *xdswire.RouteMatch) (PathMatch, error) {
	fold := m.CaseSensitive != nil && !*m.CaseSensitive
	switch {
	case m.ConnectMatcher != nil:
		return PathMatch{Connect: true}, nil
	case m.Prefix != nil:
		return PathMatch{Path: *m.Prefix, Prefix: true, Fold: fold}, nil
	case m.Path != nil:
		return PathMatch{Path: *m.Path, Fold: fold}, nil
	case m.PathSeparatedPrefix != nil:
		p := *m.PathSeparatedPrefix
		if !strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.ContainsAny(p, "?#") {
			// Envoy's validation: it must start with / and not end with one.
			return PathMatch{}, fmt.Errorf("path_separated_prefix %q must start with / and hold no ?, # or trailing /", p)
		}
		return PathMatch{Path: p, Segment: true, Fold: fold}, nil
	case m.SafeRegex != nil:
		re, err := regexp.Compile("^(?:" + m.SafeRegex.Regex + ")$")
		if err != nil {
			return PathMatch{}, fmt.Errorf("safe_regex %q: %w", m.SafeRegex.Regex, err)
		}
		return PathMatch{Path: m.SafeRegex.Regex, Regex: re}, nil
	}
	return PathMatch{}, errors.New("the route has no path match")
}

// readsHeaders reports whether a route's conditions read the request's
// headers.
func readsHeaders(m *xdswire.RouteMatch) bool { return len(m.Headers) > 0 || m.GRPC != nil }

// compileConditions reads what a route's match asks of a request besides
// its path, as Envoy does: every header matcher (read as RBAC's; :method
// among pseudo-headers), every query parameter matcher (its first value,
// decoded), gRPC requests only, a share of the requests (a fresh random
// pick per request; the runtime key overrides nothing, there being no
// runtime).
func compileConditions(m *xdswire.RouteMatch) ([]func(Request) bool, error) {
	// :path is the path match's; :authority picked the virtual host.
	out, err := compileHeaders(m.Headers, "a route's", ":method")
	if err != nil {
		return nil, err
	}
	for _, qp := range m.QueryParameters {
		match, err := compileQueryParameter(qp)
		if err != nil {
			return nil, err
		}
		out = append(out, match)
	}
	if m.GRPC != nil {
		out = append(out, func(q Request) bool {
			ct, _ := q.Header("content-type")
			return isGRPCContentType(ct)
		})
	}
	if rf := m.RuntimeFraction; rf != nil {
		share := shareOf(rf.DefaultValue)
		out = append(out, func(Request) bool { return share.Roll() })
	}
	return out, nil
}

// compileHeaders compiles the header matchers of what ("a route's", "a
// fault's"), which may name the pseudo-headers listed and no other.
func compileHeaders(hs []*xdswire.HeaderMatcher, what string, pseudo ...string) ([]func(Request) bool, error) {
	var out []func(Request) bool
	for _, h := range hs {
		if strings.HasPrefix(h.Name, ":") && !slices.Contains(pseudo, h.Name) {
			return nil, fmt.Errorf("%s header matcher on %s is not supported (only %s among pseudo-headers)", what, h.Name, strings.Join(pseudo, " and "))
		}
		match, err := compileHeader(h)
		if err != nil {
			return nil, fmt.Errorf("%s header matcher: %w", what, err)
		}
		out = append(out, match)
	}
	return out, nil
}

// isGRPCContentType is Envoy's Grpc::Common::isGrpcRequestHeaders test:
// application/grpc, or application/grpc+ or ; something.
func isGRPCContentType(ct string) bool {
	rest, ok := strings.CutPrefix(ct, "application/grpc")
	return ok && (rest == "" || rest[0] == '+' || rest[0] == ';')
}

// compileQueryParameter matches a query parameter's first value, decoded
// (Envoy's QueryParameterMatcher): by a string matcher, or by presence.
func compileQueryParameter(qp *xdswire.QueryParameterMatcher) (func(Request) bool, error) {
	if qp.Name == "" {
		return nil, errors.New("a query parameter matcher needs a name")
	}
	var match func(v string, present bool) bool
	switch {
	case qp.StringMatch != nil:
		sm, err := compileString(qp.StringMatch)
		if err != nil {
			return nil, fmt.Errorf("query parameter %q: %w", qp.Name, err)
		}
		match = func(v string, present bool) bool { return present && sm(v) }
	case qp.PresentMatch != nil:
		// Envoy: a missing parameter never matches; a present one matches
		// present_match's own value.
		want := *qp.PresentMatch
		match = func(_ string, present bool) bool { return present && want }
	default:
		// Envoy's deprecated form without a specifier matches presence.
		match = func(_ string, present bool) bool { return present }
	}
	name := qp.Name
	return func(q Request) bool {
		v, present := firstQueryValue(q.Query, name)
		return match(v, present)
	}, nil
}

// firstQueryValue returns the first value of query parameter name in a
// raw query, percent-decoded (a value that does not decode is taken as it
// is), and whether the query has it.
func firstQueryValue(raw, name string) (string, bool) {
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(kv, "=")
		if dk, err := url.PathUnescape(k); err != nil || dk != name {
			continue
		}
		if dv, err := url.PathUnescape(v); err == nil {
			return dv, true
		}
		return v, true
	}
	return "", false
}
