package dataplane

import (
	"encoding/json"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/micromesh/micromesh/internal/profiling"
)

// adminHandler serves /ready, /config_dump, /clusters, /metrics,
// /debug/pprof/ and the app's OTLP/HTTP trace export (/v1/traces) on
// loopback.
func (s *Sidecar) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("POST /drain", func(w http.ResponseWriter, _ *http.Request) {
		s.Drain()
		_, _ = w.Write([]byte("draining: deregistered, still serving\n"))
	})
	mux.HandleFunc("GET /config_dump", s.configDump)
	mux.HandleFunc("GET /clusters", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]any{"clusters": s.proxy.Clusters()})
	})
	mux.HandleFunc("POST /v1/traces", s.appTraces)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	profiling.Mount(mux)
	return mux
}

// configDump writes the resources in force, Envoy-style JSON (the fields
// the proxy reads, with proto JSON names), with the xDS client's state.
func (s *Sidecar) configDump(w http.ResponseWriter, _ *http.Request) {
	r := s.xds.Resources()
	st := s.xds.Status()
	dump := map[string]any{
		"node":      s.Info().NodeID,
		"connected": st.Connected,
		"versions":  st.Versions,
		"last_nack": st.LastNACK,
		"listeners": r.Listeners,
		"routes":    r.Routes,
		"clusters":  r.Clusters,
		"endpoints": r.Endpoints,
		"secrets":   r.Secrets,
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(dump)
}
