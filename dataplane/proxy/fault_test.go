package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/micromesh/micromesh/dataplane/config"
)

// withFaults gives p's outbound listener the fault filter "fault" with
// listener settings lf, and its route the settings rf (none when nil).
func withFaults(t *testing.T, p *Proxy, lf, rf *config.Fault) {
	t.Helper()
	cfg := *p.Config()
	o := *cfg.Outbound
	o.Fault, o.FaultFilter, o.FaultFirst = lf, "fault", true
	cfg.Outbound = &o
	for _, rt := range cfg.Routes["outbound"].Routes() {
		rt.FaultFilter, rt.Fault = "", nil
		if rf != nil {
			rt.FaultFilter, rt.Fault = "fault", rf
		}
	}
	if err := p.Apply(&cfg); err != nil {
		t.Fatal(err)
	}
}

var always = config.Share{Numerator: 100, Denominator: 100}

// An abort answers the caller itself, as Envoy's fault filter does: the
// status and body it names (gRPC callers the mapped status, trailers
// only), the upstream untouched, never retried, counted.
func TestFaultAborts(t *testing.T) {
	var served atomic.Int32
	b := backend(t, &served, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "b") })
	p, reg := policyProxy(t, policy{retries: 3, retryOn: "5xx"}, b)
	withFaults(t, p, nil, &config.Fault{Abort: true, AbortShare: always, Status: 503, GRPCStatus: 14, Body: config.FaultAbortBody})

	w := call(p, http.MethodGet, "")
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "fault filter abort") {
		t.Errorf("aborted call: %d %q", w.Code, w.Body)
	}
	r := httptest.NewRequest(http.MethodPost, "http://b/pkg.S/M", strings.NewReader("x"))
	r.Header.Set("Content-Type", "application/grpc")
	gw := httptest.NewRecorder()
	p.Outbound().ServeHTTP(gw, r)
	if gw.Code != http.StatusOK || gw.Header().Get("Grpc-Status") != "14" || gw.Header().Get("Grpc-Message") != "fault filter abort" {
		t.Errorf("aborted gRPC call: %d, grpc-status %q, message %q", gw.Code, gw.Header().Get("Grpc-Status"), gw.Header().Get("Grpc-Message"))
	}
	if served.Load() != 0 {
		t.Errorf("the upstream served %d requests (an abort or its retries reached it)", served.Load())
	}
	if n := counterOf(t, reg, "micromesh_faults_injected_total"); n != 2 {
		t.Errorf("micromesh_faults_injected_total = %v, want 2", n)
	}
	// A route's settings without a fault replace the listener's: none.
	withFaults(t, p, &config.Fault{Abort: true, AbortShare: always, Status: 500}, &config.Fault{})
	if w := call(p, http.MethodGet, ""); w.Code != http.StatusOK {
		t.Errorf("a route whose own settings inject nothing: %d %q", w.Code, w.Body)
	}
	// No route settings: the listener's apply.
	withFaults(t, p, &config.Fault{Abort: true, AbortShare: always, Status: 500, Body: "listener"}, nil)
	if w := call(p, http.MethodGet, ""); w.Code != 500 || !strings.Contains(w.Body.String(), "listener") {
		t.Errorf("the listener's fault: %d %q", w.Code, w.Body)
	}
}

// A share aborts about that share of the calls, and the rest reach the
// upstream.
func TestFaultAbortsAShare(t *testing.T) {
	var served atomic.Int32
	b := backend(t, &served, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "b") })
	p, _ := policyProxy(t, policy{}, b)
	withFaults(t, p, nil, &config.Fault{Abort: true, AbortShare: config.Share{Numerator: 3, Denominator: 10}, Status: 503, Body: config.FaultAbortBody})
	const calls = 1000
	aborted := 0
	for range calls {
		if call(p, http.MethodGet, "").Code == http.StatusServiceUnavailable {
			aborted++
		}
	}
	// 300 expected, standard deviation 14.5: ±100 fails once in 10^11.
	if aborted < 200 || aborted > 400 || int(served.Load()) != calls-aborted {
		t.Errorf("%d of %d calls aborted at 30 %%, %d served", aborted, calls, served.Load())
	}
}

// A delay holds the request, then lets it through; it does not count
// against the route's timeout (the router's clock starts after it); a
// delay and an abort together delay, then abort; a caller that leaves
// during the delay ends it, and nothing reaches the upstream.
func TestFaultDelays(t *testing.T) {
	var served atomic.Int32
	b := backend(t, &served, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "b") })
	p, reg := policyProxy(t, policy{timeout: 100 * time.Millisecond}, b)
	const delay = 200 * time.Millisecond
	withFaults(t, p, nil, &config.Fault{Delay: delay, DelayShare: always})
	start := time.Now()
	w := call(p, http.MethodGet, "")
	if took := time.Since(start); w.Code != http.StatusOK || took < delay {
		t.Errorf("delayed call: %d %q after %v; want 200 after at least %v", w.Code, w.Body, took, delay)
	}

	withFaults(t, p, nil, &config.Fault{Delay: delay, DelayShare: always, Abort: true, AbortShare: always, Status: 504, Body: "late"})
	start = time.Now()
	if w := call(p, http.MethodGet, ""); w.Code != 504 || time.Since(start) < delay {
		t.Errorf("delayed, then aborted: %d after %v", w.Code, time.Since(start))
	}
	if n := counterOf(t, reg, "micromesh_faults_injected_total"); n != 3 {
		t.Errorf("micromesh_faults_injected_total = %v, want 3 (two delays, one abort)", n)
	}

	withFaults(t, p, nil, &config.Fault{Delay: time.Hour, DelayShare: always})
	before := served.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	r := httptest.NewRequest(http.MethodGet, "http://b/thing", nil).WithContext(ctx)
	done := make(chan struct{})
	go func() { p.Outbound().ServeHTTP(httptest.NewRecorder(), r); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a caller that left is still held by an hour's delay")
	}
	if served.Load() != before {
		t.Error("the request of a caller that left during the delay reached the upstream")
	}
	if p.faultsActive.Load() != 0 {
		t.Errorf("%d faults still counted active", p.faultsActive.Load())
	}
}

// max_active_faults: past that many requests in a fault, the next goes
// through untouched and is counted as an overflow; the upstream cluster
// and header conditions limit which requests a fault touches.
func TestFaultConditions(t *testing.T) {
	var served atomic.Int32
	b := backend(t, &served, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "b") })
	p, reg := policyProxy(t, policy{}, b)
	one := uint32(1)
	withFaults(t, p, nil, &config.Fault{Delay: time.Hour, DelayShare: always, MaxActive: &one})
	ctx, cancel := context.WithCancel(context.Background())
	held := make(chan struct{})
	go func() {
		defer close(held)
		r := httptest.NewRequest(http.MethodGet, "http://b/thing", nil).WithContext(ctx)
		p.Outbound().ServeHTTP(httptest.NewRecorder(), r)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for p.faultsActive.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	past, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	w := httptest.NewRecorder()
	p.Outbound().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "http://b/thing", nil).WithContext(past))
	if w.Code != http.StatusOK || w.Body.String() != "b" {
		t.Errorf("a call past max_active_faults: %d %q; want b's answer, untouched (not held)", w.Code, w.Body)
	}
	cancel()
	<-held
	if n := counterOf(t, reg, "micromesh_faults_overflow_total"); n != 1 {
		t.Errorf("micromesh_faults_overflow_total = %v, want 1", n)
	}

	abort := config.Fault{Abort: true, AbortShare: always, Status: 503, UpstreamCluster: "elsewhere"}
	withFaults(t, p, nil, &abort)
	if w := call(p, http.MethodGet, ""); w.Code != http.StatusOK {
		t.Errorf("a fault for another cluster touched the call: %d", w.Code)
	}
	abort.UpstreamCluster = "b"
	abort.Headers = []func(config.Request) bool{func(q config.Request) bool { _, ok := q.Header("x-chaos"); return ok }}
	withFaults(t, p, nil, &abort)
	if w := call(p, http.MethodGet, ""); w.Code != http.StatusOK {
		t.Errorf("a fault for requests with x-chaos touched one without: %d", w.Code)
	}
	r := httptest.NewRequest(http.MethodGet, "http://b/thing", nil)
	r.Header.Set("X-Chaos", "1")
	w = httptest.NewRecorder()
	p.Outbound().ServeHTTP(w, r)
	if w.Code != http.StatusServiceUnavailable {
		t.Errorf("a request with x-chaos to b: %d, want the fault's 503", w.Code)
	}
}
