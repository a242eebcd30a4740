package proxy

import (
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/micromesh/micromesh/dataplane/config"
)

// Registerer is where the proxy's metrics are registered.
type Registerer = prometheus.Registerer

// metrics follow the field's conventions (Istio's standard metrics):
// requests by direction, source, destination and response code; a
// duration histogram.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	local    *prometheus.CounterVec
	denied   prometheus.Counter
	// rateLimited counts requests a local rate limit found no token for,
	// by direction and whether the limit is enforced.
	rateLimited *prometheus.CounterVec
	retries     *prometheus.CounterVec
	overflow    *prometheus.CounterVec
	ejections   *prometheus.CounterVec
	// faults counts injected faults by kind (delay, abort);
	// faultOverflow the faults not injected because MaxActive were.
	faults        *prometheus.CounterVec
	faultOverflow prometheus.Counter
	// mirrored counts requests' copies by mirror cluster and outcome (the
	// copy's response code, or why it got none).
	mirrored *prometheus.CounterVec
	// methods are the grpc_method labels seen.
	methods methodLabels
}

// UnknownDestination is the destination label of outbound requests for
// an authority the sidecar has no route for (answered 503).
const UnknownDestination = "unknown"

// maxMethods bounds the grpc_method labels of one proxy: the methods of
// the services it serves and calls, not whatever paths a caller sends.
const maxMethods = 256

// methodLabels gives each gRPC method its label, once: the first
// maxMethods methods by name, then "other", so that no caller can grow
// the proxy's series (and its memory) without bound. Reads take no lock.
type methodLabels struct {
	mu   sync.Mutex
	seen atomic.Pointer[map[string]string]
}

// label is the grpc_method label of a gRPC request's path
// ("/pkg.Service/Method" → "pkg.Service/Method"); "other" past the bound
// or for a path not of that form.
func (m *methodLabels) label(path string) string {
	if seen := m.seen.Load(); seen != nil {
		if l, ok := (*seen)[path]; ok {
			return l
		}
	}
	if !grpcPath(path) {
		return "other"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var cur map[string]string
	if seen := m.seen.Load(); seen != nil {
		cur = *seen
	}
	if l, ok := cur[path]; ok {
		return l
	}
	if len(cur) >= maxMethods {
		return "other"
	}
	next := maps.Clone(cur)
	if next == nil {
		next = map[string]string{}
	}
	key := strings.Clone(path) // not the request's memory
	next[key] = key[1:]
	m.seen.Store(&next)
	return next[key]
}

// grpcPath reports whether path is a gRPC method's: "/service/method",
// printable ASCII, at most 256 bytes.
func grpcPath(path string) bool {
	if len(path) < 4 || len(path) > 256 || path[0] != '/' || strings.Count(path, "/") != 2 || strings.HasSuffix(path, "/") || path[1] == '/' {
		return false
	}
	for i := 0; i < len(path); i++ {
		if c := path[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

func newMetrics(reg Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "micromesh_requests_total",
			Help: "Requests through the proxy, by direction, source and destination workload, transport (quic, tls, plain, local), HTTP response code, gRPC status (empty for other requests, and for gRPC calls that ended with none) and gRPC method (pkg.Service/Method; empty for other requests; past 256 different ones, other).",
		}, []string{"direction", "source", "destination", "transport", "response_code", "grpc_status", "grpc_method"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "micromesh_request_duration_seconds",
			Help:    "Time from a request's arrival at the proxy to the end of its response, by direction, destination and gRPC method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"direction", "destination", "grpc_method"}),
		local: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "micromesh_local_replies_total",
			Help: "Replies the proxy made itself (no route, no healthy endpoint, RBAC denial, upstream failure), by direction and code.",
		}, []string{"direction", "response_code"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "micromesh_rate_limited_total",
			Help: "Requests a local rate limit had no token for, by direction and whether the limit is enforced (refused) or not (only counted).",
		}, []string{"direction", "enforced"}),
		denied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "micromesh_rbac_denied_total",
			Help: "Inbound requests refused by the RBAC rules.",
		}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "micromesh_upstream_retries_total",
			Help: "Retries, by cluster.",
		}, []string{"cluster"}),
		overflow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "micromesh_circuit_breaker_overflow_total",
			Help: "Requests refused because a cluster's circuit breaker was open.",
		}, []string{"cluster"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "micromesh_outlier_ejections_total",
			Help: "Endpoints ejected by outlier detection, by cluster.",
		}, []string{"cluster"}),
		faults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "micromesh_faults_injected_total",
			Help: "Faults the outbound fault filter injected, by kind (delay, abort).",
		}, []string{"fault"}),
		faultOverflow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "micromesh_faults_overflow_total",
			Help: "Faults not injected because as many requests as the filter's max_active_faults were already in one.",
		}),
		mirrored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "micromesh_mirrored_requests_total",
			Help: "Copies of requests sent to mirror clusters (their answers dropped), by cluster and outcome: the copy's response code, or reset, body_not_kept (the body outgrew what the proxy keeps), overflow, no_endpoint, no_cluster.",
		}, []string{"cluster", "outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.local, m.denied, m.retries, m.overflow, m.ejections, m.rateLimited, m.faults, m.faultOverflow, m.mirrored)
	}
	return m
}

// record counts a finished request.
func (p *Proxy) record(w http.ResponseWriter, r *http.Request, dir direction, source, dest, transport string, code int, start time.Time) {
	if dir == inbound && transport != "local" {
		transport = "tls"
		if r.ProtoMajor == 3 {
			transport = "quic"
		}
	}
	now := time.Now()
	elapsed := now.Sub(start)
	grpcCode, method := -1, ""
	if isGRPC(r) {
		grpcCode = grpcStatus(w.Header())
		method = p.m.methods.label(r.URL.Path)
	}
	p.traceEnd(r, dir, source, dest, transport, code, grpcCode, now)
	stdout, tap := p.listenerLogs(dir, transport)
	if tap != nil && p.tap != nil {
		p.tapRecord(tap, r, dir, code, grpcCode, start, elapsed)
	}
	// The line before the counts: a request counted has been logged.
	if p.accessLog || stdout {
		p.log.Info("request", "direction", dir, "method", r.Method, "authority", r.Host, "path", r.URL.Path,
			"source", source, "destination", dest, "transport", transport, "code", code, "duration", elapsed,
			"request_id", r.Header.Get(requestIDHeader), "grpc_status", grpcLabel(grpcCode))
	}
	p.m.requests.WithLabelValues(string(dir), source, dest, transport, codeLabel(code), grpcLabel(grpcCode), method).Inc()
	p.m.duration.WithLabelValues(string(dir), dest, method).Observe(elapsed.Seconds())
}

// listenerLogs returns the access logs of the listener a request came in
// on: Envoy's stdout logger, and its OpenTelemetry logger (a service's
// policy access_log=on puts both on its inbound listeners).
func (p *Proxy) listenerLogs(dir direction, transport string) (stdout bool, tap *config.Tap) {
	st := p.state.Load()
	if st == nil || st.cfg == nil {
		return false, nil
	}
	c := st.cfg
	switch {
	case dir == outbound:
		if c.Outbound != nil {
			return c.Outbound.AccessLog, c.Outbound.Tap
		}
	case transport == "quic":
		if c.InboundQUIC != nil {
			return c.InboundQUIC.AccessLog, c.InboundQUIC.Tap
		}
	default:
		if c.Inbound != nil {
			return c.Inbound.AccessLog, c.Inbound.Tap
		}
	}
	return false, nil
}

// grpcStatus is a gRPC answer's status: in its headers when the answer is
// trailers-only, else in its trailers; -1 if it has none (the caller went
// away, the upstream broke off).
func grpcStatus(h http.Header) int {
	v := h.Get("Grpc-Status")
	if v == "" {
		v = h.Get(http.TrailerPrefix + "Grpc-Status")
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

// grpcLabel is the grpc_status label of a gRPC status, "" for none.
func grpcLabel(code int) string {
	if code < 0 {
		return ""
	}
	return codeLabel(code)
}

// codeLabels are the response_code labels of the codes HTTP defines,
// formatted once.
var codeLabels = func() (l [600]string) {
	for c := range l {
		l[c] = strconv.Itoa(c)
	}
	return l
}()

func codeLabel(code int) string {
	if code >= 0 && code < len(codeLabels) {
		return codeLabels[code]
	}
	return strconv.Itoa(code)
}
