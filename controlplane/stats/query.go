package stats

import (
	"math"
	"sort"
	"strconv"
	"time"
)

// Traffic is what a set of requests came to over a window.
type Traffic struct {
	Requests, Failures uint64
	PerSecond          float64
	// Latency percentiles; zero when no durations were counted.
	P50, P95, P99 time.Duration

	hist *hist // the durations, merged
}

// SuccessRate is 1 − Failures ÷ Requests; 0 with no requests.
func (t *Traffic) SuccessRate() float64 {
	if t.Requests == 0 {
		return 0
	}
	return 1 - float64(t.Failures)/float64(t.Requests)
}

// ServiceStats are a service's inbound requests, from its own sidecars.
type ServiceStats struct {
	Service   string   // "name.namespace"
	Reporting []string // IDs of the instances that reported within the window, sorted
	Traffic
	// Methods are the same by gRPC method ("pkg.Service/Method"; "other"
	// past the sidecars' bound); requests of no gRPC method are in none.
	Methods map[string]*Traffic
	// Versions are the same by the version of the instances that counted
	// them; those of instances with no version are in none.
	Versions map[string]*Traffic
}

// EdgeStats are the calls from Source to Destination, from the callers'
// sidecars.
type EdgeStats struct {
	Source, Destination string
	Traffic
}

// Query adds up what every instance counted over window: per service its
// inbound requests, per caller and callee the outbound ones. Services
// come sorted by name, edges by caller then callee.
func (st *Store) Query(window time.Duration) ([]*ServiceStats, []*EdgeStats) {
	services := map[string]*ServiceStats{}
	edges := map[[2]string]*EdgeStats{}
	for _, d := range st.deltas(window) {
		svc := services[d.service]
		if svc == nil {
			svc = &ServiceStats{Service: d.service}
			services[d.service] = svc
		}
		svc.Reporting = append(svc.Reporting, d.instance)
		for k, v := range d.requests {
			var t *Traffic
			switch k.direction {
			case "inbound":
				t = &svc.Traffic
				if k.method != "" {
					svc.method(k.method).add(k, v, d.seconds)
				}
				if d.version != "" {
					svc.version(d.version).add(k, v, d.seconds)
				}
			case "outbound":
				t = &edge(edges, d.service, k.destination).Traffic
			default:
				continue
			}
			t.add(k, v, d.seconds)
		}
		for k, h := range d.durations {
			switch k.direction {
			case "inbound":
				svc.merge(h)
				if k.method != "" {
					svc.method(k.method).merge(h)
				}
				if d.version != "" {
					svc.version(d.version).merge(h)
				}
			case "outbound":
				edge(edges, d.service, k.destination).merge(h)
			}
		}
	}
	outS := make([]*ServiceStats, 0, len(services))
	for _, s := range services {
		s.percentiles()
		for _, m := range s.Methods {
			m.percentiles()
		}
		for _, v := range s.Versions {
			v.percentiles()
		}
		sort.Strings(s.Reporting)
		outS = append(outS, s)
	}
	sort.Slice(outS, func(i, j int) bool { return outS[i].Service < outS[j].Service })
	outE := make([]*EdgeStats, 0, len(edges))
	for _, e := range edges {
		e.percentiles()
		outE = append(outE, e)
	}
	sort.Slice(outE, func(i, j int) bool {
		if outE[i].Source != outE[j].Source {
			return outE[i].Source < outE[j].Source
		}
		return outE[i].Destination < outE[j].Destination
	})
	return outS, outE
}

// Destination adds up every caller's calls to dest (a cluster: a
// version of a split, "name.namespace|version") over window: how a
// canary is doing, as its callers saw it.
func (st *Store) Destination(window time.Duration, dest string) Traffic {
	return st.sum(window, func(_ *delta, direction, destination string) bool {
		return direction == "outbound" && destination == dest
	})
}

// Version adds up what the instances of service ("name.namespace") that
// reported version counted inbound over window: how a canary is doing as
// its own sidecars saw it — every caller's calls, those of Envoy sidecars
// and proxyless clients too, with the app's time; not the calls that
// never reached it.
func (st *Store) Version(window time.Duration, service, version string) Traffic {
	return st.sum(window, func(d *delta, direction, _ string) bool {
		return direction == "inbound" && d.service == service && d.version == version
	})
}

// sum adds up the series of every instance's delta over window that
// match.
func (st *Store) sum(window time.Duration, match func(d *delta, direction, destination string) bool) Traffic {
	var t Traffic
	for _, d := range st.deltas(window) {
		for k, v := range d.requests {
			if match(&d, k.direction, k.destination) {
				t.add(k, v, d.seconds)
			}
		}
		for k, h := range d.durations {
			if match(&d, k.direction, k.destination) {
				t.merge(h)
			}
		}
	}
	t.percentiles()
	return t
}

func (s *ServiceStats) method(name string) *Traffic { return entry(&s.Methods, name) }

func (s *ServiceStats) version(v string) *Traffic { return entry(&s.Versions, v) }

// entry is (*m)[k], made (and the map) on first use.
func entry(m *map[string]*Traffic, k string) *Traffic {
	t := (*m)[k]
	if t == nil {
		if *m == nil {
			*m = map[string]*Traffic{}
		}
		t = &Traffic{}
		(*m)[k] = t
	}
	return t
}

func edge(edges map[[2]string]*EdgeStats, source, dest string) *EdgeStats {
	e := edges[[2]string{source, dest}]
	if e == nil {
		e = &EdgeStats{Source: source, Destination: dest}
		edges[[2]string{source, dest}] = e
	}
	return e
}

// add counts v requests of series k, counted over seconds.
func (t *Traffic) add(k reqKey, v float64, seconds float64) {
	n := uint64(math.Round(v))
	t.Requests += n
	if failed(k) {
		t.Failures += n
	}
	t.PerSecond += v / seconds
}

// failed says whether a series counts failures (Failed).
func failed(k reqKey) bool { return Failed(k.code, k.grpc) }

// Failed says whether an answer — its HTTP code and gRPC status, as the
// sidecars label them ("" for none) — is a failure: HTTP 5xx, or a gRPC
// status that is the server's fault — the test tracing applies to a
// server's span (dataplane/proxy), so a NOT_FOUND or INVALID_ARGUMENT is
// the caller's mistake, not the service failing.
func Failed(code, grpc string) bool {
	if c, err := strconv.Atoi(code); err == nil && c >= 500 {
		return true
	}
	switch grpc {
	case "2", "4", "12", "13", "14", "15": // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS
		return true
	}
	return false
}

// merge adds h's counts (a histogram of another layout is left out).
func (t *Traffic) merge(h *hist) {
	if t.hist == nil {
		t.hist = &hist{bounds: h.bounds, counts: make([]uint64, len(h.counts))}
	}
	if len(h.counts) != len(t.hist.counts) {
		return
	}
	for i, c := range h.counts {
		t.hist.counts[i] += c
	}
	t.hist.count += h.count
	t.hist.sum += h.sum
}

func (t *Traffic) percentiles() {
	if t.hist == nil || t.hist.count == 0 {
		return
	}
	t.P50, t.P95, t.P99 = t.hist.quantile(.5), t.hist.quantile(.95), t.hist.quantile(.99)
}

// quantile is the q-quantile of h's observations, interpolated linearly
// within the bucket it falls in, as Prometheus's histogram_quantile does:
// from 0 in the first bucket, and the highest bound when it falls past
// every bound.
func (h *hist) quantile(q float64) time.Duration {
	rank := q * float64(h.count)
	var cum float64
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		if cum+float64(c) >= rank {
			if i >= len(h.bounds) {
				break
			}
			lower := 0.0
			if i > 0 {
				lower = h.bounds[i-1]
			}
			v := lower + (h.bounds[i]-lower)*(rank-cum)/float64(c)
			return time.Duration(v * float64(time.Second))
		}
		cum += float64(c)
	}
	if len(h.bounds) == 0 {
		return 0
	}
	return time.Duration(h.bounds[len(h.bounds)-1] * float64(time.Second))
}
