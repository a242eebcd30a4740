package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/platform/edge"
	"github.com/micromesh/micromesh/platform/tenancy"
	"github.com/micromesh/micromesh/service/endpoints"
	merrors "github.com/micromesh/micromesh/service/errors"
	"github.com/micromesh/micromesh/xds"
)

// MaxBody bounds a request's JSON body (and each message of a stream).
const MaxBody = 4 << 20

// DefaultTimeout bounds a unary call through the gateway: 504 after it.
const DefaultTimeout = 30 * time.Second

// describeTTL is how long a service's endpoints are used before they are
// asked again; a path that names none is looked up again after
// describeRetry (the service may have been updated).
const (
	describeTTL   = 30 * time.Second
	describeRetry = time.Second
)

// HandlerOptions configure a Handler.
type HandlerOptions struct {
	// Namespace is that of services a path names without one.
	Namespace string
	// Timeout bounds a unary call (default 30 s); streams are not bounded.
	Timeout time.Duration
	// Outbound is the gateway's sidecar's outbound listener.
	Outbound string
	// Hosts lists the authorities the sidecar routes (name.namespace);
	// Routes tells whether it routes one.
	Hosts     func() []string
	Routes    func(authority string) bool
	Protocols Protocols
	// Metrics, if set, gets the gateway's metrics.
	Metrics prometheus.Registerer
	Logger  *slog.Logger
}

// Handler maps HTTP requests to the mesh's services (see the package
// comment and docs/gateway.md).
type Handler struct {
	o     HandlerOptions
	conn  *grpc.ClientConn
	proxy *httputil.ReverseProxy
	log   *slog.Logger
	m     *edge.Metrics

	mu   sync.Mutex
	sets map[string]described // by authority
}

type described struct {
	set *endpoints.Set
	at  time.Time
}

// NewHandler returns a handler that calls through the sidecar at
// o.Outbound.
func NewHandler(o HandlerOptions) (*Handler, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	// One HTTP/2 connection to the sidecar carries every call: the
	// authority, per call, picks the service.
	conn, err := grpc.NewClient("passthrough:///"+o.Outbound, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	h := &Handler{o: o, conn: conn, log: o.Logger, sets: map[string]described{}, m: newMetrics(o.Metrics)}
	h.proxy = &httputil.ReverseProxy{
		Rewrite:   func(*httputil.ProxyRequest) {}, // set per request (forward)
		Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second, DisableCompression: true},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			writeError(w, &merrors.Error{ID: "gateway", Code: codes.Unavailable, Detail: "the gateway's sidecar: " + err.Error()})
		},
	}
	return h, nil
}

// Close closes the connections to the sidecar.
func (h *Handler) Close() {
	_ = h.conn.Close()
	h.proxy.Transport.(*http.Transport).CloseIdleConnections()
}

// target is the service a request's path names.
type target struct {
	name, ns  string
	authority string // name.ns
	segment   string // as the path wrote it
	rest      string // the path after it, escaped ("" or "/...")
	path      string // rest unescaped
}

// parseTarget reads the service a path names from its first segment:
// NAME (of namespace ns) or NAME.NAMESPACE.
func parseTarget(escapedPath, ns string) (*target, error) {
	esc := strings.TrimPrefix(escapedPath, "/")
	seg, rest, _ := strings.Cut(esc, "/")
	if rest != "" || strings.HasSuffix(esc, "/") {
		rest = "/" + rest
	}
	name, named, err := identity.SplitService(seg)
	if err != nil {
		return nil, merrors.NotFound("gateway", "a path starts with the service it calls, /NAME/... or /NAME.NAMESPACE/...: %v", err)
	}
	if named != "" {
		ns = named
	}
	path, err := url.PathUnescape(rest)
	if err != nil {
		return nil, merrors.BadRequest("gateway", "path %q: %v", escapedPath, err)
	}
	return &target{name: name, ns: ns, authority: name + "." + ns, segment: seg, rest: rest, path: path}, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/" {
		h.index(w, r)
		return
	}
	t, err := h.target(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if obs, ok := r.Context().Value(observationKey{}).(*observation); ok {
		obs.target = t
	}
	proto, err := h.o.Protocols.Protocol(r.Context(), t.ns, t.name)
	if err != nil {
		writeError(w, &merrors.Error{ID: "gateway", Code: codes.Unavailable, Detail: err.Error()})
		return
	}
	switch proto {
	case xds.ProtocolGRPC:
		h.rpc(w, r, t)
	case xds.ProtocolTCP:
		writeError(w, &merrors.Error{ID: "gateway", Code: codes.FailedPrecondition,
			Detail: fmt.Sprintf("%s is a TCP service, not an HTTP one: the gateway does not reach it (services reach it with --upstream; meshctl port-forward from a terminal)", t.name)})
	default:
		h.forward(w, r, t)
	}
}

// target is the service r's path names, one the gateway serves.
func (h *Handler) target(r *http.Request) (*target, error) {
	t, err := parseTarget(r.URL.EscapedPath(), h.o.Namespace)
	if err != nil {
		return nil, err
	}
	if t.ns == xds.SystemNamespace {
		// Those that act in the account's namespace, for a request with a
		// verified token (passed on: the service binds the call to it).
		// Without one the call would act as the gateway, a platform
		// identity, in any namespace.
		if !slices.Contains(tenancy.Services, t.name) {
			return nil, merrors.NotFound("gateway", "the platform's %s is not served through the API gateway (%s are, to accounts' requests); call it with meshctl", t.name, strings.Join(tenancy.Services, ", "))
		}
		if userOf(r.Context()) == nil {
			return nil, merrors.Unauthorized("gateway", "the platform's %s acts in an account's namespace: send its access token (Authorization: Bearer; POST %s)", t.name, TokenPath)
		}
	}
	if !h.o.Routes(t.authority) {
		if h.o.Routes(t.name + "." + xds.SystemNamespace) {
			return nil, merrors.NotFound("gateway", "%s is one of the platform's services: /%s.%s/… with an account's access token (it acts in the account's namespace), or meshctl", t.name, t.name, xds.SystemNamespace)
		}
		return nil, merrors.NotFound("gateway", "no service %s in namespace %s (GET / lists the services)", t.name, t.ns)
	}
	return t, nil
}

// index lists the services the gateway serves, with their paths.
func (h *Handler) index(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, "GET, HEAD", "GET / lists the services; call one at /NAME/...")
		return
	}
	type svc struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
		Path      string `json:"path"`
	}
	list := []svc{}
	user := userOf(r.Context())
	for _, host := range h.o.Hosts() {
		name, ns, ok := strings.Cut(host, ".")
		if !ok || ns == xds.SystemNamespace {
			continue
		}
		if user != nil && ns != user.Namespace && !slices.Contains(user.Scopes, AdminScope) {
			continue // a user sees their namespace's services
		}
		path := "/" + host
		if ns == h.o.Namespace {
			path = "/" + name
		}
		list = append(list, svc{name, ns, path})
	}
	writeJSON(w, http.StatusOK, map[string]any{"services": list})
}

// forward sends the request as it came to a service that is not gRPC,
// its path less the service's segment.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, t *target) {
	rest, path := t.rest, t.path
	if rest == "" {
		rest, path = "/", "/"
	}
	rp := *h.proxy
	rp.Rewrite = func(pr *httputil.ProxyRequest) {
		pr.Out.URL.Scheme, pr.Out.URL.Host, pr.Out.Host = "http", h.o.Outbound, t.authority
		pr.Out.URL.Path, pr.Out.URL.RawPath = path, rest
		pr.SetXForwarded()
		for k := range pr.Out.Header {
			if strings.HasPrefix(strings.ToLower(k), "x-mesh-") {
				pr.Out.Header.Del(k)
			}
		}
	}
	rp.ServeHTTP(w, r)
}

// rpc calls an endpoint of a gRPC service with the request's JSON.
func (h *Handler) rpc(w http.ResponseWriter, r *http.Request, t *target) {
	set, age, err := h.describe(r.Context(), t.authority, false)
	if err != nil {
		writeError(w, err)
		return
	}
	if t.rest == "" || t.rest == "/" {
		h.describeService(w, r, t, set)
		return
	}
	ep, err := resolve(set, t)
	if err != nil && age > describeRetry {
		if set, _, err = h.describe(r.Context(), t.authority, true); err == nil {
			ep, err = resolve(set, t)
		}
	}
	if err != nil {
		writeError(w, err)
		return
	}
	switch r.Method {
	case http.MethodPost:
	case http.MethodGet:
		if ep.ClientStreaming {
			methodNotAllowed(w, "POST", fmt.Sprintf("%s takes a stream of requests: POST them, one JSON object per line", ep.Name))
			return
		}
	default:
		methodNotAllowed(w, "GET, POST", fmt.Sprintf("%s %s: call an endpoint with POST and a JSON body (or GET for an empty request)", r.Method, r.URL.Path))
		return
	}
	form := false
	if ct := r.Header.Get("Content-Type"); ct != "" && r.Method == http.MethodPost {
		mt, _, err := mime.ParseMediaType(ct)
		form = mt == "application/x-www-form-urlencoded"
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json") && mt != "application/x-ndjson" && mt != "text/plain" && !form) {
			writeError(w, &merrors.Error{ID: "gateway", Code: codes.InvalidArgument, Detail: fmt.Sprintf("content type %q: the gateway takes JSON (application/json) or a form", ct)})
			return
		}
	}
	ctx := metadata.NewOutgoingContext(r.Context(), outgoingMetadata(r))
	call := grpc.CallAuthority(t.authority)
	out := &responses{w: w, streaming: ep.ServerStreaming}
	if ep.ClientStreaming {
		_ = http.NewResponseController(w).EnableFullDuplex() // bidi answers while the requests come
		err = ep.Stream(ctx, h.conn, ndjsonReader(r.Body), out.write, call)
	} else {
		var body []byte
		if body, err = requestJSON(r, ep, form); err == nil {
			if !ep.ServerStreaming {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, h.o.Timeout)
				defer cancel()
			}
			err = ep.Call(ctx, h.conn, body, out.write, call)
		}
	}
	if errors.Is(err, errTooLarge) {
		writeStatus(w, http.StatusRequestEntityTooLarge, err.Error())
		return
	}
	if err != nil {
		if status.Code(err) == codes.DeadlineExceeded && r.Context().Err() == nil && !ep.ServerStreaming && !ep.ClientStreaming {
			err = &merrors.Error{ID: "gateway", Code: codes.DeadlineExceeded, Detail: fmt.Sprintf("%s did not answer within the gateway's timeout (%v)", ep.Name, h.o.Timeout)}
		}
		if errors.Is(err, endpoints.ErrBadRequestJSON) {
			err = &merrors.Error{ID: "gateway", Code: codes.InvalidArgument, Detail: err.Error()}
		}
		out.fail(err)
		return
	}
	out.end()
}

// requestJSON is a unary or server-streaming call's request: the JSON
// body of a POST, a form's fields (curl -d's default content type: a body
// that is a JSON object is taken as JSON), or a GET's query parameters.
func requestJSON(r *http.Request, ep *endpoints.Endpoint, form bool) ([]byte, error) {
	if r.Method == http.MethodGet {
		return ep.ValuesJSON(r.URL.Query())
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		return nil, merrors.BadRequest("gateway", "reading the request body: %v", err)
	}
	if len(body) > MaxBody {
		return nil, errTooLarge
	}
	if trimmed := bytes.TrimSpace(body); form && (len(trimmed) == 0 || trimmed[0] != '{') {
		vals, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, merrors.BadRequest("gateway", "the form: %v", err)
		}
		return ep.ValuesJSON(vals)
	}
	return body, nil
}

// errTooLarge: a body past MaxBody (413).
var errTooLarge = fmt.Errorf("the request body is longer than %d bytes", MaxBody)

// describe returns the service's endpoints, from its reflection service
// through the sidecar, cached describeTTL (fresh: asked again), and how
// long ago they were asked.
func (h *Handler) describe(ctx context.Context, authority string, fresh bool) (*endpoints.Set, time.Duration, error) {
	h.mu.Lock()
	d, ok := h.sets[authority]
	h.mu.Unlock()
	if ok && !fresh && time.Since(d.at) < describeTTL {
		return d.set, time.Since(d.at), nil
	}
	set, err := endpoints.Describe(ctx, withAuthority{h.conn, authority})
	if err != nil {
		return nil, 0, err
	}
	h.mu.Lock()
	h.sets[authority] = described{set: set, at: time.Now()}
	h.mu.Unlock()
	return set, 0, nil
}

// describeService answers GET /NAME with the service's endpoints.
func (h *Handler) describeService(w http.ResponseWriter, r *http.Request, t *target, set *endpoints.Set) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, "GET, HEAD", fmt.Sprintf("GET /%s lists its endpoints; call one at /%s/ENDPOINT", t.segment, t.segment))
		return
	}
	type endpoint struct {
		Path string `json:"path"`
		*endpoints.Endpoint
	}
	list := []endpoint{}
	for _, ep := range set.Endpoints {
		list = append(list, endpoint{Path: endpointPath(set, t, ep), Endpoint: ep})
	}
	writeJSON(w, http.StatusOK, map[string]any{"service": t.name, "namespace": t.ns, "endpoints": list})
}

// withAuthority calls every method of conn with one authority.
type withAuthority struct {
	cc        *grpc.ClientConn
	authority string
}

func (a withAuthority) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return a.cc.Invoke(ctx, method, args, reply, append(opts, grpc.CallAuthority(a.authority))...)
}

func (a withAuthority) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return a.cc.NewStream(ctx, desc, method, append(opts, grpc.CallAuthority(a.authority))...)
}

// resolve finds the endpoint a path names (endpoints.Set.Match: /METHOD
// or /SERVICE/METHOD, as Micro's gateway mapped /foo/bar to Foo.Bar).
func resolve(set *endpoints.Set, t *target) (*endpoints.Endpoint, error) {
	p := t.path
	found := set.Match(t.name, strings.Split(strings.Trim(p, "/"), "/"))
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		var paths []string
		for _, ep := range set.Endpoints {
			paths = append(paths, endpointPath(set, t, ep))
		}
		return nil, merrors.NotFound("gateway", "service %s has no endpoint at %s (it has: %s)", t.name, p, strings.Join(paths, ", "))
	default:
		var paths []string
		for _, ep := range found {
			paths = append(paths, endpointPath(set, t, ep))
		}
		return nil, merrors.NotFound("gateway", "%s names more than one endpoint of service %s: say which, %s", p, t.name, strings.Join(paths, " or "))
	}
}

// endpointPath is the shortest path that names ep.
func endpointPath(set *endpoints.Set, t *target, ep *endpoints.Endpoint) string {
	return "/" + t.segment + "/" + strings.Join(set.Words(t.name, ep), "/")
}

// notForwarded are request headers that are HTTP's or the mesh's, not
// the caller's metadata.
var notForwarded = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true, "proxy-authorization": true,
	"te": true, "trailer": true, "transfer-encoding": true, "upgrade": true, "host": true,
	"content-type": true, "content-length": true, "accept-encoding": true, "user-agent": true,
	"accept": true, "expect": true,
}

// outgoingMetadata carries the request's own headers to the service as
// gRPC metadata (Micro's gateway did the same), and who called: X-Forwarded-For.
func outgoingMetadata(r *http.Request) metadata.MD {
	md := metadata.MD{}
	for k, vs := range r.Header {
		k = strings.ToLower(k)
		if notForwarded[k] || strings.HasPrefix(k, "grpc-") || strings.HasPrefix(k, "x-mesh-") || strings.HasPrefix(k, ":") {
			continue
		}
		md[k] = vs
	}
	if host := hostOf(r.RemoteAddr); host != "" {
		md["x-forwarded-for"] = append(md["x-forwarded-for"], host)
	}
	return md
}

// ndjsonReader reads a stream's request messages, one JSON value per line
// (blank lines skipped).
func ndjsonReader(body io.Reader) func() ([]byte, error) {
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 0, 64<<10), MaxBody)
	return func() ([]byte, error) {
		for sc.Scan() {
			if line := bytes.TrimSpace(sc.Bytes()); len(line) > 0 {
				return line, nil
			}
		}
		if err := sc.Err(); err != nil {
			return nil, &merrors.Error{ID: "gateway", Code: codes.InvalidArgument, Detail: "reading the request stream: " + err.Error()}
		}
		return nil, io.EOF
	}
}

// responses writes an endpoint's answers: one JSON body, or for a
// server stream one JSON value per line (application/x-ndjson), each
// flushed as it comes.
type responses struct {
	w         http.ResponseWriter
	streaming bool
	started   bool
}

func (o *responses) write(msg []byte) error {
	if !o.started {
		o.started = true
		ct := "application/json"
		if o.streaming {
			ct = "application/x-ndjson"
		}
		o.w.Header().Set("Content-Type", ct)
		o.w.WriteHeader(http.StatusOK)
	}
	if _, err := o.w.Write(append(msg, '\n')); err != nil {
		return err
	}
	if o.streaming {
		return http.NewResponseController(o.w).Flush()
	}
	return nil
}

// fail answers the call's error: as the status, or, once a stream's
// answers have started, as a last line {"error": {...}}.
func (o *responses) fail(err error) {
	if !o.started {
		writeError(o.w, err)
		return
	}
	b, _ := json.Marshal(map[string]errorBody{"error": bodyOf(err)})
	_, _ = o.w.Write(append(b, '\n'))
}

// end answers a stream that sent nothing with an empty one.
func (o *responses) end() {
	if !o.started && o.streaming {
		o.w.Header().Set("Content-Type", "application/x-ndjson")
		o.w.WriteHeader(http.StatusOK)
	}
}

// errorBody is an error as the gateway answers it (Micro's form).
type errorBody struct {
	ID     string `json:"id,omitempty"`
	Code   int    `json:"code"`
	Detail string `json:"detail"`
	Status string `json:"status"`
}

func bodyOf(err error) errorBody {
	e := merrors.FromError(err)
	code := merrors.HTTPStatus(e.Code)
	return errorBody{ID: e.ID, Code: code, Detail: e.Detail, Status: http.StatusText(code)}
}

// writeStatus answers an HTTP status no gRPC code maps to.
func writeStatus(w http.ResponseWriter, code int, detail string) {
	writeJSON(w, code, errorBody{ID: "gateway", Code: code, Detail: detail, Status: http.StatusText(code)})
}

func methodNotAllowed(w http.ResponseWriter, allow, detail string) {
	w.Header().Set("Allow", allow)
	writeStatus(w, http.StatusMethodNotAllowed, detail)
}

func writeError(w http.ResponseWriter, err error) {
	b := bodyOf(err)
	writeJSON(w, b.Code, b)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"code":500,"detail":"encoding the answer","status":"Internal Server Error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
