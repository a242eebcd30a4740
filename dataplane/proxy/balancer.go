package proxy

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/micromesh/micromesh/dataplane/config"
)

// endpoint is one upstream address with its live state.
type endpoint struct {
	addr    string
	weight  uint32
	healthy bool // per EDS

	active atomic.Int64 // requests in flight

	mu           sync.Mutex
	failures     uint32    // consecutive
	localFails   uint32    // consecutive connect/reset failures
	ejections    uint32    // times ejected, for the backoff
	ejectedUntil time.Time // zero when not ejected
}

// balancer picks endpoints: round robin or least request (power of two
// choices), skipping unhealthy and ejected ones; outlier detection ejects
// an endpoint after consecutive failures, for base × 2^n, capped.
type balancer struct {
	eps          []*endpoint
	leastRequest bool
	// panicThreshold: below this percentage of available endpoints, pick
	// among all (config.Cluster.PanicThreshold).
	panicThreshold float64
	outlier        *config.Outlier
	next           atomic.Uint64
	now            func() time.Time
	onEject        func() // counts ejections (may be nil)
}

func newBalancer(c *config.Cluster, previous *balancer) *balancer {
	b := &balancer{leastRequest: c.LeastRequest, panicThreshold: c.PanicThreshold, outlier: c.Outlier, now: time.Now}
	old := map[string]*endpoint{}
	if previous != nil {
		for _, e := range previous.eps {
			old[e.addr] = e
		}
	}
	for _, ce := range c.Endpoints {
		e := old[ce.Address]
		if e == nil || e.weight != ce.Weight || e.healthy != ce.Healthy {
			e = carry(e, ce)
		}
		b.eps = append(b.eps, e)
	}
	return b
}

// carry returns a fresh endpoint for ce that keeps old's ejection state.
func carry(old *endpoint, ce config.Endpoint) *endpoint {
	e := &endpoint{addr: ce.Address, weight: ce.Weight, healthy: ce.Healthy}
	if old != nil {
		old.mu.Lock()
		e.failures, e.localFails, e.ejections, e.ejectedUntil = old.failures, old.localFails, old.ejections, old.ejectedUntil
		old.mu.Unlock()
	}
	return e
}

func (e *endpoint) available(now time.Time) bool {
	if !e.healthy {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ejectedUntil.IsZero() || now.After(e.ejectedUntil)
}

// pick returns an endpoint not in tried, or nil when there is none. As in
// Envoy, when fewer than the panic threshold's share of the endpoints are
// available (healthy per EDS and not ejected) the balancer panics: it
// picks among all of them, unhealthy and ejected too — better spread over
// all than pile onto the few, or refuse everything, when health is this
// bad (it usually says more about the checks than about the endpoints).
func (b *balancer) pick(tried []*endpoint) *endpoint {
	now := b.now()
	var candidates []*endpoint
	available := 0
	for _, e := range b.eps {
		if !e.available(now) {
			continue
		}
		available++
		if !contains(tried, e) {
			candidates = append(candidates, e)
		}
	}
	switch {
	case float64(available)*100 < b.panicThreshold*float64(len(b.eps)):
		candidates = b.untried(tried, false)
	case len(candidates) == 0:
		// A retry when the available endpoints were all tried: rather an
		// ejected one not tried yet than none.
		candidates = b.untried(tried, true)
	}
	switch n := len(candidates); {
	case n == 0:
		return nil
	case n == 1:
		return candidates[0]
	case b.leastRequest:
		a, c := candidates[rand.IntN(n)], candidates[rand.IntN(n)]
		if c.active.Load()*int64(a.weight) < a.active.Load()*int64(c.weight) {
			return c
		}
		return a
	default:
		return weightedRoundRobin(candidates, b.next.Add(1))
	}
}

// untried lists the endpoints not in tried (only the healthy ones per EDS
// if healthyOnly), ejected or not: the uncommon cases of pick.
func (b *balancer) untried(tried []*endpoint, healthyOnly bool) []*endpoint {
	var out []*endpoint
	for _, e := range b.eps {
		if !contains(tried, e) && (e.healthy || !healthyOnly) {
			out = append(out, e)
		}
	}
	return out
}

// weightedRoundRobin spreads picks over candidates in proportion to their weights.
func weightedRoundRobin(candidates []*endpoint, tick uint64) *endpoint {
	var total uint64
	for _, e := range candidates {
		total += uint64(max(e.weight, 1))
	}
	slot := tick % total
	for _, e := range candidates {
		w := uint64(max(e.weight, 1))
		if slot < w {
			return e
		}
		slot -= w
	}
	return candidates[len(candidates)-1]
}

func contains(es []*endpoint, e *endpoint) bool {
	for _, x := range es {
		if x == e {
			return true
		}
	}
	return false
}

// outcome of one attempt, for outlier detection.
type outcome int

const (
	success      outcome = iota
	serverError          // 5xx from the upstream
	localFailure         // connect failure, reset, timeout
)

// report records an attempt's outcome and ejects the endpoint when it has
// failed often enough in a row.
func (b *balancer) report(e *endpoint, o outcome) {
	od := b.outlier
	if od == nil {
		return
	}
	e.mu.Lock()
	switch o {
	case success:
		e.failures, e.localFails = 0, 0
		e.mu.Unlock()
		return
	case serverError:
		e.failures++
	case localFailure:
		// As Envoy: counted apart when split, else as a 5xx.
		if od.Split {
			e.localFails++
		} else {
			e.failures++
		}
	}
	trip := (od.Consecutive5xx > 0 && e.failures >= od.Consecutive5xx) ||
		(od.ConsecutiveLocalFailure > 0 && e.localFails >= od.ConsecutiveLocalFailure)
	now := b.now()
	if !trip || (!e.ejectedUntil.IsZero() && now.Before(e.ejectedUntil)) {
		e.mu.Unlock()
		return
	}
	e.mu.Unlock()
	if !b.mayEject(now) {
		return
	}
	e.mu.Lock()
	d := od.BaseEjectionTime << min(e.ejections, 16)
	if od.MaxEjectionTime > 0 && d > od.MaxEjectionTime {
		d = od.MaxEjectionTime
	}
	e.ejections++
	e.ejectedUntil = now.Add(d)
	e.failures, e.localFails = 0, 0
	e.mu.Unlock()
	if b.onEject != nil {
		b.onEject()
	}
}

// mayEject enforces max_ejection_percent (at least one ejection is allowed).
func (b *balancer) mayEject(now time.Time) bool {
	ejected := 0
	for _, e := range b.eps {
		e.mu.Lock()
		if !e.ejectedUntil.IsZero() && now.Before(e.ejectedUntil) {
			ejected++
		}
		e.mu.Unlock()
	}
	limit := max(len(b.eps)*int(b.outlier.MaxEjectionPercent)/100, 1)
	return ejected < limit
}
