package proxy

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/micromesh/micromesh/dataplane/config"
)

// bucket is a listener's local rate limit: Envoy's token bucket (full at
// the start, topped up continuously at TokensPerFill per FillInterval, at
// most MaxTokens), kept as the generic cell rate algorithm keeps it — one
// atomic time, the instant the bucket would next be full — so taking a
// token is a compare-and-swap, no lock and no timer.
type bucket struct {
	cfg config.RateLimit
	// tat is the theoretical arrival time of the next request, in
	// nanoseconds on the proxy's monotonic clock: a request at now is
	// allowed while tat-now stays within burst.
	tat      atomic.Int64
	interval int64 // nanoseconds one token takes to come back
	burst    int64 // (MaxTokens-1) × interval
}

func newBucket(c *config.RateLimit) *bucket {
	interval := int64(c.FillInterval) / int64(c.TokensPerFill)
	return &bucket{cfg: *c, interval: max(interval, 1), burst: int64(c.MaxTokens-1) * max(interval, 1)}
}

// take reports whether a token was there at now (and takes it).
func (b *bucket) take(now int64) bool {
	for {
		tat := b.tat.Load()
		t := max(tat, now)
		if t-now > b.burst {
			return false
		}
		if b.tat.CompareAndSwap(tat, t+b.interval) {
			return true
		}
	}
}

// epoch starts the buckets' monotonic clock.
var epoch = time.Now()

func monotonic() int64 { return int64(time.Since(epoch)) }

// limits are a config's local rate limits, each with its bucket: the
// listeners' and the routes' own.
type limits struct {
	listeners map[string]*bucket
	routes    map[*config.Route]*bucket
}

// bucketKey names a limit across configs: the route it belongs to ("" for
// a listener's) and its numbers.
type bucketKey struct {
	route string
	limit config.RateLimit
}

// keepLimits gives each limit of cfg its bucket. A limit kept as it was
// keeps its bucket: an update of anything else (endpoints change all the
// time) must not hand out a fresh burst. Limits alike share one bucket —
// listeners with the same limit, and a route's limit in the same route of
// another listener: the control plane gives a built-in sidecar's two
// inbound listeners (QUIC and TLS) the same filter and routes, one limit
// per instance. (Envoy keeps a bucket per filter config; the control
// plane gives Envoy one inbound listener.)
func keepLimits(prev *limits, cfg *config.Config) *limits {
	byKey := map[bucketKey]*bucket{}
	if prev != nil {
		for _, b := range prev.listeners {
			byKey[bucketKey{limit: b.cfg}] = b
		}
		for r, b := range prev.routes {
			byKey[bucketKey{route: routeName(r), limit: b.cfg}] = b
		}
	}
	get := func(k bucketKey) *bucket {
		b, ok := byKey[k]
		if !ok {
			b = newBucket(&k.limit)
			byKey[k] = b
		}
		return b
	}
	next := &limits{listeners: map[string]*bucket{}, routes: map[*config.Route]*bucket{}}
	addRoutes := func(t *config.RouteTable) {
		if t == nil {
			return
		}
		for _, r := range t.Routes() {
			if r.RateLimit != nil {
				next.routes[r] = get(bucketKey{route: routeName(r), limit: *r.RateLimit})
			}
		}
	}
	if o := cfg.Outbound; o != nil {
		if o.RateLimit != nil {
			next.listeners[o.Name] = get(bucketKey{limit: *o.RateLimit})
		}
		addRoutes(cfg.Routes[o.Route])
	}
	for _, in := range []*config.Inbound{cfg.Inbound, cfg.InboundQUIC} {
		if in == nil {
			continue
		}
		if in.RateLimit != nil {
			next.listeners[in.Name] = get(bucketKey{limit: *in.RateLimit})
		}
		addRoutes(in.Route)
	}
	return next
}

// routeName names a route across configs: its virtual host and match.
func routeName(r *config.Route) string {
	m := r.Match
	return fmt.Sprintf("%s %s %v %v %v %v", r.VirtualHost, m.Path, m.Prefix, m.Segment, m.Fold, m.Regex != nil)
}

// bucketFor is the bucket a request on route through a listener with rate
// limit filter filter (and listener-level bucket lb) draws from: the
// route's own when it has settings for that filter, else the listener's.
func (l *limits) bucketFor(filter string, route *config.Route, lb *bucket) *bucket {
	if filter != "" && route != nil && route.RateLimitFilter == filter {
		return l.routes[route] // nil: the route is not limited
	}
	return lb
}

// rateLimited reports whether b refused r, answering it then: with the
// bucket's status (429 by default), and for gRPC callers
// RESOURCE_EXHAUSTED when the filter asks for it (UNAVAILABLE otherwise,
// gRPC's reading of 429, which callers may retry). A limit not enforced
// only counts.
func (p *Proxy) rateLimited(b *bucket, w http.ResponseWriter, r *http.Request, dir direction, source, dest string, start time.Time) bool {
	if b == nil || b.take(monotonic()) {
		return false
	}
	p.m.rateLimited.WithLabelValues(string(dir), boolLabel(b.cfg.Enforced)).Inc()
	if !b.cfg.Enforced {
		return false
	}
	grpcCode := 14 // UNAVAILABLE
	if b.cfg.ResourceExhausted {
		grpcCode = 8 // RESOURCE_EXHAUSTED
	}
	perSecond := float64(b.cfg.TokensPerFill) / b.cfg.FillInterval.Seconds()
	p.localReply(w, r, dir, source, dest, b.cfg.Status, grpcCode,
		fmt.Sprintf("micromesh: rate limited: %s takes %.4g requests/s on this instance (bursts of up to %d); retry later", p.self, perSecond, b.cfg.MaxTokens), start)
	return true
}

func boolLabel(b bool) string {
	if b {
		return "true"
	}
	return "false"
}
