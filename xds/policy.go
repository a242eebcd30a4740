package xds

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// PolicyKeyPrefix marks the registry metadata keys that set a service's
// traffic policy: "policy_timeout=2s", "policy_retries=3", … An instance
// registers them (a sidecar's --policy flag), the control plane reads them
// into the service's Policy, and every caller's proxy applies it.
const PolicyKeyPrefix = "policy_"

// policyKeys are the keys after the prefix, each with how it sets a
// Policy field from a value.
var policyKeys = map[string]func(p *Policy, v string) error{
	"timeout":              durationKey(func(p *Policy) *time.Duration { return &p.Timeout }, 0),
	"per_try_timeout":      durationKey(func(p *Policy) *time.Duration { return &p.PerTryTimeout }, 0),
	"retries":              countKey(func(p *Policy) *uint32 { return &p.Retries }, 0, 10),
	"max_connections":      countKey(func(p *Policy) *uint32 { return &p.MaxConnections }, 1, 1<<20),
	"max_pending_requests": countKey(func(p *Policy) *uint32 { return &p.MaxPendingRequests }, 1, 1<<20),
	"max_requests":         countKey(func(p *Policy) *uint32 { return &p.MaxRequests }, 1, 1<<20),
	"max_retries":          countKey(func(p *Policy) *uint32 { return &p.MaxRetries }, 1, 1<<20),
	"consecutive_5xx":      countKey(func(p *Policy) *uint32 { return &p.Consecutive5xx }, 1, 1000),
	"base_ejection_time":   durationKey(func(p *Policy) *time.Duration { return &p.BaseEjectionTime }, time.Millisecond),
	"max_ejection_percent": countKey(func(p *Policy) *uint32 { return &p.MaxEjectionPercent }, 0, 100),
	"lb": func(p *Policy, v string) error {
		if v != "round_robin" && v != "least_request" {
			return fmt.Errorf("%q is not round_robin or least_request", v)
		}
		p.LoadBalancer = v
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

// PolicyMetadata turns a policy as flags give it (keys without the
// prefix: "timeout" → "2s") into registry metadata; nil for none.
func PolicyMetadata(policy map[string]string) map[string]string {
	if len(policy) == 0 {
		return nil
	}
	md := make(map[string]string, len(policy))
	for k, v := range policy {
		md[PolicyKeyPrefix+k] = v
	}
	return md
}

// PolicyFlags is PolicyMetadata's inverse: the policy keys of md without
// their prefix ("policy_timeout" → "timeout"); nil for none.
func PolicyFlags(md map[string]string) map[string]string {
	var out map[string]string
	for k, v := range md {
		if name, ok := strings.CutPrefix(k, PolicyKeyPrefix); ok {
			if out == nil {
				out = map[string]string{}
			}
			out[name] = v
		}
	}
	return out
}

// HasPolicy reports whether metadata sets any policy key.
func HasPolicy(md map[string]string) bool {
	for k := range md {
		if strings.HasPrefix(k, PolicyKeyPrefix) {
			return true
		}
	}
	return false
}

// PolicyFromMetadata is DefaultPolicy with the policy keys of md applied.
// A key it does not know or a value out of range is an error naming the
// key, the value and what it takes.
func PolicyFromMetadata(md map[string]string) (Policy, error) {
	p := DefaultPolicy
	keys := make([]string, 0, len(md))
	for k := range md {
		if strings.HasPrefix(k, PolicyKeyPrefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys) // the first error is the same every time
	for _, k := range keys {
		set, ok := policyKeys[strings.TrimPrefix(k, PolicyKeyPrefix)]
		if !ok {
			return DefaultPolicy, fmt.Errorf("policy key %q is not one of %s", k, strings.Join(PolicyKeys(), ", "))
		}
		if err := set(&p, md[k]); err != nil {
			return DefaultPolicy, fmt.Errorf("policy key %s: %w", k, err)
		}
	}
	return p, nil
}

// PolicyKeys lists the policy keys, prefixed, sorted.
func PolicyKeys() []string {
	out := make([]string, 0, len(policyKeys))
	for k := range policyKeys {
		out = append(out, PolicyKeyPrefix+k)
	}
	sort.Strings(out)
	return out
}
