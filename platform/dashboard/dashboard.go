// Package dashboard is the mesh's web dashboard: the services that run,
// their instances and health, their endpoints with their fields, and a
// form to call any of them — served by `meshctl server` on
// 127.0.0.1:8082. It is a page and a script (static/, embedded) over two
// JSON sources: the registry's listing (/status) and the API gateway
// (/api/..., the gateway's own handler, so a call from the dashboard is
// the gateway's: the same mapping, rules and errors). docs/gateway.md.
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"

	"google.golang.org/protobuf/encoding/protojson"

	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
)

//go:embed static
var static embed.FS

// Options configure the dashboard.
type Options struct {
	// API is the API gateway's handler, served under /api.
	API http.Handler
	// Services lists the mesh's services with their instances.
	Services func(ctx context.Context) (*registryv1.ListServicesResponse, error)
}

// New returns the dashboard's handler.
func New(o Options) http.Handler {
	files, _ := fs.Sub(static, "static")
	mux := http.NewServeMux()
	page := http.FileServerFS(files)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "the dashboard's pages take GET", http.StatusMethodNotAllowed)
			return
		}
		page.ServeHTTP(w, r)
	})
	mux.Handle("/api/", http.StripPrefix("/api", o.API))
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		resp, err := o.Services(r.Context())
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(map[string]any{"code": http.StatusServiceUnavailable, "detail": "the registry: " + err.Error(), "status": "Service Unavailable"})
			return
		}
		b, err := protojson.Marshal(resp)
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			_ = json.NewEncoder(w).Encode(map[string]any{"code": http.StatusInternalServerError, "detail": err.Error(), "status": "Internal Server Error"})
			return
		}
		_, _ = w.Write(append(b, '\n'))
	})
	return headers(mux)
}

// headers keep the page to itself: its own scripts and styles only, in
// no one else's frame.
func headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		next.ServeHTTP(w, r)
	})
}
