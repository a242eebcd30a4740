package gateway

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics count the gateway's requests by the service they named (empty
// for a path that named none: no label per unknown name) and status code.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "micromesh_gateway_requests_total",
			Help: "Requests the API gateway answered, by the service's namespace and name and the response code.",
		}, []string{"namespace", "service", "response_code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "micromesh_gateway_request_duration_seconds",
			Help:    "Time from a request's headers to its answer's last byte, by the service's namespace and name.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"namespace", "service"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration)
	}
	return m
}

func (m *metrics) record(t *target, code int, start time.Time) {
	ns, name := "", ""
	if t != nil {
		ns, name = t.ns, t.name
	}
	m.requests.WithLabelValues(ns, name, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(ns, name).Observe(time.Since(start).Seconds())
}

// observed counts and logs every request next answers — the token check's
// refusals too —, labelled with the service the handler found in its path
// (an observation in the request's context).
func (h *Handler) observed(next http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		w := &statusWriter{ResponseWriter: rw}
		obs := &observation{}
		defer func() {
			h.m.record(obs.target, w.code, start)
			h.log.Debug("request", "method", r.Method, "path", r.URL.Path, "code", w.code, "duration", time.Since(start))
		}()
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), observationKey{}, obs)))
	})
}

type observationKey struct{}

// observation is what the handler learnt of a request: its service.
type observation struct{ target *target }

// statusWriter remembers the status a handler answered.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer
// (Flush, EnableFullDuplex).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
