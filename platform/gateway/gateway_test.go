package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/examples/helloworld/handler"
	pb "github.com/micromesh/micromesh/examples/helloworld/proto"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/poll"
	"github.com/micromesh/micromesh/internal/promtest"
	"github.com/micromesh/micromesh/internal/testsvc"
	"github.com/micromesh/micromesh/platform/gateway"
	"github.com/micromesh/micromesh/service"
)

// mesh is a control plane with helloworld (default and prod), the
// interop test service as "tester", a plain HTTP app as "web", a platform
// service "store", and the gateway in front of them.
type mesh struct {
	cp       *meshtest.ControlPlane
	base     string
	redirect string // where plain HTTP is redirected to HTTPS, if anywhere
	client   *http.Client
	metrics  *prometheus.Registry
}

func startMesh(t *testing.T, opts ...func(*gateway.Options)) *mesh {
	t.Helper()
	return startMeshFor(t, http.DefaultClient, opts...)
}

// startMeshFor is startMesh with the client that calls the gateway.
func startMeshFor(t *testing.T, client *http.Client, opts ...func(*gateway.Options)) *mesh {
	t.Helper()
	cp := meshtest.NewEnv(t).StartControlPlane()
	hello := func(s *service.Service) { pb.RegisterHelloworldServer(s.Server(), handler.Helloworld{}) }
	cp.StartService("default", "helloworld", hello)
	cp.StartService("prod", "helloworld", hello)
	cp.StartService("micromesh", "store", hello) // a platform service's name
	cp.StartService("default", "tester", func(s *service.Service) { testgrpc.RegisterTestServiceServer(s.Server(), metadataEcho{}) })
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"method": r.Method, "path": r.URL.Path, "query": r.URL.RawQuery, "body": string(body),
			"caller": r.Header.Get("X-Mesh-Caller"), "forwarded_for": r.Header.Get("X-Forwarded-For"), "spoof": r.Header.Get("X-Mesh-Spoof"),
		})
	}))
	t.Cleanup(web.Close)
	cp.StartSidecar("default", "web", meshtest.WithApp(strings.TrimPrefix(web.URL, "http://"), "http"))

	reg := prometheus.NewRegistry()
	o := gateway.Options{Addr: "127.0.0.1:0", Home: cp.Home(), ControlPlane: cp.Info.Address, Metrics: reg}
	for _, opt := range opts {
		opt(&o)
	}
	gw, err := gateway.Start(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Stop)
	m := &mesh{cp: cp, base: gw.URL(), redirect: gw.RedirectAddr(), client: client, metrics: reg}
	// The registrations reach the gateway's sidecar a push later.
	poll.Until(t, "the gateway routes to the five services", 10*time.Second, 20*time.Millisecond, func() bool {
		_, body := m.do(t, "GET", "/", "", "")
		_, store := m.do(t, "GET", "/store/x", "", "")
		return strings.Count(body, `"path"`) == 4 && strings.Contains(store, "one of the platform's services")
	})
	return m
}

// metadataEcho is the interop test service whose UnaryCall answers with
// the metadata it got.
type metadataEcho struct{ testsvc.Service }

func (metadataEcho) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var got []string
	for _, k := range []string{"x-tenant", "x-api-key", "x-forwarded-for", "x-mesh-caller", "x-mesh-spoof", "connection", "accept"} {
		got = append(got, k+"="+strings.Join(md.Get(k), ","))
	}
	return &testgrpc.SimpleResponse{Username: strings.Join(got, " ")}, nil
}

// count is the value of a counter, or a histogram's count, with exactly
// these labels (promtest.Count).
func (m *mesh) count(t *testing.T, name, labels string) float64 {
	t.Helper()
	return promtest.Count(t, m.metrics, name, labels)
}

// do sends a request to the gateway and returns the status and body.
func (m *mesh) do(t *testing.T, method, path, contentType, body string) (int, string) {
	t.Helper()
	var header map[string]string
	if contentType != "" {
		header = map[string]string{"Content-Type": contentType}
	}
	resp, b := m.send(t, method, path, body, header)
	return resp.StatusCode, strings.TrimSpace(b)
}

// send sends a request with these headers ("Host" sets the Host) and
// returns the response (its body read) and the body.
func (m *mesh) send(t *testing.T, method, path, body string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, m.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	if h := header["Host"]; h != "" {
		req.Host = h
	}
	resp, err := m.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestGatewayCallsServicesOverTheMesh(t *testing.T) {
	callServices(t, startMesh(t))
}

// callServices is what a client of the gateway does, whatever protocol
// m's client speaks.
func callServices(t *testing.T, m *mesh) {
	for _, tc := range []struct {
		name, method, path, ct, body string
		code                         int
		want                         string
	}{
		{"Micro's mapping", "POST", "/helloworld/call", "application/json", `{"name":"Ada"}`, 200, `{"msg":"Hello Ada"}`},
		{"service and method named", "POST", "/helloworld/Helloworld/Call", "", `{"name":"Ada"}`, 200, `{"msg":"Hello Ada"}`},
		{"full gRPC service name", "POST", "/helloworld/examples.helloworld.v1.Helloworld/call", "", `{"name":"Ada"}`, 200, `{"msg":"Hello Ada"}`},
		{"another namespace", "POST", "/helloworld.prod/call", "application/json", `{"name":"Bo"}`, 200, `{"msg":"Hello Bo"}`},
		{"the service's own error", "POST", "/helloworld/call", "application/json", `{}`, 400,
			`{"id":"helloworld.call","code":400,"detail":"name is required","status":"Bad Request"}`},
		{"GET is an empty request", "GET", "/helloworld/call", "", "", 400, `"detail":"name is required"`},
		{"GET takes the query's fields", "GET", "/helloworld/call?name=Cy", "", "", 200, `{"msg":"Hello Cy"}`},
		{"curl -d's JSON", "POST", "/helloworld/call", "application/x-www-form-urlencoded", `{"name":"Di"}`, 200, `{"msg":"Hello Di"}`},
		{"a form", "POST", "/helloworld/call", "application/x-www-form-urlencoded", `name=Ed+Fu`, 200, `{"msg":"Hello Ed Fu"}`},
		{"a form's unknown field", "POST", "/helloworld/call", "application/x-www-form-urlencoded", `nom=Ed`, 400, `\"nom\" is not a field (fields: name)`},
		{"a query's field of the wrong type", "GET", "/tester/unarycall?responseSize=big", "", "", 400, `field responseSize: \"big\" is not a number`},
		{"bad JSON", "POST", "/helloworld/call", "application/json", `{"name":`, 400, `request JSON for Helloworld.Call`},
		{"unknown field", "POST", "/helloworld/call", "application/json", `{"nom":"Ada"}`, 400, `unknown field \"nom\"`},
		{"not JSON", "POST", "/helloworld/call", "application/xml", `<name/>`, 400, `the gateway takes JSON`},
		{"unknown endpoint", "POST", "/helloworld/shout", "", `{}`, 404, `service helloworld has no endpoint at /shout (it has: /helloworld/call)`},
		{"too deep", "POST", "/helloworld/a/b/c", "", `{}`, 404, `has no endpoint at /a/b/c`},
		{"unknown service", "POST", "/nosuch/call", "", `{}`, 404, `no service nosuch in namespace default`},
		{"unknown namespace", "POST", "/helloworld.staging/call", "", `{}`, 404, `no service helloworld in namespace staging`},
		{"not a service name", "POST", "/Hello_World/call", "", `{}`, 404, `a path starts with the service it calls`},
		{"platform services act for accounts alone", "POST", "/store.micromesh/read", "", `{}`, 401, `acts in an account's namespace: send its access token`},
		{"the others are not served", "POST", "/auth.micromesh/accounts", "", `{}`, 404, `the platform's auth is not served through the API gateway`},
		{"platform services named alone", "POST", "/store/read", "", `{}`, 404, `store is one of the platform's services`},
		{"wrong method", "PUT", "/helloworld/call", "", `{}`, 405, `call an endpoint with POST`},
		{"too long", "POST", "/helloworld/call", "", `{"name":"` + strings.Repeat("a", gateway.MaxBody) + `"}`, 413, `longer than`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := m.do(t, tc.method, tc.path, tc.ct, tc.body)
			if code != tc.code || !strings.Contains(body, tc.want) {
				t.Errorf("%s %s: %d %s\nwant %d with %s", tc.method, tc.path, code, body, tc.code, tc.want)
			}
		})
	}

	t.Run("metrics", func(t *testing.T) {
		for labels, atLeast := range map[string]float64{
			`namespace="default",response_code="200",service="helloworld"`: 5,
			`namespace="prod",response_code="200",service="helloworld"`:    1,
			`namespace="default",response_code="400",service="helloworld"`: 3,
			`namespace="",response_code="404",service=""`:                  3, // no label per unknown name
		} {
			if got := m.count(t, "micromesh_gateway_requests_total", labels); got < atLeast {
				t.Errorf("micromesh_gateway_requests_total{%s} = %v, want at least %v", labels, got, atLeast)
			}
		}
		if got := m.count(t, "micromesh_gateway_requests_total", `namespace="default",response_code="404",service="nosuch"`); got != 0 {
			t.Errorf("an unknown service got a label of its own")
		}
	})

	t.Run("its key stays in the server's state, 0600", func(t *testing.T) {
		fi, err := os.Stat(filepath.Join(m.cp.Home().Sidecar(gateway.Service), "certs", identity.KeyFile))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("the gateway's key: %v %v", fi, err)
		}
	})

	t.Run("index and endpoints", func(t *testing.T) {
		code, body := m.do(t, "GET", "/", "", "")
		for _, want := range []string{`"path":"/helloworld"`, `"path":"/helloworld.prod"`, `"path":"/tester"`, `"path":"/web"`} {
			if code != 200 || !strings.Contains(body, want) {
				t.Errorf("GET /: %d %s\nwant %s", code, body, want)
			}
		}
		if strings.Contains(body, "micromesh") {
			t.Errorf("GET / lists the platform's services: %s", body)
		}
		code, body = m.do(t, "GET", "/helloworld", "", "")
		if code != 200 || !strings.Contains(body, `"path":"/helloworld/call","name":"Helloworld.Call"`) {
			t.Errorf("GET /helloworld: %d %s", code, body)
		}
	})

	t.Run("streams", func(t *testing.T) {
		// Server stream: a line per message.
		code, body := m.do(t, "POST", "/tester/streamingoutputcall", "", `{"responseParameters":[{"size":1},{"size":2},{"size":3}]}`)
		if lines := strings.Split(body, "\n"); code != 200 || len(lines) != 3 || lines[2] != `{"payload":{"body":"AAAA"}}` {
			t.Errorf("server stream: %d %q", code, body)
		}
		// Client stream: a request per line.
		code, body = m.do(t, "POST", "/tester/streaminginputcall", "application/x-ndjson", `{"payload":{"body":"AAAA"}}`+"\n\n"+`{"payload":{"body":"AAA="}}`+"\n")
		if code != 200 || body != `{"aggregatedPayloadSize":5}` {
			t.Errorf("client stream: %d %s", code, body)
		}
		// Bidirectional, answers read while the requests are still being sent.
		pr, pw := io.Pipe()
		req, _ := http.NewRequestWithContext(t.Context(), "POST", m.base+"/tester/fullduplexcall", pr)
		go func() { _, _ = fmt.Fprintln(pw, `{"responseParameters":[{"size":2}]}`) }()
		resp, err := m.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		lines := bufio.NewScanner(resp.Body)
		if !lines.Scan() || lines.Text() != `{"payload":{"body":"AAA="}}` {
			t.Fatalf("bidi: first answer %q before the requests ended (%v)", lines.Text(), lines.Err())
		}
		_, _ = fmt.Fprintln(pw, `{"responseParameters":[{"size":1}]}`)
		_ = pw.Close()
		if !lines.Scan() || lines.Text() != `{"payload":{"body":"AA=="}}` || lines.Scan() {
			t.Errorf("bidi: second answer %q", lines.Text())
		}
		// A bad message mid-stream: the call ends with an error naming it.
		code, body = m.do(t, "POST", "/tester/streaminginputcall", "", `{"payload":{}}`+"\n"+`{"payload":7}`+"\n")
		if code != 400 || !strings.Contains(body, "message 2") {
			t.Errorf("client stream with a bad message: %d %s", code, body)
		}
	})

	t.Run("headers travel as metadata", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", m.base+"/tester/unarycall", strings.NewReader(`{}`))
		for k, v := range map[string]string{"X-Tenant": "acme", "X-Api-Key": "abc", "X-Mesh-Spoof": "yes",
			"X-Mesh-Caller": "spiffe://micromesh.local/ns/default/svc/admin", "Accept": "application/json"} {
			req.Header.Set(k, v)
		}
		resp, err := m.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got struct{ Username string }
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%d %v", resp.StatusCode, err)
		}
		want := "x-tenant=acme x-api-key=abc x-forwarded-for=127.0.0.1 x-mesh-caller=spiffe://micromesh.local/ns/micromesh/svc/gateway x-mesh-spoof= connection= accept="
		if got.Username != want {
			t.Errorf("metadata the service got:\n%s\nwant\n%s", got.Username, want)
		}
	})

	t.Run("HTTP services get the request as it came", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(t.Context(), "PUT", m.base+"/web/orders/42%2F7?full=1", strings.NewReader("hi"))
		req.Header.Set("X-Mesh-Spoof", "yes")
		req.Header.Set("X-Mesh-Caller", "spiffe://micromesh.local/ns/default/svc/admin")
		resp, err := m.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got map[string]string
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%d %v", resp.StatusCode, err)
		}
		want := map[string]string{"method": "PUT", "path": "/orders/42/7", "query": "full=1", "body": "hi",
			"caller": "spiffe://micromesh.local/ns/micromesh/svc/gateway", "forwarded_for": "127.0.0.1", "spoof": ""}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %q, want %q (all: %v)", k, got[k], v, got)
			}
		}
	})
}

// A web page cannot use the browser to call the mesh's services through
// the gateway on the user's machine: cross-site requests, foreign origins
// and DNS names rebound to loopback are refused; curl passes.
func TestGatewayRefusesOtherSitesPages(t *testing.T) {
	m := startMesh(t)
	for _, tc := range []struct {
		name    string
		headers map[string]string
		code    int
		want    string
	}{
		{"curl", nil, 200, `{"msg":"Hello Ada"}`},
		{"the gateway's own page", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": m.base}, 200, `{"msg":"Hello Ada"}`},
		{"typed into the address bar", map[string]string{"Sec-Fetch-Site": "none"}, 200, `{"msg":"Hello Ada"}`},
		{"another site's page", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403, "a cross-site request from a browser"},
		{"a sibling site's page", map[string]string{"Sec-Fetch-Site": "same-site"}, 403, "a same-site request"},
		{"a foreign origin", map[string]string{"Origin": "http://evil.example"}, 403, "from origin http://evil.example"},
		{"a sandboxed page", map[string]string{"Origin": "null"}, 403, "from origin null"},
		{"a rebound DNS name", map[string]string{"Host": "evil.example"}, 421, "not evil.example"},
		{"localhost by name", map[string]string{"Host": "localhost:8080"}, 200, `{"msg":"Hello Ada"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := m.send(t, "GET", "/helloworld/call?name=Ada", "", tc.headers)
			if resp.StatusCode != tc.code || !strings.Contains(body, tc.want) {
				t.Errorf("%d %s, want %d with %s", resp.StatusCode, body, tc.code, tc.want)
			}
		})
	}
}

// A web app of a trusted origin calls the gateway from the browser (CORS:
// preflight, then the call); a call of one request and one answer that
// takes longer than the gateway's timeout is answered 504.
func TestGatewayCORSAndTimeout(t *testing.T) {
	const app = "https://app.example.com"
	m := startMesh(t, func(o *gateway.Options) { o.CORSOrigins, o.Timeout = []string{app}, 300*time.Millisecond })

	resp, body := m.send(t, "OPTIONS", "/helloworld/call", "", map[string]string{"Origin": app, "Sec-Fetch-Site": "cross-site",
		"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"})
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != app || resp.Header.Get("Access-Control-Allow-Headers") != "authorization, content-type" ||
		!strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST") {
		t.Errorf("preflight: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	resp, body = m.send(t, "POST", "/helloworld/call", `{"name":"Ada"}`, map[string]string{"Origin": app, "Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"})
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != app || strings.TrimSpace(body) != `{"msg":"Hello Ada"}` {
		t.Errorf("the trusted page's call: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	resp, body = m.send(t, "POST", "/helloworld/call", `{"name":"Ada"}`, map[string]string{"Origin": "https://app.example.com.evil.example", "Sec-Fetch-Site": "cross-site"})
	if resp.StatusCode != 403 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("another origin's call: %d %v %s", resp.StatusCode, resp.Header, body)
	}

	m.cp.StartService("default", "slow", func(s *service.Service) { pb.RegisterHelloworldServer(s.Server(), slow{}) })
	poll.Until(t, "the gateway routes to slow", 10*time.Second, 20*time.Millisecond, func() bool {
		_, body := m.do(t, "GET", "/", "", "")
		return strings.Contains(body, `"path":"/slow"`)
	})
	start := time.Now()
	code, body := m.do(t, "POST", "/slow/call", "", `{"name":"Ada"}`)
	if code != 504 || !strings.Contains(body, "Helloworld.Call did not answer within the gateway's timeout (300ms)") || time.Since(start) > 5*time.Second {
		t.Errorf("a slow call: %d %s after %v", code, body, time.Since(start))
	}
}

// slow answers Call when its caller gives up.
type slow struct {
	pb.UnimplementedHelloworldServer
}

func (slow) Call(ctx context.Context, _ *pb.CallRequest) (*pb.CallResponse, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// A service shuts the gateway out like any caller: its deny_from names
// the gateway's identity, and its sidecar refuses the gateway's calls.
func TestGatewayMeetsTheServicesRules(t *testing.T) {
	m := startMesh(t)
	if code, body := m.do(t, "POST", "/helloworld/call", "", `{"name":"Ada"}`); code != 200 {
		t.Fatalf("before the rule: %d %s", code, body)
	}
	if err := m.cp.Registry().SetPolicy(t.Context(), registry.Policy{Service: "helloworld", Keys: map[string]string{"deny_from": "gateway.micromesh"}}); err != nil {
		t.Fatal(err)
	}
	var code int
	var body string
	poll.Until(t, "the gateway refused", 10*time.Second, 50*time.Millisecond, func() bool {
		code, body = m.do(t, "POST", "/helloworld/call", "", `{"name":"Ada"}`)
		return code == http.StatusForbidden
	})
	if !strings.Contains(body, `"status":"Forbidden"`) {
		t.Errorf("refused: %s", body)
	}
	// The other namespace's helloworld has no such rule.
	if code, body := m.do(t, "POST", "/helloworld.prod/call", "", `{"name":"Ada"}`); code != 200 {
		t.Errorf("prod's helloworld: %d %s", code, body)
	}
}

// --gateway-rate-limit: a client past its share gets 429 with Retry-After
// before its call reaches the mesh, other clients are not held back; the
// refusals are counted.
func TestGatewayRateLimitsEachClient(t *testing.T) {
	m := startMesh(t, func(o *gateway.Options) { o.RateLimit, o.RateLimitBurst = 5, 5 })
	// A client of its own (startMesh's polls drew from 127.0.0.1's bucket):
	// another loopback address.
	other := *m
	other.client = &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}}
	var codes []int
	var refused *http.Response
	var body string
	for range 8 {
		resp, b := other.send(t, "POST", "/helloworld/call", `{"name":"Ada"}`, map[string]string{"Content-Type": "application/json"})
		codes = append(codes, resp.StatusCode)
		if resp.StatusCode == http.StatusTooManyRequests && refused == nil {
			refused, body = resp, b
		}
	}
	if fmt.Sprint(codes[:5]) != "[200 200 200 200 200]" || refused == nil {
		t.Fatalf("8 quick calls at 5/s, bursts of 5: %v", codes)
	}
	if refused.Header.Get("Retry-After") != "1" || !strings.Contains(body, `"code":429`) ||
		!strings.Contains(body, "this gateway takes 5 requests/s from each client (bursts of 5); addr 127.0.0.2 is over it") {
		t.Errorf("the refusal: Retry-After %q %s", refused.Header.Get("Retry-After"), body)
	}
	time.Sleep(time.Second) // 127.0.0.1's bucket full again
	if code, _ := m.do(t, "POST", "/helloworld/call", "application/json", `{"name":"Ada"}`); code != 200 {
		t.Errorf("another client, meanwhile: %d", code)
	}
	if n := m.count(t, "micromesh_gateway_rate_limited_total", ""); n < 1 {
		t.Errorf("micromesh_gateway_rate_limited_total = %v", n)
	}
	if n := m.count(t, "micromesh_gateway_requests_total", `namespace="",response_code="429",service=""`); n < 1 {
		t.Errorf("the refusals are not among the gateway's requests: %v", n)
	}
}

// A TCP service is not reached through the gateway: it says so, and how.
func TestGatewaySaysATCPServiceIsNotHTTP(t *testing.T) {
	m := startMesh(t)
	db, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	m.cp.StartSidecar("default", "db", meshtest.WithApp(db.Addr().String(), "tcp"))
	poll.Until(t, "the gateway to know db", 10*time.Second, 20*time.Millisecond, func() bool {
		code, _ := m.do(t, "GET", "/db/tables", "", "")
		return code != http.StatusNotFound
	})
	code, body := m.do(t, "GET", "/db/tables", "", "")
	if code != http.StatusBadRequest || !strings.Contains(body, "db is a TCP service, not an HTTP one") || !strings.Contains(body, "--upstream") {
		t.Fatalf("GET /db/tables: %d %s", code, body)
	}
}
