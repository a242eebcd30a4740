// Package policymeta writes a service's traffic policy as registry
// metadata and reads it back, in the form flags give it: "timeout" → "2s"
// for the whole service, "/pkg.Greeter/Slow:timeout" → "30s" for the
// requests of one path ("PATH*:KEY" for a path prefix). It is a leaf
// package so that the sidecar, which must not link the xds translation,
// registers exactly what the control plane reads (xds.PolicyFromMetadata
// checks and applies it).
//
// Service keys become policy_<key>. A path's keys become
// policy_route_<n> = "PATH:KEY=VALUE", numbered in the order of the flag
// keys: metadata keys in Consul take only letters, digits, '_' and '-'.
package policymeta

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Prefix marks the metadata keys of a traffic policy.
const Prefix = "policy_"

// RoutePrefix marks the keys of a path's policy.
const RoutePrefix = Prefix + "route_"

// Metadata turns a policy as flags give it into registry metadata; nil for
// none.
func Metadata(flags map[string]string) map[string]string {
	if len(flags) == 0 {
		return nil
	}
	md := make(map[string]string, len(flags))
	n := 0
	for _, k := range slices.Sorted(maps.Keys(flags)) {
		if strings.HasPrefix(k, "/") || strings.Contains(k, ":") {
			md[fmt.Sprintf("%s%d", RoutePrefix, n)] = k + "=" + flags[k]
			n++
			continue
		}
		md[Prefix+k] = flags[k]
	}
	return md
}

// Flags is Metadata's inverse: the policy keys of md as flags give them;
// nil for none. A route entry it cannot split is kept as it is under its
// metadata key, for xds.PolicyFromMetadata to refuse.
func Flags(md map[string]string) map[string]string {
	var out map[string]string
	for k, v := range md {
		name, ok := strings.CutPrefix(k, Prefix)
		if !ok {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		if strings.HasPrefix(k, RoutePrefix) {
			if key, value, ok := strings.Cut(v, "="); ok {
				out[key] = value
				continue
			}
		}
		out[name] = v
	}
	return out
}

// String writes a policy as flags give it, "key=value" sorted by key and
// separated by spaces.
func String(flags map[string]string) string {
	parts := make([]string, 0, len(flags))
	for _, k := range slices.Sorted(maps.Keys(flags)) {
		parts = append(parts, k+"="+flags[k])
	}
	return strings.Join(parts, " ")
}

// Has reports whether md sets any policy key.
func Has(md map[string]string) bool {
	for k := range md {
		if strings.HasPrefix(k, Prefix) {
			return true
		}
	}
	return false
}

// SplitRoute splits a route entry's key, "PATH:KEY", at the colon before
// the key (a path may hold colons; a key never does).
func SplitRoute(key string) (path, name string, ok bool) {
	i := strings.LastIndexByte(key, ':')
	if i < 0 {
		return "", "", false
	}
	return key[:i], key[i+1:], true
}
