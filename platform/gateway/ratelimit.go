package gateway

import (
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	merrors "github.com/micromesh/micromesh/service/errors"
)

// Bounds of the per-client rate limit's table: past pruneAt clients it
// forgets those whose bucket is full again (the same as never seen); past
// maxClients after that — a flood of distinct addresses — it starts over,
// every client with a full bucket, rather than grow.
const (
	pruneAt    = 10_000
	maxClients = 100_000
)

// ValidateClientLimit checks a per-client rate limit: requests per second
// (0: none) and burst (0: the rate, rounded up).
func ValidateClientLimit(rate float64, burst int) error {
	switch {
	case math.IsNaN(rate) || rate < 0 || rate > 1_000_000:
		return fmt.Errorf("rate %v: requests per second per client, 0 (none) to 1000000", rate)
	case burst < 0 || burst > 1_000_000:
		return fmt.Errorf("burst %d: requests at once, 0 (the rate) to 1000000", burst)
	case burst > 0 && rate == 0:
		return fmt.Errorf("a burst of %d needs a rate", burst)
	}
	return nil
}

// clientLimit bounds each client's requests to the services: a token
// bucket per account (a request with a verified access token) or, without
// one, per client address — one abusive client does not starve the rest,
// whose calls all reach the services as gateway.micromesh. Kept as the
// generic cell rate algorithm keeps a bucket (sidecar's proxy.bucket): per
// client the instant its bucket would next be full.
type clientLimit struct {
	next     http.Handler
	interval int64 // nanoseconds a token takes to come back
	burst    int64 // (burst-1) × interval
	rate     float64
	burstN   int
	limited  prometheus.Counter
	log      *slog.Logger

	mu  sync.Mutex
	tat map[string]int64 // by client: nanoseconds since epoch
}

func newClientLimit(next http.Handler, rate float64, burst int, reg prometheus.Registerer, log *slog.Logger) *clientLimit {
	if burst == 0 {
		burst = int(math.Ceil(rate))
	}
	interval := max(int64(float64(time.Second)/rate), 1)
	l := &clientLimit{next: next, interval: interval, burst: int64(burst-1) * interval, rate: rate, burstN: burst, log: log, tat: map[string]int64{},
		limited: prometheus.NewCounter(prometheus.CounterOpts{Name: "micromesh_gateway_rate_limited_total", Help: "Requests the API gateway refused with 429: their client (account, or address without a token) was over --gateway-rate-limit"})}
	if reg != nil {
		reg.MustRegister(l.limited)
	}
	return l
}

func (l *clientLimit) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	client := "addr " + hostOf(r.RemoteAddr)
	if c := userOf(r.Context()); c != nil {
		client = "account " + c.Subject
	}
	if wait := l.take(client, time.Now().UnixNano()); wait > 0 {
		l.limited.Inc()
		w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(wait.Seconds())), 10))
		writeError(w, merrors.TooManyRequests("gateway", "rate limited: this gateway takes %.4g requests/s from each client (bursts of %d); %s is over it — retry after %v",
			l.rate, l.burstN, client, wait.Round(time.Millisecond)))
		return
	}
	l.next.ServeHTTP(w, r)
}

// take takes a token of client's bucket at now, or returns how long until
// there is one.
func (l *clientLimit) take(client string, now int64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	tat, ok := l.tat[client]
	if !ok && len(l.tat) >= pruneAt {
		l.prune(now)
	}
	t := max(tat, now)
	if t-now > l.burst {
		return time.Duration(t - now - l.burst)
	}
	l.tat[client] = t + l.interval
	return 0
}

// prune forgets the clients whose bucket is full again; under l.mu.
func (l *clientLimit) prune(now int64) {
	for c, tat := range l.tat {
		if tat <= now {
			delete(l.tat, c)
		}
	}
	if len(l.tat) >= maxClients {
		l.log.Warn("the per-client rate limit tracks too many clients; starting over (each client's bucket full again)", "clients", len(l.tat))
		clear(l.tat)
	}
}
