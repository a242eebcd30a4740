// Package proxy is the built-in proxy's request path: the outbound handler
// (the app's calls, routed by authority to a cluster), the inbound handler
// (mTLS callers, authorized per request by the RBAC rules, forwarded to the
// app with their identity), upstream transports (HTTP/3 over QUIC, HTTP/2
// over TLS, loopback HTTP/1.1 or h2c), load balancing, outlier detection,
// retries, circuit breakers and metrics. It serves from an immutable
// config.Config, swapped atomically by Apply.
package proxy

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlogwriter"

	"github.com/micromesh/micromesh/dataplane/config"
	"github.com/micromesh/micromesh/dataplane/tracing"
	"github.com/micromesh/micromesh/identity"
)

// Proxy serves the outbound and inbound sides of one workload.
type Proxy struct {
	self      string // this workload, "name.namespace", for metrics
	creds     *identity.Source
	log       *slog.Logger
	accessLog bool
	m         *metrics
	tm        tunnelMetrics
	peers     peerCache
	qlog      QUICTracer
	spans     SpanRecorder // nil: no tracing
	tap       TapRecorder  // nil: no access log records to the control plane
	// recording counts recorded requests in flight (tracedSpan's fast
	// path); a request that never ends its span leaves it above zero,
	// which costs only the fast path.
	recording atomic.Int32

	mu    sync.Mutex // one Apply at a time
	state atomic.Pointer[state]
	// faultsActive counts the requests in a fault (delayed or being
	// answered), for faults' MaxActive.
	faultsActive atomic.Int64

	// warm is closed once a config has everything it refers to (or the
	// initial fetch timeout has passed since the first Apply): until then
	// the app's calls wait instead of failing for want of a route or
	// endpoints that are on their way.
	warm       chan struct{}
	warmOnce   sync.Once
	warmTimer  *time.Timer
	warmWithin time.Duration
}

// state is a config with the upstreams built for it.
type state struct {
	cfg       *config.Config
	upstreams map[string]*upstream
	limits    *limits // local rate limits with their buckets
}

// Options configure New.
type Options struct {
	Self      string // "name.namespace" of the workload
	Logger    *slog.Logger
	AccessLog bool // log every request (info level)
	Metrics   Registerer
	// QUICTracer, if set, traces every QUIC connection to upstreams
	// (package qlogdir).
	QUICTracer QUICTracer
	// InitialFetchTimeout bounds how long the app's first calls wait for
	// the resources the first config refers to (default
	// DefaultInitialFetchTimeout; Envoy's initial_fetch_timeout).
	InitialFetchTimeout time.Duration
	// Spans, if set, takes the spans of traced requests (listeners with
	// tracing); without it no request is traced.
	Spans SpanRecorder
	// Tap, if set, takes the access log records of listeners with Envoy's
	// OpenTelemetry access logger; without it none are made.
	Tap TapRecorder
}

// DefaultInitialFetchTimeout is Options.InitialFetchTimeout's default.
const DefaultInitialFetchTimeout = 10 * time.Second

// QUICTracer is a quic.Config Tracer.
type QUICTracer = func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace

// New returns a proxy that presents creds' certificate. It serves 503 until
// the first Apply; after it, the app's calls wait until the config is
// complete (Config.Missing) or InitialFetchTimeout has passed.
func New(creds *identity.Source, o Options) *Proxy {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.InitialFetchTimeout <= 0 {
		o.InitialFetchTimeout = DefaultInitialFetchTimeout
	}
	p := &Proxy{self: o.Self, creds: creds, log: o.Logger, accessLog: o.AccessLog, m: newMetrics(o.Metrics), tm: newTunnelMetrics(), qlog: o.QUICTracer, spans: o.Spans, tap: o.Tap,
		warm: make(chan struct{}), warmWithin: o.InitialFetchTimeout}
	if creds != nil {
		if c := creds.Current(); c != nil {
			p.peers.by = c.ID.String()
		}
	}
	if o.Metrics != nil {
		o.Metrics.MustRegister(p.tm.collectors()...)
		o.Metrics.MustRegister(quicCollector{p})
		o.Metrics.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "micromesh_config_warming",
			Help: "1 while the app's calls wait for the first complete config (routes and endpoints it refers to), else 0.",
		}, func() float64 {
			select {
			case <-p.warm:
				return 0
			default:
				return 1
			}
		}))
	}
	return p
}

// warmed ends the warm-up: calls stop waiting.
func (p *Proxy) warmed(why string) {
	p.warmOnce.Do(func() {
		close(p.warm)
		if why != "" {
			p.log.Warn(why)
		}
	})
}

// Apply swaps in cfg. Clusters whose transport is unchanged keep their
// connections and endpoint state; removed clusters' connections are closed
// once requests in flight have had time to finish.
func (p *Proxy) Apply(cfg *config.Config) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev := p.state.Load()
	next := &state{cfg: cfg, upstreams: make(map[string]*upstream, len(cfg.Clusters))}
	var prevLimits *limits
	if prev != nil {
		prevLimits = prev.limits
	}
	next.limits = keepLimits(prevLimits, cfg)
	// A new revocation list: handshakes and requests of callers are
	// checked against it from now on, and connections to upstreams are
	// made anew (the old ones close once their requests are done), each
	// checked against it in its handshake.
	var prevRevoked *identity.Revocations
	if prev != nil {
		prevRevoked = prev.cfg.Revocations
	}
	newRevocations := !bytes.Equal(prevRevoked.PEM(), cfg.Revocations.PEM())
	if newRevocations {
		if p.creds != nil {
			p.creds.SetRevocations(cfg.Revocations)
		}
		p.peers.setRevocations(cfg.Revocations)
		if prev != nil {
			p.log.Info("new revocation list", "revoked_certificates", cfg.Revocations.Len())
		}
	}
	for name, c := range cfg.Clusters {
		var old *upstream
		if prev != nil {
			old = prev.upstreams[name]
		}
		if newRevocations && old != nil && (c.Transport == config.TransportTLS || c.Transport == config.TransportQUIC) {
			old = &upstream{cluster: old.cluster, lb: old.lb} // the balancer's state stays, not the connections
		}
		u, err := p.newUpstream(c, old)
		if err != nil {
			return err
		}
		next.upstreams[name] = u
	}
	p.state.Store(next)
	if missing := cfg.Missing(); len(missing) == 0 {
		p.warmed("")
		if p.warmTimer != nil {
			p.warmTimer.Stop()
		}
	} else if p.warmTimer == nil {
		p.warmTimer = time.AfterFunc(p.warmWithin, func() {
			missing := p.state.Load().cfg.Missing()
			p.warmed(fmt.Sprintf("the control plane has not sent everything the config refers to within %v; serving without it (missing: %s)",
				p.warmWithin, strings.Join(missing, ", ")))
		})
	}
	if prev != nil {
		var stale []func()
		for name, u := range prev.upstreams {
			if n, ok := next.upstreams[name]; !ok || n.rt != u.rt {
				stale = append(stale, u.close)
			}
		}
		if len(stale) > 0 {
			time.AfterFunc(time.Minute, func() {
				for _, c := range stale {
					c()
				}
			})
		}
	}
	return nil
}

// Config returns the config in force (nil before the first Apply).
func (p *Proxy) Config() *config.Config {
	if s := p.state.Load(); s != nil {
		return s.cfg
	}
	return nil
}

// Close closes every upstream's connections.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.warmTimer != nil {
		p.warmTimer.Stop()
	}
	p.mu.Unlock()
	p.warmed("") // nobody waits on a proxy that is closing
	if s := p.state.Load(); s != nil {
		for _, u := range s.upstreams {
			u.close()
		}
	}
}

// Outbound returns the handler of the app's outbound calls.
func (p *Proxy) Outbound() http.Handler { return http.HandlerFunc(p.serveOutbound) }

// Inbound returns the handler of mTLS callers (over TCP+TLS or QUIC).
func (p *Proxy) Inbound() http.Handler { return http.HandlerFunc(p.serveInbound) }

// awaitWarm holds the app's call (or connection) while the first config
// is still arriving, until it is complete or the initial fetch timeout
// has passed; false if ctx ended first.
func (p *Proxy) awaitWarm(ctx context.Context) bool {
	select {
	case <-p.warm:
		return true
	default:
	}
	if p.state.Load() == nil { // no config at all: the caller says so at once
		return true
	}
	select {
	case <-p.warm:
		return true
	case <-ctx.Done():
		return false
	}
}

func (p *Proxy) serveOutbound(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if !p.awaitWarm(r.Context()) {
		return
	}
	st := p.state.Load()
	if st == nil || st.cfg.Outbound == nil {
		p.local(w, r, outbound, "", http.StatusServiceUnavailable, "micromesh: the sidecar has no configuration yet", start)
		return
	}
	if st.cfg.Outbound.RequestID {
		ensureRequestID(r.Header)
	}
	o := st.cfg.Outbound
	if o.Tracing != nil {
		r = p.traceStart(w, r, o.Tracing, tracing.KindClient, start)
	}
	if r.Method == http.MethodConnect {
		p.local(w, r, outbound, "", http.StatusMethodNotAllowed,
			"micromesh: the outbound listener does not proxy CONNECT: the app reaches a TCP service at a loopback port of its sidecar (--upstream SERVICE=PORT)", start)
		return
	}
	routes := st.cfg.Routes[o.Route]
	host := authority(r.Host)
	var route *config.Route
	known := false
	if routes != nil {
		route, known = routes.LookupRequest(host, routeRequest(routes, r))
	}
	// What the request is counted against: the authority when it is one
	// of the config's domains (bounded), "*" when a wildcard host takes
	// it, else "unknown" — an app's stray or random Host values must not
	// each make a metric series (Istio's destination_service="unknown").
	dest := host
	switch {
	case !known:
		dest = UnknownDestination
	case !routes.HasHost(host):
		dest = "*"
	}
	// The fault and rate limit filters come before the router and its
	// replies, in the listener's order.
	var cluster string
	if route != nil {
		cluster = clusterOf(route) // picked once: the fault's upstream_cluster is the one the request goes to
	}
	fault := faultFor(o.FaultFilter, route, o.Fault)
	if fault != nil && o.FaultFirst && p.faulted(fault, w, r, cluster, faultRequest(fault, r), dest, start) {
		return
	}
	if p.rateLimited(st.limits.bucketFor(o.RateLimitFilter, route, st.limits.listeners[o.Name]), w, r, outbound, p.self, dest, start) {
		return
	}
	if fault != nil && !o.FaultFirst && p.faulted(fault, w, r, cluster, faultRequest(fault, r), dest, start) {
		return
	}
	if routes == nil {
		p.local(w, r, outbound, "", http.StatusServiceUnavailable, "micromesh: the sidecar has not received its routes yet", start)
		return
	}
	if !known {
		p.local(w, r, outbound, dest, http.StatusServiceUnavailable,
			fmt.Sprintf("micromesh: %q is not a service in the mesh this workload can call (it can call: %s)", host, strings.Join(routes.Hosts, ", ")), start)
		return
	}
	if route == nil {
		p.local(w, r, outbound, dest, http.StatusNotFound, fmt.Sprintf("micromesh: no route of %q takes the path %q", host, r.URL.Path), start)
		return
	}
	up := st.upstreams[cluster]
	if up == nil {
		p.local(w, r, outbound, cluster, http.StatusServiceUnavailable, "micromesh: cluster "+cluster+" is not configured yet", start)
		return
	}
	var mirrors []mirrorTarget
	if len(route.Mirrors) > 0 {
		mirrors = p.mirrorsFor(st, route)
	}
	p.forward(w, r, route, up, mirrors, outbound, peer{}, start)
}

func (p *Proxy) serveInbound(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	st := p.state.Load()
	var lst *config.Inbound
	if st != nil {
		lst = st.cfg.Inbound
		if r.ProtoMajor == 3 {
			lst = st.cfg.InboundQUIC
		}
	}
	if lst == nil {
		p.local(w, r, inbound, "", http.StatusServiceUnavailable, "micromesh: the sidecar has no inbound configuration yet", start)
		return
	}
	if lst.RequestID {
		ensureRequestID(r.Header)
	}
	if lst.Tracing != nil {
		r = p.traceStart(w, r, lst.Tracing, tracing.KindServer, start)
	}
	caller := p.peers.peer(r)
	if caller.id == "" {
		// The handshake requires and verifies a certificate; this is a bug.
		p.local(w, r, inbound, "", http.StatusUnauthorized, "micromesh: no verified client certificate", start)
		return
	}
	if caller.revoked != "" {
		// Revoked after the connection was made (a new one is refused in
		// its handshake).
		p.m.denied.Inc()
		p.localFor(w, r, inbound, caller.workload, p.self, http.StatusForbidden, "micromesh: "+caller.revoked, start)
		return
	}
	if dotSegment(r.URL.Path) {
		// The app may resolve "a/../b" to "b" after the rules judged
		// "a/…": refused rather than judged on another path than the one
		// served.
		p.localFor(w, r, inbound, caller.workload, p.self, http.StatusBadRequest,
			fmt.Sprintf("micromesh: the path %q has a . or .. segment; send the path it stands for", r.URL.Path), start)
		return
	}
	// As Envoy's forward_client_cert_details SANITIZE (its default): a
	// client's own claim about client certificates never reaches the app;
	// SANITIZE_SET puts the proxy's own.
	r.Header.Del("X-Forwarded-Client-Cert")
	if lst.SetXFCC {
		v := caller.xfcc
		if lst.XFCCURI {
			v = caller.xfccURI
		}
		r.Header["X-Forwarded-Client-Cert"] = []string{v}
	}
	if r.Method == http.MethodConnect && !lst.Connect {
		// As Envoy's upgrade_failed.
		p.localFor(w, r, inbound, caller.workload, p.self, http.StatusForbidden,
			fmt.Sprintf("micromesh: %s takes no CONNECT: it is not a TCP service", p.self), start)
		return
	}
	route, _ := lst.Route.LookupRequest(authority(r.Host), routeRequest(lst.Route, r))
	limit := st.limits.bucketFor(lst.RateLimitFilter, route, st.limits.listeners[lst.Name])
	var claims map[string]any
	if lst.JWT != nil {
		var err error
		if claims, err = lst.JWT.Check(r.URL.Path, r.Header, start); err != nil {
			p.m.denied.Inc()
			w.Header().Set("Www-Authenticate", `Bearer realm="micromesh", error="invalid_token"`)
			p.localFor(w, r, inbound, caller.workload, p.self, http.StatusUnauthorized,
				fmt.Sprintf("micromesh: %s: %v (meshctl login, or the gateway's /_/token, gives one)", p.self, err), start)
			return
		}
	}
	if lst.RateLimitBeforeRBAC && p.rateLimited(limit, w, r, inbound, caller.workload, p.self, start) {
		return
	}
	if lst.RBAC != nil {
		req := config.Request{Principal: caller.id, Method: r.Method, Path: r.URL.Path, Header: config.HeaderOf(r.Header), Claims: claims}
		if lst.JWT != nil {
			req.ClaimsKey = lst.JWT.PayloadKey()
		}
		if ok, _, byClaims := lst.RBAC.Decide(req); !ok {
			p.m.denied.Inc()
			msg := fmt.Sprintf("micromesh: RBAC: %s may not call %s %s on %s", caller.id, r.Method, r.URL.Path, p.self)
			if byClaims {
				msg = accountRefusal(p.self, r, claims)
			}
			p.localFor(w, r, inbound, caller.workload, p.self, http.StatusForbidden, msg, start)
			return
		}
	}
	if !lst.RateLimitBeforeRBAC && p.rateLimited(limit, w, r, inbound, caller.workload, p.self, start) {
		return
	}
	if route == nil {
		msg := "micromesh: no inbound route"
		if lst.Connect && r.Method != http.MethodConnect {
			msg = fmt.Sprintf("micromesh: %s is a TCP service: its callers reach it through an upstream port of their sidecar (--upstream), or meshctl port-forward", p.self)
		}
		p.local(w, r, inbound, "", http.StatusNotFound, msg, start)
		return
	}
	cluster := clusterOf(route)
	up := st.upstreams[cluster]
	if up == nil {
		p.local(w, r, inbound, cluster, http.StatusServiceUnavailable, "micromesh: the app's cluster is not configured yet", start)
		return
	}
	if route.Tunnel {
		p.tunnelIn(w, r, route, up, caller, start)
		return
	}
	p.forward(w, r, route, up, nil, inbound, caller, start)
}

// dotSegment reports whether path (decoded) has a "." or ".." segment.
func dotSegment(path string) bool {
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// clusterOf returns the cluster a request on route goes to: the route's
// own, or one of its split's, picked at random as Envoy's weighted_clusters
// do (the request's retries stay there).
func clusterOf(route *config.Route) string {
	if s := route.Split; s != nil {
		return s.Pick(rand.Uint32N(s.Total))
	}
	return route.Cluster
}

// faultRequest is what a fault's conditions read of r: its headers only
// when the fault has header conditions.
func faultRequest(f *config.Fault, r *http.Request) config.Request {
	q := config.Request{Method: r.Method, Path: r.URL.Path}
	if len(f.Headers) > 0 {
		q.Header = config.HeaderOf(r.Header)
	}
	return q
}

// routeRequest is what route matching reads of r: its headers only when
// some route of t matches on them (reading them costs an allocation).
func routeRequest(t *config.RouteTable, r *http.Request) config.Request {
	q := config.Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery}
	if t != nil && t.HeaderConditions {
		q.Header = config.HeaderOf(r.Header)
	}
	return q
}

// accountRefusal says why the rules on accounts refused a request: it
// carries no access token, or its account lacks what the service's policy
// asks for.
func accountRefusal(self string, r *http.Request, claims map[string]any) string {
	if claims == nil {
		return fmt.Sprintf("micromesh: RBAC: %s %s on %s needs an account's access token (Authorization: Bearer; meshctl login, or the gateway's /_/token); the call carries none", r.Method, r.URL.Path, self)
	}
	name, _ := claims["name"].(string)
	ns, _ := claims["ns"].(string)
	var scopes []string
	if l, ok := claims["scopes"].([]any); ok {
		for _, s := range l {
			if s, ok := s.(string); ok {
				scopes = append(scopes, s)
			}
		}
	}
	if len(scopes) == 0 {
		scopes = []string{"none"}
	}
	return fmt.Sprintf("micromesh: RBAC: account %s of namespace %s (scopes: %s) may not call %s %s on %s: its policy asks for other scopes or namespace (meshctl services shows them)",
		name, ns, strings.Join(scopes, ", "), r.Method, r.URL.Path, self)
}
