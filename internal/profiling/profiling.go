// Package profiling mounts Go's runtime profiles (net/http/pprof) on an
// admin mux. Admin ports bind loopback, so profiles are for whoever is on
// the machine: `go tool pprof http://<admin>/debug/pprof/profile`.
package profiling

import (
	"net/http"
	"net/http/pprof"
)

// Mount serves /debug/pprof/ (index and named profiles such as heap and
// goroutine), /debug/pprof/profile (CPU) and /debug/pprof/trace on mux.
func Mount(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}
