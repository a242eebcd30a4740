package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/dataplane"
	"github.com/micromesh/micromesh/examples/helloworld/handler"
	pb "github.com/micromesh/micromesh/examples/helloworld/proto"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/poll"
	"github.com/micromesh/micromesh/internal/tokentest"
	"github.com/micromesh/micromesh/platform/dashboard"
	"github.com/micromesh/micromesh/platform/gateway"
	"github.com/micromesh/micromesh/service"
)

func get(t *testing.T, url string, header map[string]string) (*http.Response, string) {
	t.Helper()
	return send(t, "GET", url, "", header)
}

func send(t *testing.T, method, url, body string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
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

// listing is what /status says of policies and splits (protojson: its
// spacing is not stable, so decoded).
type listing struct {
	Policies, Splits []struct {
		Service, Namespace string
		Keys               map[string]string
		Versions           []struct {
			Version string
			Weight  int
		}
		Header string
	}
}

func listed(t *testing.T, base string) listing {
	t.Helper()
	_, body := get(t, base+"/status", nil)
	var l listing
	if err := json.Unmarshal([]byte(body), &l); err != nil {
		t.Fatalf("/status: %v\n%s", err, body)
	}
	return l
}

// serveDashboard starts a gateway on cp and serves the dashboard over it,
// as meshctl server does.
func serveDashboard(t *testing.T, cp *meshtest.ControlPlane) *httptest.Server {
	t.Helper()
	gw, err := gateway.Start(t.Context(), gateway.Options{Addr: "127.0.0.1:0", Home: cp.Home(), ControlPlane: cp.Info.Address})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Stop)
	srv := httptest.NewServer(gateway.SameOrigin(dashboard.New(dashboard.Options{API: gw.OperatorHandler(), Services: gw.ListServices, Traces: gw.Traces(), Stats: gw.Stats(), Check: gw.Check, Tap: gw.Tap(), Registry: gw.Registry()}), true))
	t.Cleanup(srv.Close)
	return srv
}

// The dashboard as its page uses it: the page and its script, the
// registry's listing, and the gateway's endpoints and calls under /api —
// with the fields the script reads.
func TestDashboard(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	cp.StartService("default", "helloworld", func(s *service.Service) { pb.RegisterHelloworldServer(s.Server(), handler.Helloworld{}) })
	srv := serveDashboard(t, cp)
	poll.Until(t, "the gateway routes to helloworld", 10*time.Second, 20*time.Millisecond, func() bool {
		_, body := get(t, srv.URL+"/api/", nil)
		return strings.Contains(body, `"path":"/helloworld"`)
	})

	resp, page := get(t, srv.URL+"/", nil)
	if resp.StatusCode != 200 || !strings.Contains(page, `<script src="app.js" defer></script>`) || !strings.Contains(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("GET /: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), page)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Errorf("the page may run others' scripts or be framed: CSP %q, X-Frame-Options %q", csp, resp.Header.Get("X-Frame-Options"))
	}
	resp, script := get(t, srv.URL+"/app.js", nil)
	if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), "javascript") {
		t.Errorf("GET /app.js: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, used := range []string{`getJSON("status")`, `getJSON("api/")`, `getJSON("api" + path)`, `fetch("api" + ep.path, { method: "POST"`, `headers.Authorization = "Bearer " + token`, "textContent",
		`getJSON("traces"`, `getJSON("traces/" + id)`, "headers.traceparent = trace.header", `getJSON("stats?methods=1")`, "setInterval(() => load(true), 5000)", `getJSON("check")`,
		`fetch("tap?service=" + encodeURIComponent(svc.name) + "&namespace=" + encodeURIComponent(svc.namespace)`, `postChange("policy", change`, "status.policies", `postChange("split", change`, `postChange("rollout", change`, "status.splits", "fetch(url, {"} {
		if !strings.Contains(script, used) {
			t.Errorf("the script no longer has %s: check this test's contract", used)
		}
	}
	if strings.Contains(script, "innerHTML") {
		t.Error("the script writes markup: services' names and answers must be text")
	}
	if node, err := exec.LookPath("node"); err == nil {
		if out, err := exec.Command(node, "--check", "static/app.js").CombinedOutput(); err != nil {
			t.Errorf("app.js does not parse: %v\n%s", err, out)
		}
	}

	// /status: the registry's listing, with what the script shows.
	var status struct {
		Services []struct {
			Name, Namespace string
			Instances       []map[string]any
		}
	}
	_, body := get(t, srv.URL+"/status", nil)
	if err := json.Unmarshal([]byte(body), &status); err != nil {
		t.Fatalf("/status: %v\n%s", err, body)
	}
	found := false
	for _, s := range status.Services {
		if s.Name != "helloworld" || s.Namespace != "default" || len(s.Instances) != 1 {
			continue
		}
		found = true
		in := s.Instances[0]
		for _, k := range []string{"id", "address", "port", "quicPort", "kind", "protocol", "health"} {
			if in[k] == nil || in[k] == "" {
				t.Errorf("/status: helloworld's instance has no %s: %v", k, in)
			}
		}
		if in["health"] != "passing" || in["protocol"] != "grpc" {
			t.Errorf("/status: helloworld's instance: %v", in)
		}
	}
	if !found {
		t.Errorf("/status lists no helloworld with its instance: %s", body)
	}

	// /api: the gateway's endpoints and a call, as the page makes it.
	_, body = get(t, srv.URL+"/api/helloworld", nil)
	for _, want := range []string{`"path":"/helloworld/call"`, `"request":{"name":"examples.helloworld.v1.CallRequest","fields":[{"name":"name","type":"string"}]}`} {
		if !strings.Contains(body, want) {
			t.Errorf("/api/helloworld lacks %s:\n%s", want, body)
		}
	}
	same := map[string]string{"Content-Type": "application/json", "Origin": srv.URL, "Sec-Fetch-Site": "same-origin"}
	if resp, body := send(t, "POST", srv.URL+"/api/helloworld/call", `{"name":"Ada"}`, same); resp.StatusCode != 200 || strings.TrimSpace(body) != `{"msg":"Hello Ada"}` {
		t.Errorf("a call from the page: %d %s", resp.StatusCode, body)
	}
	// /traces: the trace API's answers; bad input is the caller's error.
	if resp, body := get(t, srv.URL+"/traces", nil); resp.StatusCode != 200 || !strings.HasPrefix(body, "{") {
		t.Errorf("/traces: %d %s", resp.StatusCode, body)
	}
	if resp, body := get(t, srv.URL+"/traces/xyz", nil); resp.StatusCode != 400 || !strings.Contains(body, "32 hex digits") {
		t.Errorf("/traces/xyz: %d %s; want 400 naming the form", resp.StatusCode, body)
	}
	if resp, body := get(t, srv.URL+"/traces/"+strings.Repeat("a", 32), nil); resp.StatusCode != 404 || !strings.Contains(body, "meshctl call --trace") {
		t.Errorf("an unknown trace: %d %s; want 404 saying how one is recorded", resp.StatusCode, body)
	}
	// /stats: the stats API's answer, for the page's columns.
	if resp, body := get(t, srv.URL+"/stats", nil); resp.StatusCode != 200 || !strings.Contains(body, `"service":"helloworld.default"`) {
		t.Errorf("/stats: %d %s", resp.StatusCode, body)
	}
	if resp, body := get(t, srv.URL+"/stats?namespace=Bad_NS", nil); resp.StatusCode != 400 || !strings.Contains(body, "namespace") {
		t.Errorf("/stats?namespace=Bad_NS: %d %s; want 400", resp.StatusCode, body)
	}
	// /check: meshctl check's checks, run by the server.
	if resp, body := get(t, srv.URL+"/check", nil); resp.StatusCode != 200 || !strings.Contains(body, `"section":"control plane"`) || !strings.Contains(body, `"failed":0`) {
		t.Errorf("/check: %d %s", resp.StatusCode, body)
	}
	// /tap: a registered service's requests, as JSON lines; bad input is
	// the caller's error, a name the registry lacks is said at once.
	for _, tc := range []struct {
		query string
		code  int
		want  string
	}{
		{"service=nosuch", 404, "tap: nosuch is not a service in namespace default"},
		{"service=helloworld&namespace=prod", 404, "tap: helloworld is not a service in namespace prod"},
		{"service=Bad_Name", 400, `service name \"Bad_Name\" must be a DNS label`},
		{"service=helloworld&namespace=x.y", 400, `namespace \"x.y\" must be a DNS label`},
	} {
		if resp, body := get(t, srv.URL+"/tap?"+tc.query, nil); resp.StatusCode != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("/tap?%s: %d %s; want %d saying %q", tc.query, resp.StatusCode, body, tc.code, tc.want)
		}
	}
	tapCtx, stopTap := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(tapCtx, "GET", srv.URL+"/tap?service=helloworld", nil)
	tapResp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if tapResp.StatusCode != 200 || tapResp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("/tap?service=helloworld: %d %s", tapResp.StatusCode, tapResp.Header.Get("Content-Type"))
	}
	lines := bufio.NewScanner(tapResp.Body)
	tapped := make(chan string, 100)
	go func() {
		for lines.Scan() {
			tapped <- lines.Text()
		}
		close(tapped)
	}()
	var line string
	for line == "" {
		send(t, "POST", srv.URL+"/api/helloworld/call", `{"name":"Tap"}`, same)
		select {
		case line = <-tapped:
		case <-time.After(300 * time.Millisecond):
		case <-t.Context().Done():
			t.Fatal("no tapped request")
		}
	}
	for _, want := range []string{`"source":"spiffe://micromesh.local/ns/micromesh/svc/gateway"`, `"path":"/examples.helloworld.v1.Helloworld/Call"`, `"code":200`, `"grpcStatus":0`, `"protocol":"HTTP/3"`} {
		if !strings.Contains(line, want) {
			t.Errorf("a tapped request lacks %s: %s", want, line)
		}
	}
	stopTap()
	tapResp.Body.Close()

	// /policy: an operator's keys set and cleared, as meshctl policy; a key
	// the registry refuses changes nothing.
	for _, tc := range []struct {
		body string
		code int
		want string
	}{
		{`{"service":"helloworld","set":{"timeout":"2s","retries":"4"}}`, 200, `{"keys":{"retries":"4","timeout":"2s"}}`},
		{`{"service":"helloworld","set":{"timeout":"soon"}}`, 400, `policy key policy_timeout: \"soon\" is not a duration`},
		{`{"service":"helloworld","clear":["retries"]}`, 200, `{"keys":{"timeout":"2s"}}`},
		{`{"service":"helloworld"}`, 400, "nothing to set or clear"},
		{`{"service":"Bad_Name","set":{"timeout":"1s"}}`, 400, `service name \"Bad_Name\"`},
		{`{"service":`, 400, "a JSON body"},
	} {
		if resp, body := send(t, "POST", srv.URL+"/policy", tc.body, same); resp.StatusCode != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("POST /policy %s: %d %s; want %d with %s", tc.body, resp.StatusCode, body, tc.code, tc.want)
		}
	}
	if got := listed(t, srv.URL).Policies; fmt.Sprint(got) != "[{helloworld default map[timeout:2s] [] }]" {
		t.Errorf("/status after the policy changes: policies %v", got)
	}
	if resp, body := send(t, "POST", srv.URL+"/policy", `{"service":"helloworld","clear":["timeout"]}`, same); resp.StatusCode != 200 || strings.TrimSpace(body) != `{"keys":{}}` {
		t.Errorf("clearing the last key: %d %s", resp.StatusCode, body)
	}

	// /split: a split between versions set and cleared, as meshctl split.
	for _, tc := range []struct {
		body string
		code int
		want string
	}{
		{`{"service":"helloworld","versions":{"v1":90,"v2":10},"header":"x-version"}`, 200, `{}`},
		{`{"service":"helloworld","versions":{"v1":50}}`, 400, "the shares of helloworld.default add up to 50 %, not 100 %"},
		{`{"service":"helloworld"}`, 400, "name the versions and their shares"},
		{`{"service":"Bad_Name","clear":true}`, 400, `service name \"Bad_Name\"`},
	} {
		if resp, body := send(t, "POST", srv.URL+"/split", tc.body, same); resp.StatusCode != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("POST /split %s: %d %s; want %d with %s", tc.body, resp.StatusCode, body, tc.code, tc.want)
		}
	}
	if got := listed(t, srv.URL).Splits; fmt.Sprint(got) != "[{helloworld default map[] [{v1 90} {v2 10}] x-version}]" {
		t.Errorf("/status after the split: splits %v", got)
	}
	if resp, body := send(t, "POST", srv.URL+"/split", `{"service":"helloworld","clear":true}`, same); resp.StatusCode != 200 {
		t.Errorf("clearing the split: %d %s", resp.StatusCode, body)
	}

	// /rollout: started (from the version running) and aborted, as meshctl
	// rollout; refusals say why. Two versions of helloworld registered by
	// hand: a rollout's start needs their instances, not their traffic.
	for i, v := range []string{"v1", "v2"} {
		in := registry.Instance{ID: "hello-" + v, Service: "helloworld", Namespace: "default", Address: "127.0.0.1", Port: uint16(40001 + i),
			Protocol: registry.ProtocolGRPC, Kind: registry.KindBuiltin, Version: v}
		if err := cp.Registry().Register(t.Context(), in); err != nil {
			t.Fatal(err)
		}
		defer cp.Registry().Deregister(context.Background(), in.ID)
	}
	for _, tc := range []struct {
		body string
		code int
		want string
	}{
		{`{"service":"helloworld"}`, 400, "name the version to roll out"},
		{`{"service":"helloworld","abort":true}`, 404, "has no rollout in progress"},
		{`{"service":"helloworld","to":"v9"}`, 400, "runs 2 other versions: name the one traffic moves from"},
		{`{"service":"helloworld","from":"v1","to":"v9"}`, 409, "no instance of version v9 registered"},
		{`{"service":"helloworld","from":"v1","to":"v2","deadline":"soon"}`, 400, `deadline \"soon\" is not a duration such as 90s or 2m`},
		{`{"service":"helloworld","from":"v1","to":"v2","interval":"-1m"}`, 400, `interval \"-1m\" is not a duration`},
		{`{"service":"helloworld","from":"v1","to":"v2","deadline":"5s"}`, 400, "deadline 5s: 0 (a step waits for traffic as long as it takes) or between 30s and 24h0m0s"},
		{`{"service":"helloworld","from":"v1","to":"v2","interval":"2h"}`, 400, "interval 2h0m0s: between 30s"},
		{`{"service":"helloworld","from":"v1","to":"v2","retire":true,"interval":"45s","deadline":"10m"}`, 200, `{}`},
		{`{"service":"helloworld","abort":true}`, 200, `{}`},
	} {
		if tc.code == 200 {
			// The registry's snapshot holds the instances (or the
			// rollout) a moment after the write.
			poll.Until(t, tc.body, 5*time.Second, 20*time.Millisecond, func() bool {
				resp, _ := send(t, "POST", srv.URL+"/rollout", tc.body, same)
				return resp.StatusCode == 200
			})
			continue
		}
		if resp, body := send(t, "POST", srv.URL+"/rollout", tc.body, same); resp.StatusCode != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("POST /rollout %s: %d %s; want %d with %s", tc.body, resp.StatusCode, body, tc.code, tc.want)
		}
	}
	var rolled struct {
		Splits []struct {
			Versions []struct {
				Version string
				Weight  int
			}
			Rollout struct {
				From, To, State, Message string
				Interval, Deadline       string
				Retire                   bool
			}
		}
	}
	if _, body := get(t, srv.URL+"/status", nil); json.Unmarshal([]byte(body), &rolled) != nil || len(rolled.Splits) != 1 ||
		rolled.Splits[0].Rollout.State != "aborted" || !rolled.Splits[0].Rollout.Retire || fmt.Sprint(rolled.Splits[0].Versions) != "[{v1 100} {v2 0}]" ||
		rolled.Splits[0].Rollout.Interval != "45s" || rolled.Splits[0].Rollout.Deadline != "600s" {
		t.Errorf("/status after the rollout: %s", body)
	}
	if resp, body := send(t, "POST", srv.URL+"/split", `{"service":"helloworld","clear":true}`, same); resp.StatusCode != 200 {
		t.Errorf("clearing the rollout's split: %d %s", resp.StatusCode, body)
	}

	// Another site's page cannot make it.
	if resp, body := send(t, "POST", srv.URL+"/api/helloworld/call", `{"name":"Ada"}`, map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}); resp.StatusCode != 403 {
		t.Errorf("a call from another site's page: %d %s", resp.StatusCode, body)
	}
}

// The page in a DOM (jsdom, which make test installs into bin/jsdom and
// names in $MESH_JSDOM): a user lists the services, opens one, calls its
// endpoint and reads the answer (testdata/browser.js).
func TestDashboardInABrowser(t *testing.T) {
	modules := os.Getenv("MESH_JSDOM")
	if modules == "" {
		t.Skip("$MESH_JSDOM names no jsdom (make test installs it)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("$MESH_JSDOM is set but there is no node: %v", err)
	}
	cp := meshtest.NewEnv(t).StartControlPlane(meshtest.WithTracing(0)) // only the traced call is recorded
	hello := func(s *service.Service) { pb.RegisterHelloworldServer(s.Server(), handler.Helloworld{}) }
	often := meshtest.WithOptions(func(o *dataplane.Options) { o.StatsInterval = 200 * time.Millisecond })
	cp.StartService("default", "helloworld", hello, often, meshtest.WithOptions(func(o *dataplane.Options) { o.Version = "v1" }))
	cp.StartService("prod", "helloworld", hello, often)
	web := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(web.Close)
	cp.StartSidecar("default", "web", meshtest.WithApp(strings.TrimPrefix(web.URL, "http://"), "http"))
	cp.StartSidecar("default", "db", meshtest.WithApp("127.0.0.1:1", "tcp")) // a TCP service: no app needed to be listed
	srv := serveDashboard(t, cp)
	poll.Until(t, "the gateway routes to the services", 10*time.Second, 20*time.Millisecond, func() bool {
		_, body := get(t, srv.URL+"/api/", nil)
		return strings.Count(body, `"path"`) == 4
	})
	// prod's helloworld asks for accounts' tokens: the page's token field.
	token := accountsOf(t, cp, "prod", "ann")
	if err := cp.Registry().SetPolicy(t.Context(), registry.Policy{Service: "helloworld", Namespace: "prod", Keys: map[string]string{"scopes": "*"}}); err != nil {
		t.Fatal(err)
	}
	if err := cp.Registry().SetExternal(t.Context(), registry.External{Name: "payments", Host: "api.payments.example"}); err != nil {
		t.Fatal(err)
	}
	same := map[string]string{"Content-Type": "application/json", "Origin": srv.URL, "Sec-Fetch-Site": "same-origin"}
	poll.Until(t, "prod's helloworld to ask for a token", 10*time.Second, 20*time.Millisecond, func() bool {
		resp, _ := send(t, "POST", srv.URL+"/api/helloworld.prod/call", `{"name":"x"}`, same)
		return resp.StatusCode == 403
	})
	cmd := exec.CommandContext(t.Context(), node, "testdata/browser.js", srv.URL+"/", token)
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	out, err := cmd.CombinedOutput()
	t.Logf("browser.js:\n%s", out)
	if err != nil {
		t.Errorf("the page in a DOM: %v", err)
	}
}

// accountsOf gives the control plane a signing key of the test's, as the
// auth service's, and returns a token of account name in namespace ns
// signed with it.
func accountsOf(t *testing.T, cp *meshtest.ControlPlane, ns, name string) string {
	t.Helper()
	is := tokentest.New(t, "test")
	cp.SetAccountKeys(is.JWKS)
	return is.Sign(t, tokentest.Account(time.Now(), "micromesh.local", ns, name))
}
