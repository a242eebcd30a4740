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

// keepBuckets gives each listener of cfg with a local rate limit its
// bucket. A limit kept as it was keeps its bucket: an update of anything
// else (endpoints change all the time) must not hand out a fresh burst.
// Listeners with the same limit (name and numbers) share one bucket: the
// control plane gives a built-in sidecar's two inbound listeners (QUIC and
// TLS) the service's one limit per instance. (Envoy keeps a bucket per
// filter instance; the control plane gives Envoy one inbound listener.)
func keepBuckets(prev map[string]*bucket, cfg *config.Config) map[string]*bucket {
	byLimit := map[config.RateLimit]*bucket{}
	for _, b := range prev {
		byLimit[b.cfg] = b
	}
	next := map[string]*bucket{}
	add := func(listener string, rl *config.RateLimit) {
		if rl == nil {
			return
		}
		b, ok := byLimit[*rl]
		if !ok {
			b = newBucket(rl)
			byLimit[*rl] = b
		}
		next[listener] = b
	}
	if cfg.Outbound != nil {
		add(cfg.Outbound.Name, cfg.Outbound.RateLimit)
	}
	for _, in := range []*config.Inbound{cfg.Inbound, cfg.InboundQUIC} {
		if in != nil {
			add(in.Name, in.RateLimit)
		}
	}
	return next
}

// rateLimited reports whether listener's bucket refused r, answering it
// then: with the bucket's status (429 by default), and for gRPC callers
// RESOURCE_EXHAUSTED when the filter asks for it (UNAVAILABLE otherwise,
// gRPC's reading of 429, which callers may retry). A limit not enforced
// only counts.
func (p *Proxy) rateLimited(st *state, listener string, w http.ResponseWriter, r *http.Request, dir direction, source, dest string, start time.Time) bool {
	b := st.buckets[listener]
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
