package controlplane

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/controlplane/stats"
	"github.com/micromesh/micromesh/controlplane/tap"
	"github.com/micromesh/micromesh/controlplane/traces"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/identity/ca"
	"github.com/micromesh/micromesh/internal/profiling"
)

// metrics are the control plane's Prometheus metrics, on a registry of its
// own (no globals), served at /metrics on the admin port.
type metrics struct {
	reg      *prometheus.Registry
	handled  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	issued   *prometheus.CounterVec
	ready    atomic.Bool
}

func newMetrics(ca *ca.CA, own *identity.Source) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "micromesh_grpc_server_handled_total",
			Help: "RPCs completed on the control plane, by service, method and status code.",
		}, []string{"grpc_service", "grpc_method", "grpc_code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "micromesh_grpc_server_handling_seconds",
			Help:    "Time to complete unary RPCs on the control plane.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"grpc_service", "grpc_method"}),
		issued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "micromesh_identity_certificates_issued_total",
			Help: "Workload certificates issued, by method (sign: first certificate from a join token; renew).",
		}, []string{"method"}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.handled, m.duration, m.issued,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "micromesh_ca_intermediate_expiry_timestamp_seconds",
			Help: "When the CA's intermediate certificate expires (Unix time).",
		}, func() float64 { return float64(ca.IntermediateNotAfter().Unix()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "micromesh_controlplane_certificate_expiry_timestamp_seconds",
			Help: "When the control plane's own serving certificate expires (Unix time).",
		}, func() float64 { return float64(own.Current().Leaf().NotAfter.Unix()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "micromesh_ca_revoked_certificates",
			Help: "Unexpired certificates on the CA's revocation list (meshctl cert revoked).",
		}, func() float64 { return float64(ca.Revocations().Len()) }),
	)
	m.issued.WithLabelValues("sign")
	m.issued.WithLabelValues("renew")
	return m
}

// registerGRPC pre-creates the counters of every method, so they read 0
// rather than being absent before the first call.
func (m *metrics) registerGRPC(s *grpc.Server) {
	for svc, info := range s.GetServiceInfo() {
		for _, method := range info.Methods {
			m.handled.WithLabelValues(svc, method.Name, "OK")
		}
	}
}

func splitMethod(full string) (service, method string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndex(full, "/"); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}

func (m *metrics) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	svc, method := splitMethod(info.FullMethod)
	m.handled.WithLabelValues(svc, method, status.Code(err).String()).Inc()
	m.duration.WithLabelValues(svc, method).Observe(time.Since(start).Seconds())
	return resp, err
}

func (m *metrics) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	err := handler(srv, ss)
	svc, method := splitMethod(info.FullMethod)
	m.handled.WithLabelValues(svc, method, status.Code(err).String()).Inc()
	return err
}

// adminHandler serves /metrics, /healthz (alive) and /ready (serving).
func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{Registry: s.metrics.reg}))
	// Profiles, on the loopback admin port only.
	profiling.Mount(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !s.metrics.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return mux
}

// xdsMetrics describe the ADS server.
type xdsMetrics struct {
	pushes      *prometheus.CounterVec
	nacks       *prometheus.CounterVec
	connected   *prometheus.GaugeVec
	convergence prometheus.Histogram
	builds      prometheus.Histogram
}

func newXDSMetrics(reg prometheus.Registerer) *xdsMetrics {
	m := &xdsMetrics{
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "micromesh_xds_pushes_total",
			Help: "xDS responses sent to proxies, by resource type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "micromesh_xds_nacks_total",
			Help: "xDS responses proxies rejected, by resource type (the error is logged).",
		}, []string{"type"}),
		connected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "micromesh_xds_connected_proxies",
			Help: "Proxies with an open ADS stream, by kind.",
		}, []string{"kind"}),
		convergence: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "micromesh_xds_convergence_seconds",
			Help:    "From a registry change to a proxy's ACK of every resource type it changed.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		builds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "micromesh_xds_push_seconds",
			Help:    "Time to build and set the snapshots of every connected proxy after a change.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
	}
	for _, t := range []string{"LDS", "RDS", "CDS", "EDS", "SDS"} {
		m.pushes.WithLabelValues(t)
		m.nacks.WithLabelValues(t)
	}
	reg.MustRegister(m.pushes, m.nacks, m.connected, m.convergence, m.builds)
	return m
}

// registerStats exports the stats collector's counts.
func (m *metrics) registerStats(c *stats.Collector) {
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "micromesh_stats_exports_total", Help: "Exports of request metrics from proxies that the control plane keeps."},
			func() float64 { n, _ := c.Stats(); return float64(n) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "micromesh_stats_rejected_total", Help: "Data points of request metrics refused as malformed (OTLP partial success)."},
			func() float64 { _, n := c.Stats(); return float64(n) }),
	)
}

// registerTap exports the tap collector's count.
func (m *metrics) registerTap(c *tap.Collector) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "micromesh_tap_records_total", Help: "Access log records proxies sent the control plane (meshctl tap)."},
		func() float64 { return float64(c.Records()) }))
}

// registerTraces exports the trace collector's, store's and forwarder's
// counts.
func (m *metrics) registerTraces(c *traces.Collector, st *traces.Store, f *traces.Forwarder) {
	if f != nil {
		m.reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "micromesh_spans_forwarded_total", Help: "Spans sent on to the collector of --traces-forward."},
				func() float64 { n, _ := f.Stats(); return float64(n) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "micromesh_spans_forward_dropped_total", Help: "Spans not sent on: the forward queue full, or the collector away or refusing."},
				func() float64 { _, n := f.Stats(); return float64(n) }),
		)
	}
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "micromesh_spans_received_total", Help: "Spans proxies exported that the control plane keeps."},
			func() float64 { n, _ := c.Stats(); return float64(n) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "micromesh_spans_rejected_total", Help: "Spans refused as malformed (OTLP partial success)."},
			func() float64 { _, n := c.Stats(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "micromesh_spans_kept", Help: "Spans the control plane keeps now."},
			func() float64 { return float64(st.Count()) }),
	)
}
