// Package dashboard is the mesh's web dashboard: the services that run,
// their instances and health, their endpoints with their fields, a form
// to call any of them (traced on request), each service's success rate,
// rate and latency and the calls between services, its traffic policy
// and split between versions (changed from forms), the requests a service takes as they happen
// (tap), and the traces the control plane
// keeps — served by `meshctl server` on 127.0.0.1:8082. It is a page and
// a script (static/, embedded) over these JSON sources: the registry's
// listing (/status), the API gateway (/api/..., the gateway's own
// handler, so a call from the dashboard is the gateway's: the same
// mapping, rules and errors), the stats API (/stats), the tap API (/tap,
// a stream of JSON lines), the trace API (/traces, /traces/ID), meshctl
// check's checks (/check), and the registry's operator policies and
// splits (POST /policy sets and clears keys, as meshctl policy; POST
// /split, as meshctl split). docs/gateway.md, docs/stats.md,
// docs/tracing.md.
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/micromesh/micromesh/controlplane/rollout"
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
	// Registry sets and clears operators' policy keys (nil: the policy is
	// shown, not changed).
	Registry registryv1.RegistryServiceClient
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
	if o.Registry != nil {
		mux.HandleFunc("POST /policy", func(w http.ResponseWriter, r *http.Request) { servePolicy(w, r, o.Registry) })
		mux.HandleFunc("POST /split", func(w http.ResponseWriter, r *http.Request) { serveSplit(w, r, o.Registry) })
		mux.HandleFunc("POST /rollout", func(w http.ResponseWriter, r *http.Request) { serveRollout(w, r, o.Registry) })
	}
	return headers(mux)
}

// policyChange is what POST /policy takes: keys of a service's operator
// policy to set and to clear, as meshctl policy set and clear take them.
type policyChange struct {
	serviceRef
	Set   map[string]string `json:"set"`
	Clear []string          `json:"clear"`
}

// serviceRef names the service a change is for.
type serviceRef struct {
	Service   string `json:"service"`
	Namespace string `json:"namespace"` // "": default
}

// decodeChange reads a change's JSON body into c (what names it, usage
// its form, for the message) and checks the service it names; false when
// it has answered the request with what is wrong.
func decodeChange(w http.ResponseWriter, r *http.Request, c interface{ ref() *serviceRef }, what, usage string) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(c); err != nil {
		writeError(w, http.StatusBadRequest, what+": a JSON body "+usage+": "+err.Error())
		return false
	}
	ref := c.ref()
	if ref.Namespace == "" {
		ref.Namespace = identity.DefaultNamespace
	}
	if err := identity.ValidateName("service name", ref.Service); err != nil {
		writeError(w, http.StatusBadRequest, what+": "+err.Error())
		return false
	}
	return true
}

func (r *serviceRef) ref() *serviceRef { return r }

// servePolicy changes a service's operator policy as meshctl policy does —
// the keys it names set or cleared, the operator's others kept — and
// answers the policy as it is then ({"keys": …}). The registry checks the
// keys: a bad one is a 400 naming it, and nothing changes.
func servePolicy(w http.ResponseWriter, r *http.Request, reg registryv1.RegistryServiceClient) {
	var c policyChange
	if !decodeChange(w, r, &c, "policy", `{"service":…,"namespace":…,"set":{"key":"value"},"clear":["key"]}`) {
		return
	}
	if len(c.Set) == 0 && len(c.Clear) == 0 {
		writeError(w, http.StatusBadRequest, "policy: nothing to set or clear")
		return
	}
	listed, err := reg.ListServices(r.Context(), &registryv1.ListServicesRequest{Namespace: c.Namespace})
	if err != nil {
		writeStatus(w, err)
		return
	}
	keys := map[string]string{}
	for _, p := range listed.GetPolicies() {
		if p.GetService() == c.Service && p.GetNamespace() == c.Namespace {
			maps.Copy(keys, p.GetKeys())
		}
	}
	for _, k := range c.Clear {
		delete(keys, k)
	}
	maps.Copy(keys, c.Set)
	if len(keys) == 0 {
		_, err = reg.DeletePolicy(r.Context(), &registryv1.DeletePolicyRequest{Service: c.Service, Namespace: c.Namespace})
		if status.Code(err) == codes.NotFound {
			err = nil // cleared already
		}
	} else {
		_, err = reg.SetPolicy(r.Context(), &registryv1.SetPolicyRequest{Policy: &registryv1.Policy{Service: c.Service, Namespace: c.Namespace, Keys: keys}})
	}
	if err != nil {
		writeStatus(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"keys": keys})
}

// splitChange is what POST /split takes: a service's split between its
// versions (shares in percent, adding up to 100; a header that picks a
// version whatever the shares), or clear to remove it.
type splitChange struct {
	serviceRef
	Versions map[string]uint32 `json:"versions"`
	Header   string            `json:"header"`
	Clear    bool              `json:"clear"`
}

// serveSplit sets or clears a service's split, as meshctl split set and
// clear do; the registry checks it (shares, versions, header) and its
// refusal is a 400 that says why.
func serveSplit(w http.ResponseWriter, r *http.Request, reg registryv1.RegistryServiceClient) {
	var c splitChange
	if !decodeChange(w, r, &c, "split", `{"service":…,"namespace":…,"versions":{"v1":90,"v2":10},"header":"x-version"} or {"service":…,"clear":true}`) {
		return
	}
	var err error
	switch {
	case c.Clear:
		_, err = reg.DeleteSplit(r.Context(), &registryv1.DeleteSplitRequest{Service: c.Service, Namespace: c.Namespace})
	case len(c.Versions) == 0:
		writeError(w, http.StatusBadRequest, "split: name the versions and their shares (v1=90 v2=10), or clear it")
		return
	default:
		sp := &registryv1.Split{Service: c.Service, Namespace: c.Namespace, Header: c.Header}
		for _, v := range slices.Sorted(maps.Keys(c.Versions)) {
			sp.Versions = append(sp.Versions, &registryv1.VersionWeight{Version: v, Weight: c.Versions[v]})
		}
		_, err = reg.SetSplit(r.Context(), &registryv1.SetSplitRequest{Split: sp})
	}
	if err != nil {
		writeStatus(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte("{}\n"))
}

// rolloutChange is what POST /rollout takes: a rollout to start (to; from
// as meshctl rollout start picks it when empty: the version with the
// largest share, else the only other one running), or abort.
type rolloutChange struct {
	serviceRef
	From   string `json:"from"`
	To     string `json:"to"`
	Retire bool   `json:"retire"`
	Abort  bool   `json:"abort"`
	// Interval and Deadline are Go durations ("2m"; "" for the
	// control plane's default step interval, and for no deadline), as
	// meshctl rollout start's --interval and --deadline.
	Interval string `json:"interval"`
	Deadline string `json:"deadline"`
}

// durationField reads a rollout's duration field: "" is 0.
func durationField(name, v string) (*durationpb.Duration, error) {
	if v == "" {
		return nil, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return nil, fmt.Errorf("rollout: %s %q is not a duration such as 90s or 2m", name, v)
	}
	return durationpb.New(d), nil
}

// serveRollout starts a rollout with meshctl rollout start's defaults, or
// aborts one; the control plane's refusal is a 4xx that says why.
func serveRollout(w http.ResponseWriter, r *http.Request, reg registryv1.RegistryServiceClient) {
	var c rolloutChange
	if !decodeChange(w, r, &c, "rollout", `{"service":…,"namespace":…,"to":"v2","retire":true,"interval":"1m","deadline":"10m"} or {"service":…,"abort":true}`) {
		return
	}
	var err error
	switch {
	case c.Abort:
		_, err = reg.AbortRollout(r.Context(), &registryv1.AbortRolloutRequest{Service: c.Service, Namespace: c.Namespace})
	case c.To == "":
		writeError(w, http.StatusBadRequest, "rollout: name the version to roll out (one started with meshctl run --version), or abort")
		return
	default:
		interval, ierr := durationField("interval", c.Interval)
		deadline, derr := durationField("deadline", c.Deadline)
		if ierr = errors.Join(ierr, derr); ierr != nil {
			writeError(w, http.StatusBadRequest, ierr.Error())
			return
		}
		from := c.From
		if from == "" {
			resp, lerr := reg.ListServices(r.Context(), &registryv1.ListServicesRequest{Namespace: c.Namespace})
			if lerr != nil {
				writeStatus(w, lerr)
				return
			}
			if from, err = rollout.From(c.Service, c.Namespace, c.To, resp); err != nil {
				writeError(w, http.StatusBadRequest, err.Error())
				return
			}
		}
		_, err = reg.StartRollout(r.Context(), &registryv1.StartRolloutRequest{Service: c.Service, Namespace: c.Namespace,
			Rollout: &registryv1.Rollout{From: from, To: c.To, Retire: c.Retire, Interval: interval, Deadline: deadline}})
	}
	if err != nil {
		writeStatus(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte("{}\n"))
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
	case codes.FailedPrecondition, codes.Aborted:
		code = http.StatusConflict
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
