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

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/micromesh/micromesh/dataplane/config"
	"github.com/micromesh/micromesh/dataplane/xdswire"
	"github.com/micromesh/micromesh/dataplane/xdswire/xdswiretest"
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
// from one bucket (one limit per instance), and so do their routes' own
// limits; a limit kept across updates keeps its bucket; new numbers get a
// new one; a route's limit replaces the listener's for its requests.
func TestBucketsPerLimit(t *testing.T) {
	limit := func(rps uint32) *config.RateLimit {
		return &config.RateLimit{Name: "inbound", MaxTokens: rps, TokensPerFill: rps, FillInterval: time.Second, Status: 429, Enforced: true}
	}
	table := func(rl *config.RateLimit) *config.RouteTable {
		rc := &route.RouteConfiguration{Name: "inbound", VirtualHosts: []*route.VirtualHost{{Name: "app", Domains: []string{"*"}, Routes: []*route.Route{
			{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/slow/"}}, Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "b"}}}},
			{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}}, Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "b"}}}},
		}}}}
		c, err := config.Compile(config.Resources{Routes: []*xdswire.RouteConfiguration{xdswiretest.Decode[*xdswire.RouteConfiguration](t, rc)}})
		if err != nil {
			t.Fatal(err)
		}
		tb := c.Routes["inbound"]
		slow, _ := tb.Lookup("x", "/slow/a")
		slow.RateLimitFilter, slow.RateLimit = "rl", rl
		return tb
	}
	cfg := &config.Config{
		Inbound:     &config.Inbound{Name: "inbound", RateLimit: limit(10), RateLimitFilter: "rl", Route: table(limit(1))},
		InboundQUIC: &config.Inbound{Name: "inbound-quic", RateLimit: limit(10), RateLimitFilter: "rl", Route: table(limit(1))},
	}
	first := keepLimits(nil, cfg)
	if first.listeners["inbound"] == nil || first.listeners["inbound"] != first.listeners["inbound-quic"] {
		t.Fatalf("the two inbound listeners' buckets: %p and %p, want one", first.listeners["inbound"], first.listeners["inbound-quic"])
	}
	slowTCP, _ := cfg.Inbound.Route.Lookup("x", "/slow/a")
	slowQUIC, _ := cfg.InboundQUIC.Route.Lookup("x", "/slow/a")
	rest, _ := cfg.Inbound.Route.Lookup("x", "/other")
	if b := first.bucketFor("rl", slowTCP, first.listeners["inbound"]); b == nil || b.cfg.MaxTokens != 1 || b != first.bucketFor("rl", slowQUIC, first.listeners["inbound-quic"]) {
		t.Errorf("/slow/ on both listeners: %+v, want the route's one bucket of 1", b)
	}
	if b := first.bucketFor("rl", rest, first.listeners["inbound"]); b != first.listeners["inbound"] {
		t.Error("a route without settings of its own does not draw from the listener's bucket")
	}
	if b := first.bucketFor("another", slowTCP, first.listeners["inbound"]); b != first.listeners["inbound"] {
		t.Error("settings for another filter than the listener's were applied")
	}
	if again := keepLimits(first, cfg); again.listeners["inbound"] != first.listeners["inbound"] || again.routes[slowTCP] != first.routes[slowTCP] {
		t.Error("an update keeping the limits made new buckets")
	}
	cfg.Inbound.RateLimit, cfg.InboundQUIC.RateLimit = limit(20), limit(20)
	if changed := keepLimits(first, cfg); changed.listeners["inbound"] == first.listeners["inbound"] || changed.listeners["inbound"].cfg.MaxTokens != 20 {
		t.Error("new numbers kept the old bucket")
	}
}
