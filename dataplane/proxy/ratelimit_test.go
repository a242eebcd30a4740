package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/dataplane/config"
)

// The bucket starts full, gives back a token every interval and never
// holds more than MaxTokens, as Envoy's (continuous refill).
func TestTokenBucketAsEnvoys(t *testing.T) {
	b := newBucket(&config.RateLimit{MaxTokens: 3, TokensPerFill: 2, FillInterval: 200 * time.Millisecond}) // a token per 100 ms
	ms := func(n int) int64 { return int64(time.Duration(n) * time.Millisecond) }
	steps := []struct {
		at   int64
		want bool
	}{
		{ms(1000), true}, {ms(1000), true}, {ms(1000), true}, {ms(1000), false}, // the burst, then empty
		{ms(1050), false}, {ms(1100), true}, {ms(1100), false}, // one token per 100 ms
		{ms(5000), true}, {ms(5000), true}, {ms(5000), true}, {ms(5000), false}, // idle: full again, not more
	}
	for i, s := range steps {
		if got := b.take(s.at); got != s.want {
			t.Fatalf("step %d at %v: took %v, want %v", i, time.Duration(s.at), got, s.want)
		}
	}
}

// An inbound listener's limit answers 429 (gRPC: RESOURCE_EXHAUSTED when
// asked) once the burst is spent, names the limit, counts it; a new
// config that keeps the limit keeps the empty bucket; a limit not
// enforced only counts.
func TestInboundRateLimit(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "app") }))
	t.Cleanup(app.Close)
	p, reg := inboundProxyWithMetrics(t, app)
	limit := func(rl *config.RateLimit) {
		cfg := *p.Config()
		in := *cfg.Inbound
		in.RateLimit = rl
		cfg.Inbound = &in
		if err := p.Apply(&cfg); err != nil {
			t.Fatal(err)
		}
	}
	send := func(grpc bool) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "http://b/pkg.S/M", nil)
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{certWith("caller", "spiffe://td/ns/default/svc/a")}}
		if grpc {
			r.Header.Set("Content-Type", "application/grpc")
		}
		w := httptest.NewRecorder()
		p.Inbound().ServeHTTP(w, r)
		return w
	}
	rl := &config.RateLimit{Name: "inbound", MaxTokens: 2, TokensPerFill: 1, FillInterval: time.Hour, Status: 429, Enforced: true, ResourceExhausted: true}
	limit(rl)
	for i := range 2 {
		if w := send(false); w.Code != http.StatusOK {
			t.Fatalf("request %d of the burst: %d %s", i, w.Code, w.Body)
		}
	}
	w := send(false)
	if w.Code != http.StatusTooManyRequests || !strings.Contains(w.Body.String(), "rate limited: a.default takes 0.0002778 requests/s on this instance (bursts of up to 2)") {
		t.Errorf("past the burst: %d %q", w.Code, w.Body)
	}
	if w := send(true); w.Header().Get("Grpc-Status") != "8" {
		t.Errorf("a gRPC caller past the burst: grpc-status %q, want 8 (RESOURCE_EXHAUSTED)", w.Header().Get("Grpc-Status"))
	}
	// Any other update (endpoints change all the time) keeps the bucket.
	limit(&config.RateLimit{Name: "inbound", MaxTokens: 2, TokensPerFill: 1, FillInterval: time.Hour, Status: 429, Enforced: true, ResourceExhausted: true})
	if w := send(false); w.Code != http.StatusTooManyRequests {
		t.Errorf("after a config update with the same limit: %d, want 429 (a fresh bucket would let it through)", w.Code)
	}
	if n := counterOf(t, reg, "micromesh_rate_limited_total"); n != 3 {
		t.Errorf("micromesh_rate_limited_total = %v, want 3", n)
	}
	// Not enforced: the request passes, the miss is counted.
	limit(&config.RateLimit{Name: "inbound", MaxTokens: 1, TokensPerFill: 1, FillInterval: time.Hour, Status: 429})
	send(false)
	if w := send(false); w.Code != http.StatusOK {
		t.Errorf("a limit not enforced refused: %d", w.Code)
	}
	if n := counterOf(t, reg, "micromesh_rate_limited_total"); n != 4 {
		t.Errorf("micromesh_rate_limited_total = %v, want 4", n)
	}
}

// A built-in sidecar's two inbound listeners with the service's limit draw
// from one bucket (one limit per instance); a limit kept across updates
// keeps its bucket; new numbers get a new one.
func TestBucketsPerLimit(t *testing.T) {
	limit := func(rps uint32) *config.RateLimit {
		return &config.RateLimit{Name: "inbound", MaxTokens: rps, TokensPerFill: rps, FillInterval: time.Second, Status: 429, Enforced: true}
	}
	cfg := &config.Config{Inbound: &config.Inbound{Name: "inbound", RateLimit: limit(10)}, InboundQUIC: &config.Inbound{Name: "inbound-quic", RateLimit: limit(10)}}
	first := keepBuckets(nil, cfg)
	if first["inbound"] == nil || first["inbound"] != first["inbound-quic"] {
		t.Fatalf("the two inbound listeners' buckets: %p and %p, want one", first["inbound"], first["inbound-quic"])
	}
	if again := keepBuckets(first, cfg); again["inbound"] != first["inbound"] {
		t.Error("an update keeping the limit made a new bucket")
	}
	cfg.Inbound.RateLimit, cfg.InboundQUIC.RateLimit = limit(20), limit(20)
	if changed := keepBuckets(first, cfg); changed["inbound"] == first["inbound"] || changed["inbound"].cfg.MaxTokens != 20 {
		t.Error("new numbers kept the old bucket")
	}
}
