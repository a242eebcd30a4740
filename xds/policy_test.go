package xds

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/xds/policymeta"
)

func TestPolicyFromMetadata(t *testing.T) {
	p, routes, err := PolicyFromMetadata(map[string]string{"policy_timeout": "250ms", "policy_retries": "0", "policy_lb": "round_robin",
		"policy_max_requests": "7", "policy_base_ejection_time": "1s", "policy_max_ejection_percent": "100", "other": "kept out"})
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultPolicy
	want.Timeout, want.Retries, want.LoadBalancer, want.MaxRequests, want.BaseEjectionTime, want.MaxEjectionPercent =
		250*time.Millisecond, 0, "round_robin", 7, time.Second, 100
	if p != want || routes != nil {
		t.Errorf("policy = %+v, %+v; want %+v and no routes", p, routes, want)
	}
	if p, routes, err := PolicyFromMetadata(nil); err != nil || p != DefaultPolicy || routes != nil {
		t.Errorf("no keys: %+v, %+v, %v; want the default policy", p, routes, err)
	}
	for md, mention := range map[string]string{
		"policy_timeout=2":                     `"2" is not a duration`,
		"policy_timeout=-1s":                   "outside",
		"policy_retries=11":                    "from 0 to 10",
		"policy_max_requests=0":                "from 1 to",
		"policy_max_ejection_percent=x":        "whole number",
		"policy_lb=random":                     "round_robin or least_request",
		"policy_timout=1s":                     `policy key "policy_timout" is not one of`,
		"policy_route_0=/a:timeout":            "is not PATH:KEY=VALUE",
		"policy_route_0=/a=1s":                 "is not PATH:KEY=VALUE",
		"policy_rate_limit=0":                  "from 1 to 1000000",
		"policy_rate_limit_burst=10":           "rate_limit_burst needs policy_rate_limit",
		"policy_route_0=/a:rate_limit_burst=5": "policy for /a: policy key policy_rate_limit_burst needs policy_rate_limit",
	} {
		k, v, _ := strings.Cut(md, "=")
		_, _, err := PolicyFromMetadata(map[string]string{k: v})
		if err == nil || !strings.Contains(err.Error(), mention) {
			t.Errorf("%s: %v, want an error mentioning %q", md, err, mention)
		}
	}
}

// A rate limit takes its burst from the rate unless set; a burst must
// hold 50 ms of the rate.
func TestRateLimitPolicy(t *testing.T) {
	p, _, err := PolicyFromMetadata(map[string]string{"policy_rate_limit": "100", "policy_rate_limit_burst": "5"})
	if err != nil || p.RateLimit != 100 || p.RateLimitBurst != 5 {
		t.Errorf("rate 100, burst 5: %+v, %v", p, err)
	}
	// A path's own limit: its own bucket, not the service's numbers.
	_, routes, err := PolicyFromMetadata(map[string]string{"policy_rate_limit": "100", "policy_route_0": "/export/*:rate_limit=2"})
	if err != nil || len(routes) != 1 || routes[0].RateLimit != 2 || routes[0].RateLimitBurst != 0 || routes[0].Path != "/export/" || !routes[0].Prefix {
		t.Errorf("a path's rate limit: %+v, %v", routes, err)
	}
	if _, _, err := PolicyFromMetadata(map[string]string{"policy_rate_limit": "100", "policy_rate_limit_burst": "4"}); err == nil ||
		!strings.Contains(err.Error(), "policy_rate_limit_burst 4 is under 50 ms of policy_rate_limit 100: at least 5") {
		t.Errorf("burst 4 of 100/s: %v", err)
	}
}

// TestSharedRateLimit: rate_limit_scope=service gives each instance that
// may take requests its share of the rate and the burst, in fills Envoy
// takes (≥ 50 ms); the shares add up to the service's limit.
func TestSharedRateLimit(t *testing.T) {
	p, _, err := PolicyFromMetadata(map[string]string{"policy_rate_limit": "100", "policy_rate_limit_scope": "service", "policy_route_0": "/export/*:rate_limit=2"})
	if err != nil || !p.RateLimitShared {
		t.Fatalf("scope service: %+v, %v", p, err)
	}
	for md, want := range map[string]string{
		"policy_rate_limit_scope=cluster":            `"cluster" is not instance (each instance takes the limit) or service (the instances share it)`,
		"policy_route_0=/a:rate_limit_scope=service": "rate_limit_scope applies to the whole service, not to one path",
	} {
		k, v, _ := strings.Cut(md, "=")
		if _, _, err := PolicyFromMetadata(map[string]string{k: v, "policy_rate_limit": "10"}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", md, err, want)
		}
	}

	s := &Service{Policy: p, Endpoints: []Endpoint{{Health: HealthPassing}, {Health: HealthWarning}, {Health: ""}, {Health: HealthCritical}}}
	if n := rateLimitShare(s); n != 3 {
		t.Errorf("shared by %d instances, want 3 (all but the critical one)", n)
	}
	s.Endpoints = nil
	if n := rateLimitShare(s); n != 1 {
		t.Errorf("no instances: shared by %d, want 1", n)
	}
	s.Policy.RateLimitShared, s.Endpoints = false, make([]Endpoint, 5)
	if n := rateLimitShare(s); n != 1 {
		t.Errorf("scope instance: shared by %d, want 1", n)
	}

	for _, rate := range []uint32{1, 2, 3, 7, 10, 20, 99, 100, 1000, 12345, 1_000_000} {
		for _, burst := range []uint32{0, 1, 5, 20, 50, 1000, 1_000_000} {
			if Policy.checkRateLimit(Policy{RateLimit: rate, RateLimitBurst: burst}) != nil {
				continue
			}
			whole := burst
			if burst == 0 {
				whole = rate
			}
			for _, share := range []uint32{1, 2, 3, 4, 7, 16, 100} {
				b := localRateLimit("x", rate, burst, share).TokenBucket
				every := b.FillInterval.AsDuration()
				perInstance := float64(b.TokensPerFill.GetValue()) / every.Seconds()
				if got := perInstance * float64(share); got < float64(rate)*0.999 || got > float64(rate)*1.001 {
					t.Errorf("rate %d burst %d over %d: the shares add up to %.3f/s", rate, burst, share, got)
				}
				if b.MaxTokens != (whole+share-1)/share || b.TokensPerFill.GetValue() > b.MaxTokens {
					t.Errorf("rate %d burst %d over %d: bucket %d, fills of %d", rate, burst, share, b.MaxTokens, b.TokensPerFill.GetValue())
				}
				if every < 50*time.Millisecond && share > 1 {
					t.Errorf("rate %d burst %d over %d: fills every %v, under Envoy's 50 ms", rate, burst, share, every)
				}
			}
		}
	}
}

// TestPathPolicies: a path's timeouts and retries start from the service's
// and override what it sets; routes come exact first, then prefixes
// longest first.
func TestPathPolicies(t *testing.T) {
	md := policymeta.Metadata(map[string]string{
		"timeout":                        "2s",
		"retries":                        "1",
		"/pkg.Greeter/Slow:timeout":      "30s",
		"/pkg.Greeter/Slow:retries":      "0",
		"/pkg.Greeter/*:per_try_timeout": "100ms",
		"/pkg.Greeter/Say*:retries":      "5",
	})
	p, routes, err := PolicyFromMetadata(md)
	if err != nil {
		t.Fatal(err)
	}
	if p.Timeout != 2*time.Second || p.Retries != 1 {
		t.Errorf("service policy = %+v", p)
	}
	want := []RoutePolicy{
		{Path: "/pkg.Greeter/Slow", Timeout: 30 * time.Second, PerTryTimeout: DefaultPolicy.PerTryTimeout, Retries: 0},
		{Path: "/pkg.Greeter/Say", Prefix: true, Timeout: 2 * time.Second, PerTryTimeout: DefaultPolicy.PerTryTimeout, Retries: 5},
		{Path: "/pkg.Greeter/", Prefix: true, Timeout: 2 * time.Second, PerTryTimeout: 100 * time.Millisecond, Retries: 1},
	}
	if !reflect.DeepEqual(routes, want) {
		t.Errorf("routes =\n%+v\nwant\n%+v", routes, want)
	}

	for flag, mention := range map[string]string{
		"pkg.Greeter/Slow:timeout=1s":  "does not start with /",
		"/pkg.*/Slow:timeout=1s":       "has a * before its end",
		"/a b:timeout=1s":              "holds a space",
		"/a:max_requests=5":            "applies to the whole service, not to one path",
		"/a:lb=round_robin":            "applies to the whole service",
		"/a:colour=blue":               `"colour" is not a key a path can set`,
		"/a:timeout=soon":              `policy /a:timeout: "soon" is not a duration`,
		"/a:retries=11":                "from 0 to 10",
		"/" + strings.Repeat("a", 300): "longer than 256 bytes",
	} {
		k, v, _ := strings.Cut(flag, "=")
		if !strings.Contains(k, ":") {
			k += ":timeout"
		}
		_, _, err := PolicyFromMetadata(policymeta.Metadata(map[string]string{k: v}))
		if err == nil || !strings.Contains(err.Error(), mention) {
			t.Errorf("%s: %v, want an error mentioning %q", flag, err, mention)
		}
	}
	many := map[string]string{}
	for i := range maxRouteEntries + 1 {
		many[fmt.Sprintf("/m%d:timeout", i)] = "1s"
	}
	if _, _, err := PolicyFromMetadata(policymeta.Metadata(many)); err == nil || !strings.Contains(err.Error(), "at most 32") {
		t.Errorf("%d path entries: %v, want an error naming the limit", len(many), err)
	}
}

// Fault keys: a fault given without its share applies to every call; a
// share in percent with up to four decimals; a path's fault starts from
// the service's; what cannot be applied is an error naming the keys.
func TestFaultPolicy(t *testing.T) {
	p, routes, err := PolicyFromMetadata(policymeta.Metadata(map[string]string{
		"fault_delay": "100ms", "fault_abort": "503", "fault_abort_percent": "0.0125",
		"/a:fault_delay_percent": "50", "/b:fault_abort_grpc": "14",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Fault{Delay: 100 * time.Millisecond, DelayShare: 1_000_000, Abort: 503, AbortShare: 125}); p.Fault != want {
		t.Errorf("service fault %+v, want %+v", p.Fault, want)
	}
	byPath := map[string]Fault{}
	for _, r := range routes {
		byPath[r.Path] = r.Fault
	}
	if want := (Fault{Delay: 100 * time.Millisecond, DelayShare: 500_000, Abort: 503, AbortShare: 125}); byPath["/a"] != want {
		t.Errorf("/a fault %+v, want %+v", byPath["/a"], want)
	}
	if p, _, err := PolicyFromMetadata(policymeta.Metadata(map[string]string{"fault_abort": "503", "fault_header": "x-chaos"})); err != nil || p.Fault.Header != "x-chaos" {
		t.Errorf("fault_header: %+v, %v", p.Fault, err)
	}
	if want := (Fault{Delay: 100 * time.Millisecond, DelayShare: 1_000_000, AbortGRPC: 14, AbortShare: 125}); byPath["/b"] != want {
		t.Errorf("/b fault %+v, want %+v (its gRPC abort in place of the service's HTTP one, the share kept)", byPath["/b"], want)
	}
	for _, tc := range []struct {
		md      map[string]string
		mention string
	}{
		{map[string]string{"fault_abort": "503", "fault_abort_grpc": "14"}, "both set an abort"},
		{map[string]string{"fault_delay_percent": "5"}, "fault_delay_percent needs policy_fault_delay"},
		{map[string]string{"fault_abort_percent": "5"}, "needs policy_fault_abort or policy_fault_abort_grpc"},
		{map[string]string{"fault_abort": "100"}, "from 200 to 599"},
		{map[string]string{"fault_abort_grpc": "0"}, "from 1 to 16"},
		{map[string]string{"fault_abort": "503", "fault_abort_percent": "101"}, "not a percentage from 0 to 100"},
		{map[string]string{"fault_abort": "503", "fault_abort_percent": "0.00001"}, "more than four decimals"},
		{map[string]string{"fault_delay": "0s"}, "outside 1ms–24h"},
		{map[string]string{"/x:fault_abort": "503", "/x:fault_abort_grpc": "2"}, "both set an abort"},
		{map[string]string{"/x:fault_delay_percent": "5"}, "policy for /x"},
		{map[string]string{"fault_header": "x-chaos"}, "fault_header needs a fault"},
		{map[string]string{"fault_abort": "503", "fault_header": "X-Chaos"}, "lower-case HTTP header name"},
		{map[string]string{"fault_abort": "503", "fault_header": "x-mesh-caller"}, "means something else to the mesh"},
	} {
		if _, _, err := PolicyFromMetadata(policymeta.Metadata(tc.md)); err == nil || !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("%v: %v, want an error mentioning %q", tc.md, err, tc.mention)
		}
	}
}

// TestMirrorPolicy: a mirror copies every call unless given a share; a
// path's mirror starts from the service's.
func TestMirrorPolicy(t *testing.T) {
	p, routes, err := PolicyFromMetadata(policymeta.Metadata(map[string]string{
		"mirror": "hello-shadow", "/a:mirror_percent": "12.5", "/b:mirror": "audit.ops",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Mirror{Service: "hello-shadow", Share: 1_000_000}); p.Mirror != want {
		t.Errorf("service mirror %+v, want %+v", p.Mirror, want)
	}
	byPath := map[string]Mirror{}
	for _, r := range routes {
		byPath[r.Path] = r.Mirror
	}
	if want := (Mirror{Service: "hello-shadow", Share: 125_000}); byPath["/a"] != want {
		t.Errorf("/a mirror %+v, want %+v", byPath["/a"], want)
	}
	if want := (Mirror{Service: "audit", Namespace: "ops", Share: 1_000_000}); byPath["/b"] != want {
		t.Errorf("/b mirror %+v, want %+v", byPath["/b"], want)
	}
	for _, tc := range []struct {
		md      map[string]string
		mention string
	}{
		{map[string]string{"mirror_percent": "5"}, "mirror_percent needs policy_mirror"},
		{map[string]string{"mirror": "Hello"}, `"Hello" is not a service (write name or name.namespace)`},
		{map[string]string{"mirror": "a.b.c"}, `"a.b.c" is not a service`},
		{map[string]string{"mirror": "a."}, `"a." is not a service`},
		{map[string]string{"mirror": "a", "mirror_percent": "x"}, "not a percentage"},
		{map[string]string{"/x:mirror_percent": "5"}, "policy for /x: policy key policy_mirror_percent needs policy_mirror"},
	} {
		if _, _, err := PolicyFromMetadata(policymeta.Metadata(tc.md)); err == nil || !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("%v: %v, want an error mentioning %q", tc.md, err, tc.mention)
		}
	}
}

// TestRetryOnPolicy: retry_on takes Envoy's and gRPC's conditions and
// HTTP statuses, without repeats; a path takes the service's unless it
// sets its own; routes carry the statuses as retriable_status_codes.
func TestRetryOnPolicy(t *testing.T) {
	p, routes, err := PolicyFromMetadata(policymeta.Metadata(map[string]string{
		"retry_on": "5xx, 429,429,resource-exhausted", "/a:retries": "1", "/b:retry_on": "unavailable",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if p.RetryOn != "5xx,429,resource-exhausted" {
		t.Errorf("retry_on = %q", p.RetryOn)
	}
	byPath := map[string]string{}
	for _, r := range routes {
		byPath[r.Path] = r.RetryOn
	}
	if byPath["/a"] != "5xx,429,resource-exhausted" || byPath["/b"] != "unavailable" {
		t.Errorf("paths' retry_on: %v", byPath)
	}
	for on, want := range map[string]string{
		"":                            "connect-failure,reset,retriable-status-codes,unavailable [503]",
		"5xx,429,resource-exhausted":  "5xx,retriable-status-codes,resource-exhausted [429]",
		"409,gateway-error,503":       "retriable-status-codes,gateway-error [409 503]",
		"cancelled,deadline-exceeded": "cancelled,deadline-exceeded []",
	} {
		conds, codes := retryOnOf(on)
		if got := fmt.Sprint(conds, " ", codes); got != want {
			t.Errorf("retryOnOf(%q) = %s, want %s", on, got, want)
		}
	}
	for v, mention := range map[string]string{
		"5xxx":  `"5xxx" is not a retry condition`,
		"200":   "status 200 is not an error status (400–599)",
		" , ":   "names no retry condition",
		"retry": "connect-failure, reset, 5xx",
	} {
		if _, _, err := PolicyFromMetadata(policymeta.Metadata(map[string]string{"retry_on": v})); err == nil || !strings.Contains(err.Error(), mention) {
			t.Errorf("retry_on=%q: %v, want an error mentioning %q", v, err, mention)
		}
	}
}

// TestCallerPolicies: allow_from and deny_from take services and whole
// namespaces, stored sorted without repeats; anything else is refused
// saying what to write.
func TestCallerPolicies(t *testing.T) {
	p, _, err := PolicyFromMetadata(policymeta.Metadata(map[string]string{"allow_from": "orders.shop, *.reports,orders.shop", "deny_from": "legacy.default"}))
	if err != nil {
		t.Fatal(err)
	}
	if p.AllowFrom != "*.reports,orders.shop" || p.DenyFrom != "legacy.default" {
		t.Errorf("allow_from %q, deny_from %q", p.AllowFrom, p.DenyFrom)
	}
	services, namespaces := Callers(p.AllowFrom)
	if fmt.Sprint(services, namespaces) != "[[shop orders]] [reports]" {
		t.Errorf("Callers(%q) = %v %v", p.AllowFrom, services, namespaces)
	}
	for v, mention := range map[string]string{
		"orders":        `caller "orders" names no namespace`,
		"Orders.shop":   "caller service",
		"orders.Shop":   "caller namespace",
		"*.*":           "caller namespace",
		" , ":           "names no caller",
		"orders.shop.x": "caller namespace",
	} {
		if _, _, err := PolicyFromMetadata(policymeta.Metadata(map[string]string{"allow_from": v})); err == nil || !strings.Contains(err.Error(), mention) {
			t.Errorf("allow_from=%q: %v, want an error mentioning %q", v, err, mention)
		}
	}
	// A path's allow_from admits, its deny_from refuses, on that path
	// alone; neither inherits the service's.
	p, routes, err := PolicyFromMetadata(policymeta.Metadata(map[string]string{"allow_from": "a.b", "/x:allow_from": "c.d", "/y:timeout": "1s"}))
	if err != nil || len(routes) != 2 || routes[0].AllowFrom != "c.d" || routes[1].AllowFrom != "" || p.AllowFrom != "a.b" {
		t.Errorf("a path's allow_from: %+v, %v", routes, err)
	}
	if _, routes, err := PolicyFromMetadata(policymeta.Metadata(map[string]string{"deny_from": "e.f", "/x:deny_from": "a.b"})); err != nil || len(routes) != 1 || routes[0].DenyFrom != "a.b" {
		t.Errorf("a path's deny_from: %+v, %v", routes, err)
	}
}

// TestScopesPolicy: scopes takes * alone or scopes as the auth service
// takes them, stored sorted without repeats; a path's list replaces the
// service's there, and a path without one keeps the service's.
func TestScopesPolicy(t *testing.T) {
	p, routes, err := PolicyFromMetadata(policymeta.Metadata(map[string]string{"scopes": "*", "/refund/*:scopes": "finance, ops:write,finance", "/x:timeout": "1s"}))
	if err != nil {
		t.Fatal(err)
	}
	if p.Scopes != "*" || len(routes) != 2 || routes[0].Path != "/x" || routes[0].Scopes != "*" || routes[1].Scopes != "finance,ops:write" {
		t.Errorf("scopes %q, routes %+v", p.Scopes, routes)
	}
	for v, mention := range map[string]string{
		"":                                  "names no scope",
		" , ":                               "names no scope",
		"a,*":                               "* stands alone",
		"a b":                               `scope "a b" is not`,
		"a/b":                               `scope "a/b" is not`,
		"a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q": "at most 16",
	} {
		if _, _, err := PolicyFromMetadata(policymeta.Metadata(map[string]string{"scopes": v})); err == nil || !strings.Contains(err.Error(), mention) {
			t.Errorf("scopes=%q: %v, want an error mentioning %q", v, err, mention)
		}
	}
}

// TestPolicyKeysAreDocumented: docs/policies.md has a row for every key,
// saying whether a path takes it, and no row for a key that is gone.
func TestPolicyKeysAreDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/policies.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{} // key → its "path" column
	for _, line := range strings.Split(string(doc), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		rows[strings.Trim(strings.TrimSpace(cells[1]), "`")] = strings.TrimSpace(cells[3])
	}
	path := map[string]bool{}
	for _, k := range PathPolicyKeys() {
		path[k] = true
	}
	for _, k := range PolicyKeys() {
		k = strings.TrimPrefix(k, policymeta.Prefix)
		col, ok := rows[k]
		switch {
		case !ok:
			t.Errorf("docs/policies.md has no row for %s", k)
		case (col == "yes") != path[k]:
			t.Errorf("docs/policies.md says a path takes %s: %q; PathPolicyKeys says %v", k, col, path[k])
		}
		delete(rows, k)
	}
	for k := range rows {
		t.Errorf("docs/policies.md has a row for %s, which is not a policy key", k)
	}
}
