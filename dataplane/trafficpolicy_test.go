package dataplane_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/dataplane"
	"github.com/micromesh/micromesh/internal/meshtest"
)

// A service sets the traffic policy its callers apply by registering it
// with its instances (--policy on the sidecar): here each try gets 100 ms,
// one retry, against an app that takes 5 s — the default policy (5 s per
// try, two retries, 15 s) would wait for the app's answer.
func TestCallersApplyTheServicesPolicy(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hits := make(chan struct{}, 64)
	slow := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits <- struct{}{}
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})}
	go func() { _ = slow.Serve(ln) }()
	t.Cleanup(func() { _ = slow.Close() })

	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
	cp.StartSidecar("default", "b", meshtest.WithApp(ln.Addr().String(), "http"),
		meshtest.WithOptions(func(o *dataplane.Options) {
			// consecutive_5xx: no ejection of the only endpoint mid-test.
			o.Policy = map[string]string{"timeout": "3s", "per_try_timeout": "100ms", "retries": "1", "consecutive_5xx": "1000",
				// A path of its own: one try, 1 s in all.
				"/patient/*:timeout": "1s", "/patient/*:retries": "0"}
		}))

	waitFor(t, "a's calls to b time out per b's policy", func() bool {
		resp, _ := call(t, a.Info.Outbound, "b", "/", nil)
		return resp.StatusCode == http.StatusGatewayTimeout
	})
	for len(hits) > 0 {
		<-hits
	}
	start := time.Now()
	resp, e := call(t, a.Info.Outbound, "b", "/", nil)
	took := time.Since(start)
	// Both tries reached the app before the answer: no wait needed.
	if resp.StatusCode != http.StatusGatewayTimeout || len(hits) != 2 || took > 2*time.Second {
		t.Errorf("answer %d %q after %v and %d tries of the app; want 504 after 2 tries of 100 ms", resp.StatusCode, e.Body, took, len(hits))
	}

	// The path's policy: its own timeout and retries, not the service's
	// 3 s and one retry.
	for len(hits) > 0 {
		<-hits
	}
	start = time.Now()
	resp, e = call(t, a.Info.Outbound, "b", "/patient/report", nil)
	took = time.Since(start)
	if resp.StatusCode != http.StatusGatewayTimeout || len(hits) != 1 || took < 900*time.Millisecond || took > 2500*time.Millisecond {
		t.Errorf("/patient/report: answer %d %q after %v and %d tries of the app; want 504 after one try of 1 s", resp.StatusCode, e.Body, took, len(hits))
	}
}

// retry_on chooses what callers retry: here 429 (which the default does
// not retry) — a busy b turns every other request away and a's calls all
// succeed, each turned-away one on its retry; a path that keeps the
// default passes the 429 on.
func TestCallersRetryWhatTheServiceSays(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	var n atomic.Int32
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%2 == 1 {
			http.Error(w, "busy", http.StatusTooManyRequests)
			return
		}
		_, _ = w.Write([]byte("{}"))
	}))
	t.Cleanup(busy.Close)
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
	cp.StartSidecar("default", "b", meshtest.WithApp(busy.Listener.Addr().String(), "http"),
		meshtest.WithOptions(func(o *dataplane.Options) {
			o.Policy = map[string]string{"retries": "1", "retry_on": "429,reset", "/strict/*:retry_on": "503"}
		}))
	waitReachable(t, a, "b")
	for i := range 6 {
		if resp, e := call(t, a.Info.Outbound, "b", "/", nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("call %d: %d %q, want 200 (a 429 retried)", i, resp.StatusCode, e.Body)
		}
	}
	codes := map[int]int{}
	for range 6 {
		resp, _ := call(t, a.Info.Outbound, "b", "/strict/x", nil)
		codes[resp.StatusCode]++
	}
	if codes[http.StatusTooManyRequests] != 3 || codes[http.StatusOK] != 3 {
		t.Errorf("/strict/x (retry_on 503): answers %v, want three 429s passed on and three 200s", codes)
	}
}

// A service's rate limit (--policy rate_limit=N) is enforced by its own
// sidecar, per instance: past the burst, callers get 429 naming the limit,
// the app never sees those requests, and the bucket refills with time.
func TestAServicesRateLimit(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	var served atomic.Int32
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served.Add(1); _, _ = w.Write([]byte("{}")) }))
	t.Cleanup(app.Close)
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
	b := cp.StartSidecar("default", "b", meshtest.WithApp(app.Listener.Addr().String(), "http"),
		meshtest.WithOptions(func(o *dataplane.Options) { o.Policy = map[string]string{"rate_limit": "2"} }))

	waitFor(t, "b's sidecar to enforce its rate limit", func() bool {
		resp, _ := call(t, a.Info.Outbound, "b", "/", nil)
		return resp.StatusCode == http.StatusTooManyRequests
	})
	served.Store(0)
	ok, limited := 0, 0
	start := time.Now()
	for range 10 {
		resp, e := call(t, a.Info.Outbound, "b", "/", nil)
		switch resp.StatusCode {
		case http.StatusOK:
			ok++
		case http.StatusTooManyRequests:
			limited++
			if !strings.Contains(e.Body, "rate limited: b.default takes 2 requests/s on this instance (bursts of up to 2)") {
				t.Errorf("429 body %q does not name the limit", e.Body)
			}
		default:
			t.Fatalf("answer %d %q", resp.StatusCode, e.Body)
		}
	}
	// The bucket was empty when they began: only the tokens that came
	// back meanwhile (one per 500 ms) let calls through.
	most := 1 + int(time.Since(start)/(500*time.Millisecond))
	if ok > most || ok+limited != 10 || int(served.Load()) != ok {
		t.Errorf("10 calls in %v: %d served (the app saw %d), %d limited; want at most %d through, the rest 429 and never at the app",
			time.Since(start), ok, served.Load(), limited, most)
	}
	waitFor(t, "the bucket to refill", func() bool {
		resp, _ := call(t, a.Info.Outbound, "b", "/", nil)
		return resp.StatusCode == http.StatusOK
	})
	if m := metrics(t, b.Info.Admin); !strings.Contains(m, `micromesh_rate_limited_total{direction="inbound",enforced="true"}`) {
		t.Errorf("b's metrics lack the rate-limited count:\n%s", grep(m, "rate_limited"))
	}
}

// A service-wide rate limit (rate_limit_scope=service): its two instances
// share it — each takes half of the rate and of the burst, so a quick run
// of calls gets the service's burst through, not twice it — and when one
// instance goes, the other takes the whole limit.
func TestAServiceWideRateLimit(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	var served [2]atomic.Int32
	policy := meshtest.WithOptions(func(o *dataplane.Options) {
		o.Policy = map[string]string{"rate_limit": "4", "rate_limit_scope": "service"}
	})
	var b [2]*meshtest.Sidecar
	for i := range b {
		app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served[i].Add(1); _, _ = w.Write([]byte("{}")) }))
		t.Cleanup(app.Close)
		b[i] = cp.StartSidecar("default", "b", meshtest.WithApp(app.Listener.Addr().String(), "http"), meshtest.WithInstance(fmt.Sprintf("b-%d", i)), policy)
	}
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))

	limitSays := func(want string) func() bool {
		return func() bool {
			resp, e := call(t, a.Info.Outbound, "b", "/", nil)
			return resp.StatusCode == http.StatusTooManyRequests && strings.Contains(e.Body, want)
		}
	}
	half := "takes 2 requests/s on this instance (bursts of up to 2)"
	waitFor(t, "both instances to take half of the limit", limitSays(half))
	waitFor(t, "both instances to take half of the limit", limitSays(half)) // the other one, round robin
	time.Sleep(1100 * time.Millisecond)                                     // both buckets full again: 2 + 2

	served[0].Store(0)
	served[1].Store(0)
	ok := 0
	start := time.Now()
	for range 20 {
		if resp, _ := call(t, a.Info.Outbound, "b", "/", nil); resp.StatusCode == http.StatusOK {
			ok++
		}
	}
	// The service's burst of 4, and what came back meanwhile: one token
	// per 500 ms at each instance.
	most := 4 + 2*int(time.Since(start)/(500*time.Millisecond))
	if ok < 4 || ok > most {
		t.Errorf("20 quick calls in %v: %d through, want 4 to %d (each instance alone would let 4 through)", time.Since(start), ok, most)
	}
	if served[0].Load() == 0 || served[1].Load() == 0 {
		t.Errorf("served %d and %d: both instances take calls", served[0].Load(), served[1].Load())
	}

	b[1].Stop()
	waitFor(t, "the instance left to take the whole limit", limitSays("takes 4 requests/s on this instance (bursts of up to 4)"))
}

// A path's own rate limit ('/export/*:rate_limit=1'): its requests draw
// from its bucket alone; the rest of the service is not limited.
func TestAPathsRateLimit(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("{}")) }))
	t.Cleanup(app.Close)
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
	cp.StartSidecar("default", "b", meshtest.WithApp(app.Listener.Addr().String(), "http"),
		meshtest.WithOptions(func(o *dataplane.Options) { o.Policy = map[string]string{"/export/*:rate_limit": "1"} }))

	waitFor(t, "b's sidecar to limit /export/", func() bool {
		resp, _ := call(t, a.Info.Outbound, "b", "/export/all", nil)
		return resp.StatusCode == http.StatusTooManyRequests
	})
	for i := range 20 {
		if resp, e := call(t, a.Info.Outbound, "b", "/report", nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("call %d to /report, a path without a limit: %d %q", i, resp.StatusCode, e.Body)
		}
	}
	// Quick calls past the bucket of 1: refused, naming the path's limit.
	call(t, a.Info.Outbound, "b", "/export/all", nil)
	if resp, e := call(t, a.Info.Outbound, "b", "/export/all", nil); resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(e.Body, "takes 1 requests/s on this instance (bursts of up to 1)") {
		t.Errorf("/export/all right after another: %d %q, want 429 naming the path's limit", resp.StatusCode, e.Body)
	}
}

// A service's fault policy ('/broken/*:fault_abort=503', a delay on
// another path) is injected by its callers' sidecars, before the request
// leaves: the aborted calls get the fault's 503 and never reach the
// service; the delayed ones arrive late but whole; other paths are
// untouched; the caller's metrics count both.
func TestAServicesFaultsReachItsCallers(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	var broken, slow, other atomic.Int32
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/broken/"):
			broken.Add(1)
		case strings.HasPrefix(r.URL.Path, "/slow/"):
			slow.Add(1)
		default:
			other.Add(1)
		}
		_, _ = w.Write([]byte("{}"))
	}))
	t.Cleanup(app.Close)
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
	cp.StartSidecar("default", "b", meshtest.WithApp(app.Listener.Addr().String(), "http"),
		meshtest.WithOptions(func(o *dataplane.Options) {
			o.Policy = map[string]string{"/broken/*:fault_abort": "503", "/slow/*:fault_delay": "300ms",
				// Only the testers' requests, which carry x-chaos.
				"/optin/*:fault_abort": "503", "/optin/*:fault_header": "x-chaos"}
		}))

	waitFor(t, "a's sidecar to abort b's /broken/ calls", func() bool {
		resp, e := call(t, a.Info.Outbound, "b", "/broken/x", nil)
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(e.Body, "fault filter abort")
	})
	for i := range 10 {
		if resp, e := call(t, a.Info.Outbound, "b", "/broken/x", nil); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(e.Body, "fault filter abort") {
			t.Fatalf("call %d to /broken/x: %d %q, want the fault's 503", i, resp.StatusCode, e.Body)
		}
	}
	if broken.Load() != 0 {
		t.Errorf("b's app saw %d aborted calls", broken.Load())
	}
	start := time.Now()
	if resp, e := call(t, a.Info.Outbound, "b", "/slow/x", nil); resp.StatusCode != http.StatusOK || time.Since(start) < 300*time.Millisecond || slow.Load() != 1 {
		t.Errorf("/slow/x: %d %q after %v, app saw it %d times; want 200 after at least 300ms", resp.StatusCode, e.Body, time.Since(start), slow.Load())
	}
	if resp, e := call(t, a.Info.Outbound, "b", "/other", nil); resp.StatusCode != http.StatusOK || other.Load() != 1 {
		t.Errorf("/other: %d %q, app saw it %d times", resp.StatusCode, e.Body, other.Load())
	}
	// An opt-in fault: the requests with its header fail, the others not.
	if resp, e := call(t, a.Info.Outbound, "b", "/optin/x", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("/optin/x without x-chaos: %d %q; want it untouched", resp.StatusCode, e.Body)
	}
	if resp, e := call(t, a.Info.Outbound, "b", "/optin/x", http.Header{"X-Chaos": {"1"}}); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(e.Body, "fault filter abort") {
		t.Errorf("/optin/x with x-chaos: %d %q; want the fault's 503", resp.StatusCode, e.Body)
	}
	m := metrics(t, a.Info.Admin)
	for _, want := range []string{`micromesh_faults_injected_total{fault="abort"}`, `micromesh_faults_injected_total{fault="delay"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("a's metrics lack %s:\n%s", want, grep(m, "faults"))
		}
	}
}

// A service's mirror reaches its callers: a's sidecar sends b's answer
// to a and a copy of each call to b-shadow (over QUIC, mTLS, as a itself:
// b-shadow's app sees a as the caller, the authority b-shadow with the
// body), whose answers a never sees; a path with a 0 % mirror is not
// copied.
func TestAServicesMirrorGetsCopies(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	type seen struct{ host, caller, path, body string }
	copies := make(chan seen, 64)
	shadow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		copies <- seen{r.Host, r.Header.Get("X-Mesh-Caller"), r.URL.Path, string(body)}
		http.Error(w, "the shadow's answer", http.StatusInternalServerError)
	}))
	t.Cleanup(shadow.Close)
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
	cp.StartSidecar("default", "b-shadow", meshtest.WithApp(shadow.Listener.Addr().String(), "http"))
	cp.StartSidecar("default", "b", meshtest.WithApp(startEcho(t, "b"), "http"),
		meshtest.WithOptions(func(o *dataplane.Options) {
			o.Policy = map[string]string{"mirror": "b-shadow", "/quiet/*:mirror_percent": "0"}
		}))

	waitFor(t, "a's sidecar to mirror b's calls to b-shadow", func() bool {
		resp, e := call(t, a.Info.Outbound, "b", "/warm", nil)
		if resp.StatusCode != http.StatusOK || e.App != "b" {
			return false // b's route not there yet
		}
		select {
		case <-copies:
			return true
		case <-time.After(100 * time.Millisecond):
			return false
		}
	})
	for len(copies) > 0 {
		<-copies
	}
	for i := range 5 {
		if resp, e := call(t, a.Info.Outbound, "b", fmt.Sprintf("/x/%d", i), nil); resp.StatusCode != http.StatusOK || e.App != "b" || e.Body != "ping" {
			t.Fatalf("call %d: %d %+v, want b's answer (the shadow's 500 dropped)", i, resp.StatusCode, e)
		}
		select {
		case c := <-copies:
			want := seen{"b-shadow", "spiffe://micromesh.local/ns/default/svc/a", fmt.Sprintf("/x/%d", i), "ping"}
			if c != want {
				t.Errorf("copy %d: %+v, want %+v", i, c, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("call %d: no copy reached b-shadow", i)
		}
	}
	if resp, _ := call(t, a.Info.Outbound, "b", "/quiet/x", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("/quiet/x: %d", resp.StatusCode)
	}
	select {
	case c := <-copies:
		t.Errorf("a 0 %% mirror copied %+v", c)
	case <-time.After(300 * time.Millisecond):
	}
	if m := metrics(t, a.Info.Admin); !strings.Contains(m, `micromesh_mirrored_requests_total{cluster="b-shadow.default",outcome="500"}`) {
		t.Errorf("a's metrics lack the copies:\n%s", grep(m, "mirror"))
	}
}

// Across namespaces only a rule allows: orders (namespace shop) cannot
// even route to billing until billing's allow_from names it; then orders'
// calls arrive as orders.shop while cart, of the same namespace, is refused
// by billing's sidecar (403). deny_from refuses a caller of billing's own
// namespace. Each rule set on the running service, no restart.
func TestAllowFromAndDenyFrom(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	orders := cp.StartSidecar("shop", "orders", meshtest.WithApp(startEcho(t, "orders"), "http"))
	cart := cp.StartSidecar("shop", "cart", meshtest.WithApp(startEcho(t, "cart"), "http"))
	web := cp.StartSidecar("default", "web", meshtest.WithApp(startEcho(t, "web"), "http"))
	cp.StartSidecar("default", "billing", meshtest.WithApp(startEcho(t, "billing"), "http"))
	waitFor(t, "web to reach billing", func() bool {
		resp, _ := call(t, web.Info.Outbound, "billing", "/", nil)
		return resp.StatusCode == http.StatusOK
	})
	if resp, e := call(t, orders.Info.Outbound, "billing.default", "/", nil); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(e.Body, "is not a service in the mesh this workload can call") {
		t.Fatalf("orders.shop → billing.default with no rule: %d %q; want 503, not in its mesh", resp.StatusCode, e.Body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	setPolicy := func(keys map[string]string) {
		if err := cp.Registry().SetPolicy(ctx, registry.Policy{Service: "billing", Keys: keys}); err != nil {
			t.Fatal(err)
		}
	}
	setPolicy(map[string]string{"allow_from": "orders.shop"})
	waitFor(t, "orders.shop to reach billing.default", func() bool {
		resp, _ := call(t, orders.Info.Outbound, "billing.default", "/", nil)
		return resp.StatusCode == http.StatusOK
	})
	if resp, e := call(t, orders.Info.Outbound, "billing.default", "/", nil); resp.StatusCode != http.StatusOK || e.App != "billing" || e.Caller != "spiffe://micromesh.local/ns/shop/svc/orders" {
		t.Errorf("orders → billing: %d %+v", resp.StatusCode, e)
	}
	waitFor(t, "cart.shop to route to billing.default", func() bool {
		resp, _ := call(t, cart.Info.Outbound, "billing.default", "/", nil)
		return resp.StatusCode != http.StatusServiceUnavailable
	})
	if resp, e := call(t, cart.Info.Outbound, "billing.default", "/", nil); resp.StatusCode != http.StatusForbidden || !strings.Contains(e.Body, "RBAC") {
		t.Errorf("cart.shop → billing: %d %q; want 403 from billing's sidecar (allow_from names orders alone)", resp.StatusCode, e.Body)
	}

	// Each rule set on billing, then the call that shows it took, then one
	// it must leave alone.
	type probe struct {
		from       *meshtest.Sidecar
		host, path string
		code       int
	}
	for _, step := range []struct {
		what        string
		keys        map[string]string
		shows, left probe
	}{
		{"a path's allow_from: cart may call /reports/… and nothing else",
			map[string]string{"allow_from": "orders.shop", "/reports/*:allow_from": "cart.shop"},
			probe{cart, "billing.default", "/reports/daily", http.StatusOK}, probe{cart, "billing.default", "/charge", http.StatusForbidden}},
		{"a path's deny_from: web, of billing's namespace, is refused on /admin/… and nowhere else",
			map[string]string{"allow_from": "orders.shop", "/admin/*:deny_from": "web.default"},
			probe{web, "billing", "/admin/reset", http.StatusForbidden}, probe{web, "billing", "/charge", http.StatusOK}},
		{"deny_from: web is refused everywhere, orders still admitted",
			map[string]string{"allow_from": "orders.shop", "deny_from": "web.default"},
			probe{web, "billing", "/", http.StatusForbidden}, probe{orders, "billing.default", "/", http.StatusOK}},
	} {
		setPolicy(step.keys)
		waitFor(t, step.what, func() bool {
			resp, _ := call(t, step.shows.from.Info.Outbound, step.shows.host, step.shows.path, nil)
			return resp.StatusCode == step.shows.code
		})
		if resp, e := call(t, step.left.from.Info.Outbound, step.left.host, step.left.path, nil); resp.StatusCode != step.left.code {
			t.Errorf("%s: %s %s answered %d %q, want %d", step.what, step.left.host, step.left.path, resp.StatusCode, e.Body, step.left.code)
		}
	}
}

// An operator's policy changes what callers do while everything runs: a
// fault set on b (registry.Policy, what `meshctl policy set` writes)
// reaches a's sidecar and aborts its calls; removed, they reach b again —
// no sidecar restarted.
func TestAnOperatorsPolicyReachesCallers(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	var served atomic.Int32
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served.Add(1); _, _ = w.Write([]byte("{}")) }))
	t.Cleanup(app.Close)
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
	cp.StartSidecar("default", "b", meshtest.WithApp(app.Listener.Addr().String(), "http"),
		meshtest.WithOptions(func(o *dataplane.Options) { o.Policy = map[string]string{"timeout": "3s"} }))
	waitReachable(t, a, "b")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cp.Registry().SetPolicy(ctx, registry.Policy{Service: "b", Keys: map[string]string{"fault_abort": "503"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a's sidecar to apply the operator's fault", func() bool {
		resp, e := call(t, a.Info.Outbound, "b", "/", nil)
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(e.Body, "fault filter abort")
	})
	before := served.Load()
	for i := range 5 {
		if resp, e := call(t, a.Info.Outbound, "b", "/", nil); resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("call %d under the operator's fault: %d %q", i, resp.StatusCode, e.Body)
		}
	}
	if served.Load() != before {
		t.Errorf("b's app saw %d calls under a fault that aborts all", served.Load()-before)
	}
	if err := cp.Registry().DeletePolicy(ctx, "default", "b"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a's calls to reach b again", func() bool {
		resp, _ := call(t, a.Info.Outbound, "b", "/", nil)
		return resp.StatusCode == http.StatusOK
	})
}

// An operator turns a service's access log on while it runs: its own
// sidecar logs each request it takes (what meshctl logs shows), and stops
// when the key is cleared. No restart, no flag.
func TestAccessLogByPolicy(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	a, b := echoPair(t, cp)
	// served is how many of a's requests b's sidecar has counted: it logs
	// a request before it counts it, so once counted, its line is there.
	counted := regexp.MustCompile(`micromesh_requests_total\{destination="b.default",direction="inbound",[^}]*source="a.default",transport="quic"\} (\d+)`)
	served := func() int {
		n := 0
		for _, m := range counted.FindAllStringSubmatch(metrics(t, b.Info.Admin), -1) {
			v, _ := strconv.Atoi(m[1])
			n += v
		}
		return n
	}
	// callCounted calls b at path and waits until b's sidecar counted it.
	callCounted := func(path string) {
		n := served()
		call(t, a.Info.Outbound, "b", path, nil)
		waitFor(t, "b's sidecar to count "+path, func() bool { return served() > n })
	}
	logged := func(path string) bool {
		return strings.Contains(cp.Logs(), `msg=request component=proxy direction=inbound method=POST authority=b path=`+path+` source=a.default destination=b.default transport=quic code=200`)
	}
	callCounted("/before")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cp.Registry().SetPolicy(ctx, registry.Policy{Service: "b", Keys: map[string]string{"access_log": "on"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b's sidecar to log a request", func() bool {
		call(t, a.Info.Outbound, "b", "/logged", nil)
		return logged("/logged")
	})
	if logged("/before") {
		t.Error("a request before the policy was logged")
	}
	if strings.Contains(cp.Logs(), `direction=outbound method=POST authority=b path=/logged`) {
		t.Error("a's sidecar logged its calls: the policy is b's, for b's own sidecar")
	}

	if err := cp.Registry().DeletePolicy(ctx, "default", "b"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b's sidecar to stop logging", func() bool {
		path := fmt.Sprintf("/after-%d", time.Now().UnixNano())
		callCounted(path)
		return !logged(path)
	})
}
