package controlplane

import (
	"slices"
	"strings"
	"time"

	"github.com/micromesh/micromesh/xds"
)

// lingerFor is how long the cluster of a version a split stopped naming
// stays: a caller's route may still send to it until the route that stops
// doing so reaches it, and a caller that gets the cluster's removal first
// (xDS types arrive apart) would fail those requests — gRPC's proxyless
// clients do ("cluster has been removed"), Envoy answers 503. Make before
// break, across pushes.
const lingerFor = 30 * time.Second

// versionKey names one version of one service.
type versionKey struct{ ns, name, version string }

// lingering keeps, for lingerFor, the clusters of versions a service's
// split no longer names, as shares of 0 (a cluster, no route to it).
type lingering struct {
	named map[versionKey]bool      // what the last mesh's splits named
	until map[versionKey]time.Time // versions dropped, and when their clusters go
}

// apply adds to m the versions dropped less than lingerFor ago, and
// returns when the next of them is due to go (zero if none lingers).
func (l *lingering) apply(m *xds.Mesh, now time.Time) time.Time {
	named := map[versionKey]bool{}
	services := map[[2]string]*xds.Service{}
	for i := range m.Services {
		s := &m.Services[i]
		services[[2]string{s.Namespace, s.Name}] = s
		for _, v := range s.Split {
			named[versionKey{s.Namespace, s.Name, v.Version}] = true
		}
	}
	if l.until == nil {
		l.until = map[versionKey]time.Time{}
	}
	for k := range l.named {
		if !named[k] {
			if _, ok := l.until[k]; !ok {
				l.until[k] = now.Add(lingerFor)
			}
		}
	}
	l.named = named
	var next time.Time
	added := map[*xds.Service]bool{}
	for k, until := range l.until {
		s := services[[2]string{k.ns, k.name}]
		if named[k] || s == nil || !now.Before(until) {
			delete(l.until, k)
			continue
		}
		s.Split = append(s.Split, xds.VersionWeight{Version: k.version})
		added[s] = true
		if next.IsZero() || until.Before(next) {
			next = until
		}
	}
	for s := range added { // splits are sorted by version
		slices.SortFunc(s.Split, func(a, b xds.VersionWeight) int { return strings.Compare(a.Version, b.Version) })
	}
	return next
}
