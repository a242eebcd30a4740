package gateway

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/micromesh/micromesh/platform/edge"
)

// newMetrics counts the gateway's requests by the service they named
// (empty for a path that named none: no label per unknown name) and status
// code.
func newMetrics(reg prometheus.Registerer) *edge.Metrics {
	return edge.NewMetrics(reg, "micromesh_gateway", "Requests the API gateway answered", "response_code")
}

// record counts a request of the service t names (none: nil).
func record(m *edge.Metrics, t *target, code int, start time.Time) {
	ns, name := "", ""
	if t != nil {
		ns, name = t.ns, t.name
	}
	m.Record(ns, name, strconv.Itoa(code), start)
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
			record(h.m, obs.target, w.code, start)
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
