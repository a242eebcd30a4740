// Package upstreams reads and writes the TCP services a proxy's app
// reaches through loopback ports of the proxy: "db=15432" or
// "db.shop=15432", comma-separated, as the sidecar's --upstream flags and
// the xDS node metadata key "upstreams" carry them.
package upstreams

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/micromesh/micromesh/identity"
)

// Upstream is one TCP service and the loopback port that reaches it.
type Upstream struct {
	Service   string
	Namespace string // "" for the proxy's own
	Port      uint16
}

func (u Upstream) String() string {
	name := u.Service
	if u.Namespace != "" {
		name += "." + u.Namespace
	}
	return name + "=" + strconv.Itoa(int(u.Port))
}

// ParseOne reads "SERVICE[.NAMESPACE]=PORT".
func ParseOne(s string) (Upstream, error) {
	name, port, ok := strings.Cut(strings.TrimSpace(s), "=")
	if !ok {
		return Upstream{}, fmt.Errorf("upstream %q: want SERVICE[.NAMESPACE]=PORT (the loopback port the app connects to)", s)
	}
	svc, ns, err := identity.SplitService(name)
	if err != nil {
		return Upstream{}, fmt.Errorf("upstream %q: %w", s, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return Upstream{}, fmt.Errorf("upstream %q: port %q is not a port number (1-65535)", s, port)
	}
	return Upstream{Service: svc, Namespace: ns, Port: uint16(p)}, nil
}

// Parse reads a comma-separated list ("" is none) and checks that no port
// and no service is named twice; the result is sorted by port.
func Parse(s string) ([]Upstream, error) {
	var out []Upstream
	for part := range strings.SplitSeq(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		u, err := ParseOne(part)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, Check(out)
}

// Check refuses a list that names a port or a service twice, and sorts
// it by port. ("db" and "db.NS" of the proxy's own namespace are one
// service: the control plane, which knows the namespace, refuses that.)
func Check(us []Upstream) error {
	slices.SortFunc(us, func(a, b Upstream) int { return int(a.Port) - int(b.Port) })
	for i := 1; i < len(us); i++ {
		if us[i].Port == us[i-1].Port {
			return fmt.Errorf("upstreams %s and %s: one port for two services", us[i-1], us[i])
		}
	}
	seen := map[string]Upstream{}
	for _, u := range us {
		key := u.Service + "." + u.Namespace
		if prev, ok := seen[key]; ok {
			return fmt.Errorf("upstreams %s and %s: one service at two ports", prev, u)
		}
		seen[key] = u
	}
	return nil
}

// Format writes us as Parse reads them.
func Format(us []Upstream) string {
	parts := make([]string, len(us))
	for i, u := range us {
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
