package proxy

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/micromesh/micromesh/dataplane/config"
	"github.com/micromesh/micromesh/dataplane/xdswire"
	"github.com/micromesh/micromesh/dataplane/xdswire/xdswiretest"
)

// copySeen is what a mirror backend saw of one copy.
type copySeen struct {
	method, path, host string
	body               []byte
	err                error
}

// mirrorProxy is a proxy whose route to b ("b" cluster) mirrors to the
// clusters given (by name: each a backend, or nil for a cluster it lacks),
// with the route's retries.
func mirrorProxy(t *testing.T, b *httptest.Server, retries uint32, mirrors []*route.RouteAction_RequestMirrorPolicy, backends map[string]*httptest.Server) (*Proxy, *prometheus.Registry) {
	t.Helper()
	action := &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "b"}, RequestMirrorPolicies: mirrors, Timeout: durationpb.New(5 * time.Second)}
	if retries > 0 {
		action.RetryPolicy = &route.RetryPolicy{RetryOn: "retriable-status-codes", RetriableStatusCodes: []uint32{503}, NumRetries: wrapperspb.UInt32(retries),
			RetryBackOff: &route.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)}}
	}
	rc := &route.RouteConfiguration{Name: "outbound", VirtualHosts: []*route.VirtualHost{{
		Name: "b", Domains: []string{"b"},
		Routes: []*route.Route{{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}}, Action: &route.Route_Route{Route: action}}},
	}}}
	clusters := []*xdswire.Cluster{xdswiretest.Decode[*xdswire.Cluster](t, staticCluster("b", b))}
	for name, s := range backends {
		clusters = append(clusters, xdswiretest.Decode[*xdswire.Cluster](t, staticCluster(name, s)))
	}
	cfg, err := config.Compile(config.Resources{Routes: []*xdswire.RouteConfiguration{xdswiretest.Decode[*xdswire.RouteConfiguration](t, rc)}, Clusters: clusters})
	if err != nil {
		t.Fatal(err)
	}
	return outboundProxy(t, cfg)
}

// mirrorBackend records each copy it gets on seen.
func mirrorBackend(t *testing.T, seen chan<- copySeen, handler http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		seen <- copySeen{method: r.Method, path: r.URL.Path, host: r.Host, body: body, err: err}
		handler(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// waitCounter waits for a counter's total to reach want.
func waitCounter(t *testing.T, reg *prometheus.Registry, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for counterOf(t, reg, name) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after 5 s, want %v", name, counterOf(t, reg, name), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A mirrored request's copy reaches the mirror with the request's method,
// path and body (small, kept, streaming) and the host with -shadow; the
// original's answer is the primary's, and a copy that hangs, fails or is
// refused never holds it up, changes it or makes it retry.
func TestMirrorSendsACopyAndDropsItsAnswer(t *testing.T) {
	var primary atomic.Int32
	b := backend(t, &primary, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "primary") })
	seen := make(chan copySeen, 16)
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	m := mirrorBackend(t, seen, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hang" {
			<-release
		}
		http.Error(w, "the shadow is broken", http.StatusServiceUnavailable)
	})
	p, reg := mirrorProxy(t, b, 2, []*route.RouteAction_RequestMirrorPolicy{{Cluster: "m"}}, map[string]*httptest.Server{"m": m})

	for _, tc := range []struct {
		name string
		body io.Reader
		want string
	}{
		{"no body", nil, ""},
		{"small body", strings.NewReader("hello"), "hello"},
		{"kept body", strings.NewReader(strings.Repeat("k", 40<<10)), strings.Repeat("k", 40<<10)},
		{"streaming body", io.MultiReader(strings.NewReader("str"), strings.NewReader("eam")), "stream"}, // no length: kept as it streams
	} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "http://b/thing", tc.body)
		p.Outbound().ServeHTTP(w, r)
		if w.Code != http.StatusOK || w.Body.String() != "primary" {
			t.Fatalf("%s: the original got %d %q, want the primary's 200", tc.name, w.Code, w.Body.String())
		}
		select {
		case c := <-seen:
			if c.method != http.MethodPost || c.path != "/thing" || c.host != "b-shadow" || string(c.body) != tc.want || c.err != nil {
				t.Errorf("%s: the mirror saw %s %s host %q body %d bytes (%v), want POST /thing host b-shadow and the body", tc.name, c.method, c.path, c.host, len(c.body), c.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no copy reached the mirror", tc.name)
		}
	}
	if n := primary.Load(); n != 4 {
		t.Errorf("the primary served %d requests, want 4: a failing mirror made the original retry", n)
	}
	waitCounter(t, reg, "micromesh_mirrored_requests_total", 4)

	// A copy that hangs: the original answers at once.
	done := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		w := httptest.NewRecorder()
		p.Outbound().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "http://b/hang", nil))
		done <- w
	}()
	select {
	case w := <-done:
		if w.Code != http.StatusOK {
			t.Errorf("with the copy hanging the original got %d", w.Code)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the original waited for its hanging copy")
	}
	<-seen
	once.Do(func() { close(release) })
	waitCounter(t, reg, "micromesh_mirrored_requests_total", 5)
	if got := counterOfLabels(t, reg, "micromesh_mirrored_requests_total", map[string]string{"cluster": "m", "outcome": "503"}); got != 5 {
		t.Errorf("copies answered 503 counted %v, want 5", got)
	}
}

// A body past what the proxy keeps still reaches the primary whole; its
// copy is cut off (counted), never the original. A mirror cluster the
// proxy does not have is skipped and counted.
func TestMirrorOfABodyTooLongToKeep(t *testing.T) {
	var primary atomic.Int32
	var got atomic.Int64
	b := backend(t, &primary, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "primary") })
	b.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		got.Store(n)
		_, _ = io.WriteString(w, "primary")
	})
	seen := make(chan copySeen, 4)
	m := mirrorBackend(t, seen, func(w http.ResponseWriter, r *http.Request) {})
	p, reg := mirrorProxy(t, b, 0, []*route.RouteAction_RequestMirrorPolicy{{Cluster: "m"}, {Cluster: "nowhere"}}, map[string]*httptest.Server{"m": m})

	const size = 3 * maxReplayBody
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "http://b/big", io.MultiReader(bytes.NewReader(make([]byte, size/2)), bytes.NewReader(make([]byte, size/2))))
	p.Outbound().ServeHTTP(w, r)
	if w.Code != http.StatusOK || got.Load() != size {
		t.Fatalf("the original got %d with %d of %d bytes at the primary", w.Code, got.Load(), size)
	}
	waitCounter(t, reg, "micromesh_mirrored_requests_total", 2)
	if n := counterOfLabels(t, reg, "micromesh_mirrored_requests_total", map[string]string{"cluster": "nowhere", "outcome": "no_cluster"}); n != 1 {
		t.Errorf("the missing mirror cluster counted %v, want 1", n)
	}
	if n := counterOfLabels(t, reg, "micromesh_mirrored_requests_total", map[string]string{"cluster": "m", "outcome": "body_not_kept"}); n != 1 {
		t.Errorf("a copy of a body past %d bytes counted body_not_kept %v times, want 1", maxReplayBody, n)
	}
}

// A mirror with a share copies that share of the requests.
func TestMirrorShare(t *testing.T) {
	var primary, copies atomic.Int32
	b := backend(t, &primary, func(w http.ResponseWriter, r *http.Request) {})
	m := backend(t, &copies, func(w http.ResponseWriter, r *http.Request) {})
	p, reg := mirrorProxy(t, b, 0, []*route.RouteAction_RequestMirrorPolicy{{Cluster: "m",
		RuntimeFraction: &core.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 25}}}}, map[string]*httptest.Server{"m": m})
	const calls = 1000
	for range calls {
		if w := call(p, http.MethodGet, ""); w.Code != http.StatusOK {
			t.Fatalf("call answered %d", w.Code)
		}
	}
	// Copies still in flight land: every copy the mirror got is counted.
	deadline := time.Now().Add(5 * time.Second)
	sent := counterOf(t, reg, "micromesh_mirrored_requests_total")
	for sent != float64(copies.Load()) {
		if time.Now().After(deadline) {
			t.Fatalf("the mirror got %d copies, %v counted", copies.Load(), sent)
		}
		time.Sleep(10 * time.Millisecond)
		sent = counterOf(t, reg, "micromesh_mirrored_requests_total")
	}
	// 25 % of 1,000: 250, standard deviation 13.7; six of them either way
	// fails once in hundreds of millions of runs.
	if sent < 168 || sent > 332 {
		t.Errorf("%v of %d requests mirrored at 25 %%", sent, calls)
	}
}
