package xds

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/xds/policymeta"
)

// policyKeys are the keys after the prefix, each with how it sets a
// Policy field from a value.
var policyKeys = map[string]func(p *Policy, v string) error{
	"timeout":         durationKey(func(p *Policy) *time.Duration { return &p.Timeout }, 0),
	"per_try_timeout": durationKey(func(p *Policy) *time.Duration { return &p.PerTryTimeout }, 0),
	"retries":         countKey(func(p *Policy) *uint32 { return &p.Retries }, 0, 10),
	"retry_on": func(p *Policy, v string) error {
		on, err := parseRetryOn(v)
		p.RetryOn = on
		return err
	},
	"max_connections":      countKey(func(p *Policy) *uint32 { return &p.MaxConnections }, 1, 1<<20),
	"max_pending_requests": countKey(func(p *Policy) *uint32 { return &p.MaxPendingRequests }, 1, 1<<20),
	"max_requests":         countKey(func(p *Policy) *uint32 { return &p.MaxRequests }, 1, 1<<20),
	"max_retries":          countKey(func(p *Policy) *uint32 { return &p.MaxRetries }, 1, 1<<20),
	"consecutive_5xx":      countKey(func(p *Policy) *uint32 { return &p.Consecutive5xx }, 1, 1000),
	"base_ejection_time":   durationKey(func(p *Policy) *time.Duration { return &p.BaseEjectionTime }, time.Millisecond),
	"max_ejection_percent": countKey(func(p *Policy) *uint32 { return &p.MaxEjectionPercent }, 0, 100),
	"rate_limit":           countKey(func(p *Policy) *uint32 { return &p.RateLimit }, 1, 1_000_000),
	"rate_limit_burst":     countKey(func(p *Policy) *uint32 { return &p.RateLimitBurst }, 1, 1_000_000),
	"fault_delay":          durationKey(func(p *Policy) *time.Duration { return &p.Fault.Delay }, time.Millisecond),
	"fault_delay_percent":  percentKey(func(p *Policy) *uint32 { return &p.Fault.DelayShare }),
	"fault_abort":          countKey(func(p *Policy) *uint32 { return &p.Fault.Abort }, 200, 599),
	"fault_abort_grpc":     countKey(func(p *Policy) *uint32 { return &p.Fault.AbortGRPC }, 1, 16),
	"fault_abort_percent":  percentKey(func(p *Policy) *uint32 { return &p.Fault.AbortShare }),
	"fault_header": func(p *Policy, v string) error {
		if err := identity.ValidateRouteHeader(v); err != nil {
			return err
		}
		p.Fault.Header = v
		return nil
	},
	"mirror": func(p *Policy, v string) error {
		name, ns, err := identity.SplitService(v)
		p.Mirror.Service, p.Mirror.Namespace = name, ns
		return err
	},
	"mirror_percent": percentKey(func(p *Policy) *uint32 { return &p.Mirror.Share }),
	"allow_from":     callersKey(func(p *Policy) *string { return &p.AllowFrom }),
	"deny_from":      callersKey(func(p *Policy) *string { return &p.DenyFrom }),
	"scopes":         scopesKey,
	"access_log": func(p *Policy, v string) error {
		switch v {
		case "on":
			p.AccessLog = true
		case "off":
			p.AccessLog = false
		default:
			return fmt.Errorf("%q is not on or off", v)
		}
		return nil
	},
	"lb": func(p *Policy, v string) error {
		if v != "round_robin" && v != "least_request" {
			return fmt.Errorf("%q is not round_robin or least_request", v)
		}
		p.LoadBalancer = v
		return nil
	},
	"rate_limit_scope": func(p *Policy, v string) error {
		switch v {
		case "instance":
			p.RateLimitShared = false
		case "service":
			p.RateLimitShared = true
		default:
			return fmt.Errorf("%q is not instance (each instance takes the limit) or service (the instances share it)", v)
		}
		return nil
	},
}

func durationKey(field func(*Policy) *time.Duration, least time.Duration) func(*Policy, string) error {
	return func(p *Policy, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%q is not a duration (write it as 2s or 250ms)", v)
		}
		if d < least || d > 24*time.Hour {
			return fmt.Errorf("%s is outside %v–24h", d, least)
		}
		*field(p) = d
		return nil
	}
}

func countKey(field func(*Policy) *uint32, least, most uint64) func(*Policy, string) error {
	return func(p *Policy, v string) error {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n < least || n > most {
			return fmt.Errorf("%q is not a whole number from %d to %d", v, least, most)
		}
		*field(p) = uint32(n)
		return nil
	}
}

// percentKey sets a share in parts per million from a percentage (0–100,
// at most four decimals: 0.0001 % is one in a million).
func percentKey(field func(*Policy) *uint32) func(*Policy, string) error {
	return func(p *Policy, v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > 100 || math.IsNaN(f) {
			return fmt.Errorf("%q is not a percentage from 0 to 100", v)
		}
		ppm := math.Round(f * 10_000)
		if math.Abs(ppm-f*10_000) > 1e-6 {
			return fmt.Errorf("%q has more than four decimals (the finest share is 0.0001 %%)", v)
		}
		*field(p) = uint32(ppm)
		return nil
	}
}

// check completes a fault from its keys (has reports whether a key
// was given): a delay or abort given without its share applies to every
// call; a share without its fault, or two kinds of abort, are errors.
func (f *Fault) check(has func(key string) bool) error {
	k := func(name string) string { return policymeta.Prefix + name }
	switch {
	case f.Abort > 0 && f.AbortGRPC > 0:
		return fmt.Errorf("policy keys %s and %s both set an abort; give one (an HTTP status, or a gRPC status)", k("fault_abort"), k("fault_abort_grpc"))
	case has("fault_delay_percent") && f.Delay == 0:
		return fmt.Errorf("policy key %s needs %s (how long to delay)", k("fault_delay_percent"), k("fault_delay"))
	case has("fault_abort_percent") && f.Abort == 0 && f.AbortGRPC == 0:
		return fmt.Errorf("policy key %s needs %s or %s (what to answer)", k("fault_abort_percent"), k("fault_abort"), k("fault_abort_grpc"))
	case f.Header != "" && f.Delay == 0 && f.Abort == 0 && f.AbortGRPC == 0:
		return fmt.Errorf("policy key %s needs a fault (%s, %s or %s)", k("fault_header"), k("fault_delay"), k("fault_abort"), k("fault_abort_grpc"))
	}
	if f.Delay > 0 && !has("fault_delay_percent") {
		f.DelayShare = 1_000_000
	}
	if (f.Abort > 0 || f.AbortGRPC > 0) && !has("fault_abort_percent") {
		f.AbortShare = 1_000_000
	}
	return nil
}

// retryConditions are the retry conditions a policy may name: Envoy's
// (router filter) and gRPC's (x-envoy-retry-grpc-on, gRFC A44), which
// every kind of caller reads the same way.
var retryConditions = []string{"connect-failure", "reset", "5xx", "gateway-error", "retriable-4xx",
	"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}

// parseRetryOn checks a retry_on value — conditions and HTTP statuses,
// comma-separated (Istio's retryOn) — and returns it without spaces or
// repeats.
func parseRetryOn(v string) (string, error) {
	var out []string
	for _, c := range strings.Split(v, ",") {
		c = strings.TrimSpace(c)
		if c == "" || slices.Contains(out, c) {
			continue
		}
		if n, err := strconv.Atoi(c); err == nil {
			if n < 400 || n > 599 {
				return "", fmt.Errorf("%q: status %d is not an error status (400–599)", v, n)
			}
		} else if !slices.Contains(retryConditions, c) {
			return "", fmt.Errorf("%q: %q is not a retry condition (%s, or an HTTP status 400–599)", v, c, strings.Join(retryConditions, ", "))
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return "", fmt.Errorf("%q names no retry condition (%s, or an HTTP status 400–599)", v, strings.Join(retryConditions, ", "))
	}
	return strings.Join(out, ","), nil
}

// callersKey sets a list of callers: "name.namespace" or "*.namespace",
// comma-separated; stored sorted, without repeats.
func callersKey(field func(*Policy) *string) func(*Policy, string) error {
	return func(p *Policy, v string) error {
		var out []string
		for _, c := range strings.Split(v, ",") {
			c = strings.TrimSpace(c)
			if c == "" {
				continue
			}
			name, ns, ok := strings.Cut(c, ".")
			if !ok {
				return fmt.Errorf("%q: caller %q names no namespace (write name.namespace, or *.namespace for all of one)", v, c)
			}
			if name != "*" {
				if err := identity.ValidateName("caller service", name); err != nil {
					return fmt.Errorf("%q: %w", v, err)
				}
			}
			if err := identity.ValidateName("caller namespace", ns); err != nil {
				return fmt.Errorf("%q: %w", v, err)
			}
			if !slices.Contains(out, c) {
				out = append(out, c)
			}
		}
		if len(out) == 0 {
			return fmt.Errorf("%q names no caller (name.namespace or *.namespace, comma-separated)", v)
		}
		slices.Sort(out)
		*field(p) = strings.Join(out, ",")
		return nil
	}
}

// scopeRE is an account scope as the auth service takes it.
var scopeRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

// scopesKey sets Scopes: "*" (any account of the namespace) or scopes,
// comma-separated; sorted, without repeats.
func scopesKey(p *Policy, v string) error {
	if strings.TrimSpace(v) == "*" {
		p.Scopes = "*"
		return nil
	}
	var out []string
	for _, sc := range strings.Split(v, ",") {
		sc = strings.TrimSpace(sc)
		switch {
		case sc == "":
			continue
		case sc == "*":
			return fmt.Errorf("%q: * stands alone (any account of the namespace), not in a list", v)
		case !scopeRE.MatchString(sc):
			return fmt.Errorf("%q: scope %q is not 1–64 letters, digits, '.', '_', ':' or '-'", v, sc)
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	if len(out) == 0 {
		return fmt.Errorf("%q names no scope (scopes, comma-separated, or * for any account)", v)
	}
	if len(out) > 16 {
		return fmt.Errorf("%q: %d scopes; at most 16", v, len(out))
	}
	slices.Sort(out)
	p.Scopes = strings.Join(out, ",")
	return nil
}

// Callers splits a list of callers (Policy's AllowFrom, DenyFrom) into
// services ("name.namespace") and whole namespaces (from "*.namespace").
func Callers(list string) (services [][2]string, namespaces []string) {
	if list == "" {
		return nil, nil
	}
	for _, c := range strings.Split(list, ",") {
		name, ns, _ := strings.Cut(c, ".")
		if name == "*" {
			namespaces = append(namespaces, ns)
		} else {
			services = append(services, [2]string{ns, name})
		}
	}
	return services, namespaces
}

// check completes a mirror from its keys: a mirror without its share
// copies every call; a share without a mirror is an error.
func (m *Mirror) check(has func(key string) bool) error {
	if has("mirror_percent") && m.Service == "" {
		return fmt.Errorf("policy key %smirror_percent needs %smirror (the service the copies go to)", policymeta.Prefix, policymeta.Prefix)
	}
	if m.Service != "" && !has("mirror_percent") {
		m.Share = 1_000_000
	}
	return nil
}

// routeKeys are the policy keys a path may set: the route's; the others
// (breakers, load balancing, outlier detection) belong to the service's
// cluster.
var routeKeys = map[string]bool{"timeout": true, "per_try_timeout": true, "retries": true, "retry_on": true, "rate_limit": true, "rate_limit_burst": true,
	"fault_delay": true, "fault_delay_percent": true, "fault_abort": true, "fault_abort_grpc": true, "fault_abort_percent": true, "fault_header": true,
	"mirror": true, "mirror_percent": true, "allow_from": true, "deny_from": true, "scopes": true}

// maxRouteEntries bounds a service's path entries (Consul takes 64
// metadata keys per instance).
const maxRouteEntries = 32

// PolicyFromMetadata is DefaultPolicy with the policy keys of md applied
// (policymeta's form), and the service's route policies, each starting
// from the service's policy. A key it does not know, a value out of range
// or a path it cannot route is an error naming the key, the value and
// what it takes.
func PolicyFromMetadata(md map[string]string) (Policy, []RoutePolicy, error) {
	p := DefaultPolicy
	var keys, routeEntries []string
	for k := range md {
		switch {
		case strings.HasPrefix(k, policymeta.RoutePrefix):
			routeEntries = append(routeEntries, k)
		case strings.HasPrefix(k, policymeta.Prefix):
			keys = append(keys, k)
		}
	}
	sort.Strings(keys) // the first error is the same every time
	for _, k := range keys {
		set, ok := policyKeys[strings.TrimPrefix(k, policymeta.Prefix)]
		if !ok {
			return DefaultPolicy, nil, fmt.Errorf("policy key %q is not one of %s", k, strings.Join(PolicyKeys(), ", "))
		}
		if err := set(&p, md[k]); err != nil {
			return DefaultPolicy, nil, fmt.Errorf("policy key %s: %w", k, err)
		}
	}
	if err := p.checkRateLimit(); err != nil {
		return DefaultPolicy, nil, err
	}
	serviceHas := func(key string) bool { _, ok := md[policymeta.Prefix+key]; return ok }
	if err := p.Fault.check(serviceHas); err != nil {
		return DefaultPolicy, nil, err
	}
	if err := p.Mirror.check(serviceHas); err != nil {
		return DefaultPolicy, nil, err
	}
	if len(routeEntries) > maxRouteEntries {
		return DefaultPolicy, nil, fmt.Errorf("%d path policy entries; at most %d", len(routeEntries), maxRouteEntries)
	}
	sort.Strings(routeEntries)
	byPath := map[string]*Policy{}
	pathKeys := map[string]map[string]bool{} // the keys each path sets
	for _, k := range routeEntries {
		entry := md[k]
		key, value, ok := strings.Cut(entry, "=")
		path, name, ok2 := policymeta.SplitRoute(key)
		if !ok || !ok2 {
			return DefaultPolicy, nil, fmt.Errorf("policy key %s: %q is not PATH:KEY=VALUE", k, entry)
		}
		if err := validRoutePath(path); err != nil {
			return DefaultPolicy, nil, fmt.Errorf("policy %s: %w", key, err)
		}
		if !routeKeys[name] {
			if _, known := policyKeys[name]; known {
				return DefaultPolicy, nil, fmt.Errorf("policy %s: %s applies to the whole service, not to one path (set it without a path)", key, name)
			}
			return DefaultPolicy, nil, fmt.Errorf("policy %s: %q is not a key a path can set (%s)", key, name, strings.Join(PathPolicyKeys(), ", "))
		}
		rp := byPath[path]
		if rp == nil {
			rp = &Policy{Timeout: p.Timeout, PerTryTimeout: p.PerTryTimeout, Retries: p.Retries, RetryOn: p.RetryOn, Fault: p.Fault, Mirror: p.Mirror, Scopes: p.Scopes}
			byPath[path] = rp
			pathKeys[path] = map[string]bool{}
		}
		// A path's abort of one kind replaces the service's of the other.
		if other, ok := map[string]string{"fault_abort": "fault_abort_grpc", "fault_abort_grpc": "fault_abort"}[name]; ok {
			if pathKeys[path][other] {
				return DefaultPolicy, nil, fmt.Errorf("policy for %s: %s and %s both set an abort; give one", path, name, other)
			}
			rp.Fault.Abort, rp.Fault.AbortGRPC = 0, 0
		}
		pathKeys[path][name] = true
		if err := policyKeys[name](rp, value); err != nil {
			return DefaultPolicy, nil, fmt.Errorf("policy %s: %w", key, err)
		}
	}
	routes := make([]RoutePolicy, 0, len(byPath))
	for path, rp := range byPath {
		if err := rp.checkRateLimit(); err != nil {
			return DefaultPolicy, nil, fmt.Errorf("policy for %s: %w", path, err)
		}
		// A path's fault starts from the service's: a share either gave
		// stays, the path's own keys replace the rest.
		pathHas := func(key string) bool { return pathKeys[path][key] || serviceHas(key) }
		if err := rp.Fault.check(pathHas); err != nil {
			return DefaultPolicy, nil, fmt.Errorf("policy for %s: %w", path, err)
		}
		// A path's mirror likewise: its own service with the service's
		// share, unless it gives one.
		if err := rp.Mirror.check(pathHas); err != nil {
			return DefaultPolicy, nil, fmt.Errorf("policy for %s: %w", path, err)
		}
		r := RoutePolicy{Path: path, Timeout: rp.Timeout, PerTryTimeout: rp.PerTryTimeout, Retries: rp.Retries, RetryOn: rp.RetryOn, RateLimit: rp.RateLimit, RateLimitBurst: rp.RateLimitBurst,
			Fault: rp.Fault, Mirror: rp.Mirror, AllowFrom: rp.AllowFrom, DenyFrom: rp.DenyFrom, Scopes: rp.Scopes}
		r.Path, r.Prefix = strings.CutSuffix(path, "*")
		routes = append(routes, r)
	}
	sortRoutes(routes)
	if len(routes) == 0 {
		routes = nil
	}
	return p, routes, nil
}

// checkRateLimit: a burst needs a rate, and must hold 50 ms of it (the
// shortest refill interval Envoy takes).
func (p Policy) checkRateLimit() error {
	switch {
	case p.RateLimitBurst > 0 && p.RateLimit == 0:
		return fmt.Errorf("policy key %srate_limit_burst needs %srate_limit (requests per second)", policymeta.Prefix, policymeta.Prefix)
	case p.RateLimitBurst > 0 && uint64(p.RateLimitBurst)*20 < uint64(p.RateLimit):
		return fmt.Errorf("policy key %srate_limit_burst %d is under 50 ms of %srate_limit %d: at least %d",
			policymeta.Prefix, p.RateLimitBurst, policymeta.Prefix, p.RateLimit, (p.RateLimit+19)/20)
	}
	return nil
}

// validRoutePath checks a path as a policy names it: absolute, "*" only at
// the end (a prefix), nothing a flag or a URL path cannot carry.
func validRoutePath(path string) error {
	switch {
	case !strings.HasPrefix(path, "/"):
		return fmt.Errorf("the path %q does not start with /", path)
	case len(path) > 256:
		return fmt.Errorf("the path %.20q… is longer than 256 bytes", path)
	case strings.Contains(strings.TrimSuffix(path, "*"), "*"):
		return fmt.Errorf("the path %q has a * before its end (a trailing * makes it a prefix; nothing else is a wildcard)", path)
	case strings.ContainsAny(path, " \t\r\n,=?#"):
		return fmt.Errorf("the path %q holds a space, comma, =, ? or # (write the path alone, as the request carries it)", path)
	}
	return nil
}

// sortRoutes orders route policies as the routes are tried: exact paths
// first, then prefixes longest first, so the most specific wins.
func sortRoutes(routes []RoutePolicy) {
	sort.Slice(routes, func(i, j int) bool {
		a, b := routes[i], routes[j]
		if a.Prefix != b.Prefix {
			return !a.Prefix
		}
		if len(a.Path) != len(b.Path) {
			return len(a.Path) > len(b.Path)
		}
		return a.Path < b.Path
	})
}

// PathPolicyKeys lists the keys a path's policy takes, sorted (without
// the prefix: PATH:key=value).
func PathPolicyKeys() []string {
	out := make([]string, 0, len(routeKeys))
	for k := range routeKeys {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// PolicyKeys lists the policy keys, prefixed, sorted.
func PolicyKeys() []string {
	out := make([]string, 0, len(policyKeys))
	for k := range policyKeys {
		out = append(out, policymeta.Prefix+k)
	}
	sort.Strings(out)
	return out
}
