package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.step.sm/crypto/jose"

	"github.com/micromesh/micromesh/service/auth"
)

func TestClientLimitBuckets(t *testing.T) {
	l := newClientLimit(http.NotFoundHandler(), 2, 2, nil, slog.Default())
	now := time.Now().UnixNano()
	for i, want := range []time.Duration{0, 0, 500 * time.Millisecond} {
		if wait := l.take("a", now); wait != want {
			t.Errorf("take %d at once: wait %v, want %v", i+1, wait, want)
		}
	}
	if wait := l.take("b", now); wait != 0 {
		t.Errorf("another client waits %v: buckets are per client", wait)
	}
	if wait := l.take("a", now+int64(500*time.Millisecond)); wait != 0 {
		t.Errorf("a token back after 500 ms: wait %v", wait)
	}

	// Past pruneAt clients, those whose bucket is full again are forgotten.
	for i := range pruneAt {
		l.tat[fmt.Sprint("old", i)] = now - 1
	}
	l.take("new", now)
	if _, ok := l.tat["old0"]; ok || len(l.tat) > 4 {
		t.Errorf("after pruning, %d clients kept", len(l.tat))
	}
}

// The middleware: per account when the request carries a verified token,
// per address otherwise; a refusal is 429 with Retry-After and says why.
func TestClientLimitAnswers(t *testing.T) {
	reg := prometheus.NewRegistry()
	l := newClientLimit(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) }), 1, 1, reg, slog.Default())
	serve := func(addr string, account string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "/helloworld/call", nil)
		r.RemoteAddr = addr
		if account != "" {
			r = r.WithContext(context.WithValue(r.Context(), userKey{}, &auth.Claims{Claims: jose.Claims{Subject: account}}))
		}
		w := httptest.NewRecorder()
		l.ServeHTTP(w, r)
		return w
	}
	if w := serve("10.0.0.1:5000", ""); w.Code != 200 {
		t.Fatalf("first call: %d", w.Code)
	}
	w := serve("10.0.0.1:5001", "") // same address, another port
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" ||
		!strings.Contains(w.Body.String(), "this gateway takes 1 requests/s from each client (bursts of 1); addr 10.0.0.1 is over it") {
		t.Errorf("second call from the address: %d Retry-After %q %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if w := serve("10.0.0.2:5000", ""); w.Code != 200 {
		t.Errorf("another address: %d", w.Code)
	}
	// Accounts behind one address (a NAT, a proxy) each have their own.
	for _, who := range []string{"spiffe://micromesh.local/ns/default/user/alice", "spiffe://micromesh.local/ns/default/user/bob"} {
		if w := serve("10.0.0.1:5002", who); w.Code != 200 {
			t.Errorf("%s's first call from the limited address: %d", who, w.Code)
		}
	}
	if w := serve("10.0.0.1:5003", "spiffe://micromesh.local/ns/default/user/alice"); w.Code != http.StatusTooManyRequests || !strings.Contains(w.Body.String(), "account spiffe://micromesh.local/ns/default/user/alice is over it") {
		t.Errorf("alice's second call: %d %s", w.Code, w.Body)
	}
	mfs, _ := reg.Gather()
	if len(mfs) != 1 || mfs[0].GetName() != "micromesh_gateway_rate_limited_total" || mfs[0].GetMetric()[0].GetCounter().GetValue() != 2 {
		t.Errorf("metrics: %v", mfs)
	}
}

func TestValidateClientLimit(t *testing.T) {
	for _, tc := range []struct {
		rate  float64
		burst int
		want  string
	}{
		{0, 0, ""}, {10, 0, ""}, {0.5, 3, ""},
		{-1, 0, "0 (none) to 1000000"}, {2e6, 0, "0 (none) to 1000000"},
		{1, -1, "0 (the rate) to 1000000"}, {0, 5, "a burst of 5 needs a rate"},
	} {
		err := ValidateClientLimit(tc.rate, tc.burst)
		if (tc.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("rate %v burst %d: %v, want %q", tc.rate, tc.burst, err, tc.want)
		}
	}
}
