// Package dashboard is the mesh's web dashboard: the services that run,
// their instances and health, their endpoints with their fields, a form
// to call any of them (traced on request), each service's success rate,
// rate and latency and the calls between services, the requests a
// service takes as they happen (tap), and the traces the control plane
// keeps — served by `meshctl server` on 127.0.0.1:8082. It is a page and
// a script (static/, embedded) over these JSON sources: the registry's
// listing (/status), the API gateway (/api/..., the gateway's own
// handler, so a call from the dashboard is the gateway's: the same
// mapping, rules and errors), the stats API (/stats), the tap API (/tap,
// a stream of JSON lines), the trace API (/traces, /traces/ID), and
// meshctl check's checks (/check). docs/gateway.md, docs/stats.md,
// docs/tracing.md.
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/meshcheck"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
	statsv1 "github.com/micromesh/micromesh/proto/stats/v1"
	tapv1 "github.com/micromesh/micromesh/proto/tap/v1"
	tracev1 "github.com/micromesh/micromesh/proto/trace/v1"
)

//go:embed static
var static embed.FS

// Options configure the dashboard.
type Options struct {
	// API is the API gateway's handler, served under /api.
	API http.Handler
	// Services lists the mesh's services with their instances.
	Services func(ctx context.Context) (*registryv1.ListServicesResponse, error)
	// Traces reads the traces the control plane keeps (nil: none shown).
	Traces tracev1.TraceServiceClient
	// Stats reads the services' request figures (nil: none shown).
	Stats statsv1.StatsServiceClient
	// Check checks the mesh (meshctl check's checks; nil: no health view).
	Check func(ctx context.Context) []meshcheck.Result
	// Tap watches a service's requests live (nil: no live view).
	Tap tapv1.TapServiceClient
}

// TapMax bounds a tap from the dashboard: a tab left open does not keep a
// service's proxies sending for ever (the page says so and offers to tap
// again).
const TapMax = 5 * time.Minute

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
		resp, err := o.Services(r.Context())
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "the registry: "+err.Error())
			return
		}
		writeProto(w, resp)
	})
	if o.Traces != nil {
		mux.HandleFunc("GET /traces", func(w http.ResponseWriter, r *http.Request) {
			q := r.URL.Query()
			req := &tracev1.ListTracesRequest{Service: q.Get("service"), ErrorsOnly: q.Get("errors") == "1", Limit: 50}
			resp, err := o.Traces.ListTraces(r.Context(), req)
			if err != nil {
				writeStatus(w, err)
				return
			}
			writeProto(w, resp)
		})
		mux.HandleFunc("GET /traces/{id}", func(w http.ResponseWriter, r *http.Request) {
			resp, err := o.Traces.GetTrace(r.Context(), &tracev1.GetTraceRequest{TraceId: r.PathValue("id")})
			if err != nil {
				writeStatus(w, err)
				return
			}
			writeProto(w, resp)
		})
	}
	if o.Stats != nil {
		mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
			q := r.URL.Query()
			resp, err := o.Stats.GetStats(r.Context(), &statsv1.GetStatsRequest{Namespace: q.Get("namespace"), ByMethod: q.Get("methods") == "1"})
			if err != nil {
				writeStatus(w, err)
				return
			}
			writeProto(w, resp)
		})
	}
	if o.Check != nil {
		mux.HandleFunc("GET /check", func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
			defer cancel()
			results := o.Check(ctx)
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"checks": results, "failed": meshcheck.Failed(results)})
		})
	}
	if o.Tap != nil {
		mux.HandleFunc("GET /tap", func(w http.ResponseWriter, r *http.Request) { serveTap(w, r, o) })
	}
	return headers(mux)
}

// tapJSON writes every field, zeros too: gRPC status 0 (OK) is not -1
// (not gRPC).
var tapJSON = protojson.MarshalOptions{EmitUnpopulated: true}

// serveTap streams a service's requests as they end, one JSON object a
// line (micromesh.tap.v1.WatchResponse), until the page stops reading or
// TapMax has passed. The service must be the registry's: a tap of a name
// that is not says so rather than wait for ever.
func serveTap(w http.ResponseWriter, r *http.Request, o Options) {
	q := r.URL.Query()
	name, ns := q.Get("service"), q.Get("namespace")
	if ns == "" {
		ns = identity.DefaultNamespace
	}
	if err := identity.ValidateName("service name", name); err != nil {
		writeError(w, http.StatusBadRequest, "tap: "+err.Error())
		return
	}
	if err := identity.ValidateName("namespace", ns); err != nil {
		writeError(w, http.StatusBadRequest, "tap: "+err.Error())
		return
	}
	listed, err := o.Services(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "the registry: "+err.Error())
		return
	}
	if !slices.ContainsFunc(listed.GetServices(), func(s *registryv1.Service) bool { return s.GetName() == name && s.GetNamespace() == ns }) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("tap: %s is not a service in namespace %s", name, ns))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), TapMax)
	defer cancel()
	stream, err := o.Tap.Watch(ctx, &tapv1.WatchRequest{Namespace: ns, Service: name})
	if err == nil {
		_, err = stream.Header() // watching: the proxies send from the next push
	}
	if err != nil {
		writeStatus(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	for {
		m, err := stream.Recv()
		if err != nil {
			return // the page went, TapMax passed, or the control plane did
		}
		b, err := tapJSON.Marshal(m)
		if err != nil {
			return
		}
		if _, err := w.Write(append(b, '\n')); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// writeProto answers m as JSON.
func writeProto(w http.ResponseWriter, m proto.Message) {
	b, err := protojson.Marshal(m)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}

// writeStatus answers a gRPC error with its HTTP code and message.
func writeStatus(w http.ResponseWriter, err error) {
	code := http.StatusServiceUnavailable
	switch status.Code(err) {
	case codes.InvalidArgument:
		code = http.StatusBadRequest
	case codes.NotFound:
		code = http.StatusNotFound
	case codes.PermissionDenied:
		code = http.StatusForbidden
	}
	writeError(w, code, status.Convert(err).Message())
}

// writeError answers an error as the gateway does: {code, detail, status}.
func writeError(w http.ResponseWriter, code int, detail string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"code": code, "detail": detail, "status": http.StatusText(code)})
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
