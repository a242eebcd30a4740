package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/micromesh/micromesh/dataplane/config"
	"github.com/micromesh/micromesh/dataplane/h3"
	"github.com/micromesh/micromesh/dataplane/xdswire"
	"github.com/micromesh/micromesh/dataplane/xdswire/xdswiretest"
	"github.com/micromesh/micromesh/internal/poll"
)

// policy is the traffic policy of the route and cluster under test, as the
// control plane would send it.
type policy struct {
	timeout     time.Duration // 0: Envoy's default (15 s)
	retries     uint32        // 0: no retry policy
	perTry      time.Duration
	retryOn     string
	retryCodes  []uint32 // retriable_status_codes
	maxRequests uint32
	maxRetries  uint32
	maxConns    uint32
	maxPending  uint32
	eject5xx    uint32 // outlier detection: consecutive 5xx that eject
}

// policyProxy is a proxy whose outbound route "b" goes to a plaintext
// cluster of the given backends (loopback HTTP/1.1), with pol applied: the
// config is compiled from xDS resources, as a sidecar's is.
func policyProxy(t *testing.T, pol policy, backends ...*httptest.Server) (*Proxy, *prometheus.Registry) {
	t.Helper()
	action := &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "b"}}
	if pol.timeout > 0 {
		action.Timeout = durationpb.New(pol.timeout)
	}
	if pol.retries > 0 {
		action.RetryPolicy = &route.RetryPolicy{
			RetryOn:              pol.retryOn,
			RetriableStatusCodes: pol.retryCodes,
			NumRetries:           wrapperspb.UInt32(pol.retries),
			RetryBackOff:         &route.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)},
		}
		if pol.perTry > 0 {
			action.RetryPolicy.PerTryTimeout = durationpb.New(pol.perTry)
		}
	}
	rc := &route.RouteConfiguration{Name: "outbound", VirtualHosts: []*route.VirtualHost{{
		Name: "b", Domains: []string{"b"},
		Routes: []*route.Route{{
			Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
			Action: &route.Route_Route{Route: action},
		}},
	}}}
	var lbs []*endpointv3.LbEndpoint
	for _, b := range backends {
		host, port, _ := net.SplitHostPort(b.Listener.Addr().String())
		p, _ := strconv.Atoi(port)
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
				Address: host, PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(p)}}}},
		}}})
	}
	cl := &clusterv3.Cluster{
		Name:                 "b",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment:       &endpointv3.ClusterLoadAssignment{ClusterName: "b", Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}},
	}
	if pol.maxRequests > 0 || pol.maxRetries > 0 || pol.maxConns > 0 || pol.maxPending > 0 {
		th := &clusterv3.CircuitBreakers_Thresholds{}
		for _, f := range []struct {
			v   uint32
			dst **wrapperspb.UInt32Value
		}{{pol.maxRequests, &th.MaxRequests}, {pol.maxRetries, &th.MaxRetries}, {pol.maxConns, &th.MaxConnections}, {pol.maxPending, &th.MaxPendingRequests}} {
			if f.v > 0 {
				*f.dst = wrapperspb.UInt32(f.v)
			}
		}
		cl.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{th}}
	}
	if pol.eject5xx > 0 {
		cl.OutlierDetection = &clusterv3.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(pol.eject5xx), MaxEjectionPercent: wrapperspb.UInt32(50)}
	}
	cfg, err := config.Compile(config.Resources{Routes: []*xdswire.RouteConfiguration{xdswiretest.Decode[*xdswire.RouteConfiguration](t, rc)},
		Clusters: []*xdswire.Cluster{xdswiretest.Decode[*xdswire.Cluster](t, cl)}})
	if err != nil {
		t.Fatal(err)
	}
	return outboundProxy(t, cfg)
}

// outboundProxy is a proxy running cfg behind an outbound listener named
// "outbound" that routes by route configuration "outbound", with its
// metrics registry.
func outboundProxy(t *testing.T, cfg *config.Config) (*Proxy, *prometheus.Registry) {
	t.Helper()
	cfg.Outbound = &config.Outbound{Name: "outbound", Route: "outbound"}
	reg := prometheus.NewRegistry()
	p := New(nil, Options{Self: "a.default", Metrics: reg})
	t.Cleanup(p.Close)
	if err := p.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	return p, reg
}

// call sends one request through p's outbound side, as the app would.
func call(p *Proxy, method, body string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, "http://b/thing", rd)
	p.Outbound().ServeHTTP(w, r)
	return w
}

// counterOf sums a counter over its label values (0 if never counted).
func counterOf(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	return counterOfLabels(t, reg, name, nil)
}

// counterOfLabels sums a counter over the series that have labels.
func counterOfLabels(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
		series:
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
						continue series
					}
				}
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// backend is an upstream that answers with handler and counts requests.
func backend(t *testing.T, n *atomic.Int32, handler http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		handler(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// A route timeout bounds the whole request: a slow upstream gets 504 with
// the timeout in the message, at the timeout, not when it answers.
func TestRouteTimeoutAnswers504(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	var n atomic.Int32
	slow := backend(t, &n, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		case <-time.After(5 * time.Second): // bounded: a proxy that does not cut it off gets an answer, too late
		}
	})
	p, _ := policyProxy(t, policy{timeout: 200 * time.Millisecond}, slow)
	start := time.Now()
	w := call(p, http.MethodGet, "")
	took := time.Since(start)
	if w.Code != http.StatusGatewayTimeout || !strings.Contains(w.Body.String(), "did not answer within the route timeout (200ms)") {
		t.Fatalf("answered %d %q, want 504 naming the route timeout", w.Code, w.Body.String())
	}
	if took < 200*time.Millisecond || took > 3*time.Second {
		t.Fatalf("answered after %v, want about the 200ms timeout", took)
	}
}

// A try that passes its per-try timeout is retried on another endpoint,
// within the route timeout.
func TestPerTryTimeoutRetriesElsewhere(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	var hung, good atomic.Int32
	slow := backend(t, &hung, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		case <-time.After(5 * time.Second): // bounded: a proxy that does not cut it off gets an answer, too late
		}
	})
	fast := backend(t, &good, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "fast") })
	p, reg := policyProxy(t, policy{timeout: 10 * time.Second, retries: 2, perTry: 150 * time.Millisecond, retryOn: "reset,connect-failure"}, slow, fast)
	for i := range 4 { // round robin: half the first tries go to the hung endpoint
		start := time.Now()
		w := call(p, http.MethodPost, "payload")
		if w.Code != http.StatusOK || w.Body.String() != "fast" {
			t.Fatalf("call %d: answered %d %q, want the fast endpoint's answer", i, w.Code, w.Body.String())
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("call %d took %v: the per-try timeout did not cut the hung try", i, took)
		}
	}
	if hung.Load() == 0 {
		t.Fatal("no try went to the hung endpoint: the test proves nothing")
	}
	if got := counterOf(t, reg, "micromesh_upstream_retries_total"); got < 1 {
		t.Fatalf("micromesh_upstream_retries_total = %v, want the retries counted", got)
	}

	// Every try cut off, the route timeout still far: a 504 that says so.
	p, _ = policyProxy(t, policy{timeout: 10 * time.Second, retries: 1, perTry: 100 * time.Millisecond, retryOn: "reset"}, slow)
	if w := call(p, http.MethodGet, ""); w.Code != http.StatusGatewayTimeout || !strings.Contains(w.Body.String(), "did not answer within the per-try timeout (100ms) in 2 attempt(s)") {
		t.Fatalf("every try timed out: answered %d %q, want 504 naming the per-try timeout", w.Code, w.Body.String())
	}
}

// A 503 is retried when the policy says so (retriable-status-codes, as the
// control plane sends it), and the caller sees the retry's answer; without
// a retry policy the 503 is the answer.
func TestRetryOn503(t *testing.T) {
	var n atomic.Int32
	flaky := backend(t, &n, func(w http.ResponseWriter, r *http.Request) {
		if n.Load()%2 == 1 { // every other request fails
			http.Error(w, "overloaded", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	p, reg := policyProxy(t, policy{retries: 1, retryOn: "retriable-status-codes", retryCodes: []uint32{503}}, flaky)
	for i := range 3 {
		if w := call(p, http.MethodPost, "x"); w.Code != http.StatusOK || w.Body.String() != "ok" {
			t.Fatalf("call %d: answered %d %q, want the retry's 200", i, w.Code, w.Body.String())
		}
	}
	if got := counterOf(t, reg, "micromesh_upstream_retries_total"); got != 3 {
		t.Fatalf("micromesh_upstream_retries_total = %v, want 3 (one per call)", got)
	}

	n.Store(0)
	p, _ = policyProxy(t, policy{}, flaky)
	if w := call(p, http.MethodGet, ""); w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "overloaded") {
		t.Fatalf("without retries: answered %d %q, want the upstream's 503", w.Code, w.Body.String())
	}
}

// A gRPC UNAVAILABLE answer (trailers-only: grpc-status in the headers) is
// retried when the policy says "unavailable", for a body the proxy could
// keep; other gRPC errors are answers, not retried.
func TestRetryOnGRPCUnavailable(t *testing.T) {
	var n atomic.Int32
	flaky := backend(t, &n, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		switch {
		case r.URL.Path == "/invalid":
			w.Header().Set("Grpc-Status", "3") // INVALID_ARGUMENT: not retried
		case n.Load()%2 == 1: // every other request is turned away
			w.Header().Set("Grpc-Status", "14")
			w.Header().Set("Grpc-Message", "draining")
		default:
			w.Header().Set("Trailer", "Grpc-Status")
			_, _ = w.Write([]byte{0, 0, 0, 0, 0}) // an empty message
			w.Header().Set("Grpc-Status", "0")
		}
	})
	p, reg := policyProxy(t, policy{retries: 1, retryOn: "unavailable"}, flaky)
	grpcCall := func(path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "http://b"+path, strings.NewReader("\x00\x00\x00\x00\x00"))
		r.Header.Set("Content-Type", "application/grpc")
		r.Header.Set("Te", "trailers")
		p.Outbound().ServeHTTP(w, r)
		return w
	}
	for i := range 3 {
		w := grpcCall("/svc/Method")
		if st := w.Result().Trailer.Get("Grpc-Status") + w.Header().Get("Grpc-Status"); st != "0" {
			t.Fatalf("call %d: grpc-status %q (%v), want the retry's 0", i, st, w.Result().Header)
		}
	}
	if got := counterOf(t, reg, "micromesh_upstream_retries_total"); got != 3 {
		t.Fatalf("micromesh_upstream_retries_total = %v, want 3 (one per call)", got)
	}
	before := n.Load()
	if w := grpcCall("/invalid"); w.Header().Get("Grpc-Status") != "3" || n.Load() != before+1 {
		t.Fatalf("INVALID_ARGUMENT: grpc-status %q after %d tries, want 3 after one", w.Header().Get("Grpc-Status"), n.Load()-before)
	}
}

// The other gRPC conditions retry their statuses, and only those.
func TestRetryOnGRPCStatuses(t *testing.T) {
	var n atomic.Int32
	busy := backend(t, &n, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", strings.TrimPrefix(r.URL.Path, "/"))
	})
	p, _ := policyProxy(t, policy{retries: 2, retryOn: "resource-exhausted,deadline-exceeded"}, busy)
	for status, tries := range map[string]int32{"8": 3, "4": 3, "14": 1, "13": 1, "1": 1} {
		before := n.Load()
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "http://b/"+status, strings.NewReader("\x00\x00\x00\x00\x00"))
		r.Header.Set("Content-Type", "application/grpc")
		p.Outbound().ServeHTTP(w, r)
		if got := n.Load() - before; w.Header().Get("Grpc-Status") != status || got != tries {
			t.Errorf("grpc-status %s: answered %q after %d tries, want it after %d", status, w.Header().Get("Grpc-Status"), got, tries)
		}
	}
}

// A cluster's max_requests breaker refuses what is past it with a 503 that
// says so, counted; requests within it pass.
func TestCircuitBreakerRefusesOverflow(t *testing.T) {
	release := make(chan struct{})
	var n atomic.Int32
	entered := make(chan struct{}, 1)
	held := backend(t, &n, func(w http.ResponseWriter, r *http.Request) {
		select {
		case entered <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-time.After(5 * time.Second): // bounded, should the breaker let a second one in
		}
		_, _ = io.WriteString(w, "done")
	})
	p, reg := policyProxy(t, policy{maxRequests: 1}, held)
	first := make(chan *httptest.ResponseRecorder, 1)
	go func() { first <- call(p, http.MethodGet, "") }()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first request never reached the upstream")
	}
	w := call(p, http.MethodGet, "")
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "circuit breaker open: 1 requests in flight to b") {
		t.Fatalf("second request: answered %d %q, want the breaker's 503", w.Code, w.Body.String())
	}
	if got := counterOf(t, reg, "micromesh_circuit_breaker_overflow_total"); got != 1 {
		t.Fatalf("micromesh_circuit_breaker_overflow_total = %v, want 1", got)
	}
	close(release)
	if w := <-first; w.Code != http.StatusOK || w.Body.String() != "done" {
		t.Fatalf("first request: answered %d %q", w.Code, w.Body.String())
	}
	if w := call(p, http.MethodGet, ""); w.Code != http.StatusOK {
		t.Fatalf("after the first finished: answered %d %q, want it let through", w.Code, w.Body.String())
	}
}

// On an HTTP/1.1 cluster (the app), max_connections makes requests wait
// for a connection and max_pending_requests refuses what waits past it.
func TestConnectionBreakersOfHTTP1Clusters(t *testing.T) {
	release := make(chan struct{}, 4)
	entered := make(chan struct{}, 4)
	var n atomic.Int32
	held := backend(t, &n, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-time.After(5 * time.Second):
		}
		_, _ = io.WriteString(w, "done")
	})
	p, reg := policyProxy(t, policy{maxConns: 1, maxPending: 1}, held)
	answers := make(chan *httptest.ResponseRecorder, 2)
	go func() { answers <- call(p, http.MethodGet, "") }()
	<-entered
	go func() { answers <- call(p, http.MethodGet, "") }() // waits for the one connection
	poll.Until(t, "the second request waits for the connection", 10*time.Second, time.Millisecond,
		func() bool { return p.Clusters()[0].PendingRequests == 1 })
	w := call(p, http.MethodGet, "")
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "circuit breaker open: 1 connections to b busy and 1 requests waiting for one") {
		t.Fatalf("third request: answered %d %q, want the breaker's 503", w.Code, w.Body.String())
	}
	if got := counterOf(t, reg, "micromesh_circuit_breaker_overflow_total"); got != 1 {
		t.Fatalf("micromesh_circuit_breaker_overflow_total = %v, want 1", got)
	}
	release <- struct{}{}
	release <- struct{}{}
	for range 2 {
		if w := <-answers; w.Code != http.StatusOK || w.Body.String() != "done" {
			t.Fatalf("answered %d %q, want both held requests through", w.Code, w.Body.String())
		}
	}
}

// inboundProxy is a proxy whose inbound side forwards everything to the
// app (a plaintext HTTP/1.1 cluster), as a sidecar's does.
func inboundProxy(t *testing.T, app *httptest.Server) *Proxy {
	t.Helper()
	p, _ := inboundProxyWithMetrics(t, app)
	return p
}

// inboundProxyWithMetrics is inboundProxy with the registry of its metrics.
func inboundProxyWithMetrics(t *testing.T, app *httptest.Server) (*Proxy, *prometheus.Registry) {
	t.Helper()
	rc := &route.RouteConfiguration{Name: "inbound", VirtualHosts: []*route.VirtualHost{{
		Name: "app", Domains: []string{"*"},
		Routes: []*route.Route{{
			Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
			Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "b"}, Timeout: durationpb.New(0)}},
		}},
	}}}
	p, reg := policyProxy(t, policy{}, app)
	cfg := *p.Config()
	routes, err := config.Compile(config.Resources{Routes: []*xdswire.RouteConfiguration{xdswiretest.Decode[*xdswire.RouteConfiguration](t, rc)}})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Inbound = &config.Inbound{Name: "inbound", Route: routes.Routes["inbound"]}
	if err := p.Apply(&cfg); err != nil {
		t.Fatal(err)
	}
	return p, reg
}

// An app that answers with something that is not HTTP/1.1 (or a head past
// the limit) gets its caller a 502 that says so, not "not answering".
func TestAppsMalformedAnswerIs502(t *testing.T) {
	for name, head := range map[string]string{
		"bad header line": "HTTP/1.1 200 OK\r\nNo colon here\r\nContent-Length: 0\r\n\r\n",
		"huge head":       "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 100<<10) + "\r\nContent-Length: 0\r\n\r\n",
		"CL and TE":       "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			var n atomic.Int32
			app := backend(t, &n, func(w http.ResponseWriter, r *http.Request) {
				c, _, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Error(err)
					return
				}
				defer c.Close()
				_, _ = io.WriteString(c, head)
			})
			p := inboundProxy(t, app)
			w := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodGet, "http://b/", nil)
			r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{certWith("caller", "spiffe://td/ns/default/svc/a")}}
			p.Inbound().ServeHTTP(w, r)
			if w.Code != http.StatusBadGateway || !strings.Contains(w.Body.String(), "answered with a response the proxy cannot read") {
				t.Fatalf("answered %d %q, want 502 saying the app's answer could not be read", w.Code, w.Body.String())
			}
		})
	}
}

// Clusters shows what the breakers hold and how each endpoint stands:
// an endpoint that failed past the threshold shows as ejected, until when.
func TestClustersShowEjectionsAndLimits(t *testing.T) {
	var nb, ng atomic.Int32
	bad := backend(t, &nb, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "broken", http.StatusInternalServerError) })
	good := backend(t, &ng, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	p, _ := policyProxy(t, policy{eject5xx: 2, maxRequests: 7}, bad, good)
	for range 6 {
		call(p, http.MethodGet, "")
	}
	cs := p.Clusters()
	if len(cs) != 1 || cs[0].Name != "b" || cs[0].MaxRequests != 7 || cs[0].ActiveRequests != 0 || len(cs[0].Endpoints) != 2 {
		t.Fatalf("clusters = %+v", cs)
	}
	for _, e := range cs[0].Endpoints {
		isBad := e.Address == bad.Listener.Addr().String()
		switch {
		case isBad && (!e.Ejected || e.EjectedUntil == nil || !e.EjectedUntil.After(time.Now()) || e.Ejections != 1):
			t.Errorf("failing endpoint: %+v, want ejected once, until later", e)
		case !isBad && (e.Ejected || e.Ejections != 0 || !e.Healthy):
			t.Errorf("answering endpoint: %+v, want healthy and not ejected", e)
		}
	}
}

// A host's routes are matched by path; a path none takes gets 404 naming
// it (the control plane always ends with "/", other control planes may
// not).
func TestPathNoRouteTakesIs404(t *testing.T) {
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "b"+r.URL.Path) }))
	t.Cleanup(b.Close)
	p, _ := policyProxy(t, policy{}, b)
	rc := &route.RouteConfiguration{Name: "outbound", VirtualHosts: []*route.VirtualHost{{
		Name: "b", Domains: []string{"b"},
		Routes: []*route.Route{{
			Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Path{Path: "/only"}},
			Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "b"}}},
		}},
	}}}
	routes, err := config.Compile(config.Resources{Routes: []*xdswire.RouteConfiguration{xdswiretest.Decode[*xdswire.RouteConfiguration](t, rc)}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := *p.Config()
	cfg.Routes = routes.Routes
	if err := p.Apply(&cfg); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"/only":  "200 b/only",
		"/thing": `404 micromesh: no route of "b" takes the path "/thing"` + "\n",
	} {
		w := httptest.NewRecorder()
		p.Outbound().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "http://b"+path, nil))
		if got := fmt.Sprintf("%d %s", w.Code, w.Body.String()); got != want {
			t.Errorf("GET %s: %q, want %q", path, got, want)
		}
	}
}

// A try that got no answer is retried under reset whatever the failure,
// under connect-failure only when it could not connect, as in Envoy.
func TestRetriedFailuresAsEnvoys(t *testing.T) {
	dialErr := &connectError{errors.New("dial tcp 127.0.0.1:1: connect: connection refused")}
	quicErr := fmt.Errorf("%w to 127.0.0.1:1: timeout: no recent network activity", h3.ErrConnect)
	reset := errors.New("h3: reading the response: stream reset")
	for _, tc := range []struct {
		on   config.RetryOn
		err  error
		want bool
	}{
		{config.RetryOn{ConnectFailure: true}, dialErr, true},
		{config.RetryOn{ConnectFailure: true}, quicErr, true},
		{config.RetryOn{ConnectFailure: true}, reset, false},
		{config.RetryOn{Reset: true}, reset, true},
		{config.RetryOn{Reset: true}, dialErr, true},
		{config.RetryOn{GRPCStatus: 1 << 14}, dialErr, false},
	} {
		if got := retriableError(&config.RetryPolicy{On: tc.on}, tc.err); got != tc.want {
			t.Errorf("%+v, %v: retried %v, want %v", tc.on, tc.err, got, tc.want)
		}
	}
}

// A path with dot segments is refused inbound before the RBAC rules judge
// it: the app might serve another path than the one judged. Encoded dots
// are decoded first.
func TestInboundRefusesDotSegments(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "app"+r.URL.Path) }))
	t.Cleanup(app.Close)
	p := inboundProxy(t, app)
	for target, want := range map[string]int{
		"/public/../admin":     http.StatusBadRequest,
		"/public/%2e%2e/admin": http.StatusBadRequest,
		"/./admin":             http.StatusBadRequest,
		"/public/..":           http.StatusBadRequest,
		"/public/..data/x.y":   http.StatusOK,
		"/admin":               http.StatusOK,
	} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "http://b"+target, nil)
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{certWith("caller", "spiffe://td/ns/default/svc/a")}}
		p.Inbound().ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("GET %s: %d %q, want %d", target, w.Code, w.Body.String(), want)
		}
	}
}
