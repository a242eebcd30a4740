package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/micromesh/micromesh/internal/poll"
)

// pids lists the app and sidecar PIDs of what the runtime runs.
func pids(ctx context.Context, t *testing.T, s *testServer) []int {
	t.Helper()
	var svcs []struct {
		Instances []struct {
			AppPid     json.Number `json:"app_pid"`
			SidecarPid json.Number `json:"sidecar_pid"`
		} `json:"instances"`
	}
	out := s.run(ctx, t, meshctl, "status", "-o", "json")
	if err := json.Unmarshal([]byte(out), &svcs); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, out)
	}
	var ps []int
	for _, svc := range svcs {
		for _, in := range svc.Instances {
			for _, n := range []json.Number{in.AppPid, in.SidecarPid} {
				if v, err := n.Int64(); err == nil && v > 0 {
					ps = append(ps, int(v))
				}
			}
		}
	}
	return ps
}

func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// writeModule writes a one-file Go module (a service that does not build,
// or one that exits at once).
func writeModule(t *testing.T, main string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/broken\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The README's quick start, as a user runs it: the server, run helloworld
// and pingpong from source, call through the mesh, read the logs, kill,
// and nothing is left running.
func TestQuickStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	srv := startServer(ctx, t)
	examples, err := filepath.Abs("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out := srv.run(ctx, t, meshctl, "run", filepath.Join(examples, "helloworld"))
	if !strings.Contains(out, "helloworld is running: 1 instance(s)") {
		t.Fatalf("run helloworld:\n%s", out)
	}
	out = srv.run(ctx, t, meshctl, "call", "helloworld", "Helloworld.Call", `{"name":"Alice"}`)
	t.Logf("run helloworld → first successful call: %v", time.Since(start).Round(time.Millisecond))
	if out != `{"msg":"Hello Alice"}`+"\n" {
		t.Fatalf("call helloworld: %q", out)
	}
	// A traffic policy for pingpong's callers, one path's too: its sidecar
	// registers it (a malformed --policy would keep the sidecar from
	// starting), and services shows it.
	srv.run(ctx, t, meshctl, "run", filepath.Join(examples, "pingpong"), "--policy", "timeout=30s", "--policy", "retries=1",
		"--policy", "/examples.pingpong.v1.Pingpong/*:retries=0", "--policy", "rate_limit=500")
	if out := srv.run(ctx, t, meshctl, "call", "pingpong", "Pingpong.Ping", `{"name":"Bob"}`); out != `{"msg":"Hello Bob"}`+"\n" {
		t.Fatalf("call pingpong: %q", out)
	}
	// Every service is a command of its own.
	if out := srv.run(ctx, t, meshctl, "helloworld", "call", "--name", "Carol"); out != `{"msg":"Hello Carol"}`+"\n" {
		t.Errorf("meshctl helloworld call --name Carol: %q", out)
	}
	// The API gateway: HTTP and JSON from outside the mesh, as curl sends it.
	for path, want := range map[string]string{"/helloworld/call": `{"msg":"Hello Carol"}`, "/pingpong/ping": `{"msg":"Hello Carol"}`} {
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+srv.gateway+path, strings.NewReader(`{"name":"Carol"}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != want {
			t.Errorf("POST %s through the gateway: %d %s", path, resp.StatusCode, body)
		}
	}
	// The dashboard lists them, and calls through the gateway.
	for path, want := range map[string]string{"/status": `"name":"pingpong"`, "/api/pingpong": `"path":"/pingpong/ping"`} {
		resp, err := http.Get("http://" + srv.dashboard + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s from the dashboard: %d %s", path, resp.StatusCode, body)
		}
	}
	// A traced call through the real processes: the CLI's own span, then
	// each sidecar's and pingpong's own (OpenTelemetry's API; the runtime
	// pointed its SDK at its sidecar), one tree: pingpong's span under its
	// sidecar's SERVER span, its call to helloworld under its span.
	out = srv.run(ctx, t, meshctl, "call", "pingpong", "Pingpong.Ping", `{"name":"Dee"}`, "--trace")
	m := regexp.MustCompile(`meshctl trace ([0-9a-f]{32})`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("call --trace names no trace:\n%s", out)
	}
	var spans []struct {
		SpanID   string `json:"span_id"`
		ParentID string `json:"parent_span_id"`
		Service  string `json:"service"`
		Kind     string `json:"kind"`
		Name     string `json:"name"`
	}
	poll.Until(t, "the traced call's five spans", 20*time.Second, 200*time.Millisecond, func() bool {
		out, err := srv.try(ctx, meshctl, "trace", m[1], "-o", "json")
		return err == nil && json.Unmarshal([]byte(out), &spans) == nil && len(spans) == 5
	})
	var hops []string
	for i, s := range spans {
		hops = append(hops, s.Service+" "+s.Kind)
		if i > 0 && s.ParentID != spans[i-1].SpanID {
			t.Errorf("span %d (%s %s %q) has parent %s, want the span before it, %s", i, s.Service, s.Kind, s.Name, s.ParentID, spans[i-1].SpanID)
		}
	}
	if got := strings.Join(hops, " → "); got != "meshctl.micromesh CLIENT → pingpong.default SERVER → pingpong.default INTERNAL → pingpong.default CLIENT → helloworld.default SERVER" {
		t.Errorf("the trace's hops: %s", got)
	}
	if spans[2].Name != "ask helloworld" {
		t.Errorf("pingpong's own span is named %q, want %q", spans[2].Name, "ask helloworld")
	}
	if out := srv.run(ctx, t, meshctl, "services"); !strings.Contains(out, "/examples.pingpong.v1.Pingpong/*:retries=0 rate_limit=500 retries=1 timeout=30s") {
		t.Errorf("services does not show pingpong's policy:\n%s", out)
	}

	// The logs hold the request, from the app (with its caller) and its
	// sidecar; the call pingpong made while serving Ping carries Ping's
	// request ID, so both apps' lines name the same request.
	logs := srv.run(ctx, t, meshctl, "logs", "helloworld")
	if !strings.Contains(logs, "method=/examples.helloworld.v1.Helloworld/Call") || !strings.Contains(logs, "caller=spiffe://micromesh.local/ns/default/svc/pingpong") || !strings.Contains(logs, "sidecar ready") {
		t.Errorf("logs of helloworld:\n%s", logs)
	}
	if m := regexp.MustCompile(`caller=spiffe://micromesh\.local/ns/default/svc/pingpong request_id=([0-9a-f-]{36})`).FindStringSubmatch(logs); m == nil {
		t.Errorf("helloworld's line for pingpong's call names no request ID:\n%s", logs)
	} else if pp := srv.run(ctx, t, meshctl, "logs", "pingpong"); !strings.Contains(pp, "method=/examples.pingpong.v1.Pingpong/Ping") || !strings.Contains(pp, "request_id="+m[1]) {
		t.Errorf("pingpong's logs do not name the request ID %s that reached helloworld:\n%s", m[1], pp)
	}
	status := srv.run(ctx, t, meshctl, "status")
	for _, want := range []string{"NAME", "VERSION", "SOURCE", "INSTANCES", "STATUS", "UPDATED", "helloworld", "pingpong", "1/1", "running"} {
		if !strings.Contains(status, want) {
			t.Errorf("status lacks %q:\n%s", want, status)
		}
	}

	// A key may have leaked: the operator revokes helloworld's
	// certificates. Its sidecar finds itself on the revocation list and
	// stops, the runtime starts it again with a new join token, and
	// helloworld answers again, pingpong's calls to it included.
	if out := srv.run(ctx, t, meshctl, "cert", "revoke", "--service", "helloworld", "--reason", "quick start"); !strings.Contains(out, "spiffe://micromesh.local/ns/default/svc/helloworld") {
		t.Errorf("cert revoke --service helloworld:\n%s", out)
	}
	poll.Until(t, "the runtime to start helloworld's sidecar again", 30*time.Second, 200*time.Millisecond, func() bool {
		return strings.Contains(srv.logs.String(), "sidecar exited; restarting it")
	})
	poll.Until(t, "pingpong to reach helloworld again", 60*time.Second, 500*time.Millisecond, func() bool {
		out, err := srv.try(ctx, meshctl, "call", "pingpong", "Pingpong.Ping", `{"name":"Eve"}`)
		return err == nil && out == `{"msg":"Hello Eve"}`+"\n"
	})
	if out := srv.run(ctx, t, meshctl, "cert", "revoked"); !strings.Contains(out, "quick start") {
		t.Errorf("cert revoked:\n%s", out)
	}

	// Bad input, each with what to do about it, leaving nothing running.
	before := pids(ctx, t, srv)
	for _, tc := range []struct {
		args    []string
		mention []string
	}{
		{[]string{"run", writeModule(t, "package main\n\nfunc main() { undefinedThing() }\n")}, []string{"go build", "undefined: undefinedThing"}},
		{[]string{"run", writeModule(t, "package main\n\nimport (\"fmt\"; \"os\")\n\nfunc main() { fmt.Println(\"cannot start: no config\"); os.Exit(3) }\n"), "--name", "quitter"}, []string{"exited with code 3", "cannot start: no config"}},
		{[]string{"run", filepath.Join(examples, "helloworld")}, []string{"AlreadyExists", "meshctl update helloworld"}},
		{[]string{"run", filepath.Join(examples, "nosuchdir")}, []string{"InvalidArgument", "no such file"}},
		{[]string{"run", filepath.Join(examples, "helloworld"), "--name", "hw2", "--policy", "timeout=soon"}, []string{"InvalidArgument", `policy_timeout: "soon" is not a duration`}},
		{[]string{"call", "nosuch", "X.Y", "{}"}, []string{"not running", "helloworld, pingpong"}},
		{[]string{"call", "helloworld", "Helloworld.Nope", "{}"}, []string{"unknown endpoint", "Helloworld.Call"}},
		{[]string{"call", "helloworld", "Helloworld.Call", `{"name": nope}`}, []string{"request JSON", "line 1:10"}},
		{[]string{"kill", "nosuch"}, []string{"NotFound", "running: helloworld, pingpong"}},
	} {
		out, err := srv.try(ctx, meshctl, tc.args...)
		for _, m := range tc.mention {
			if err == nil || !strings.Contains(out, m) {
				t.Errorf("meshctl %s: %v\n%s\nwant it to mention %q", strings.Join(tc.args, " "), err, out, m)
			}
		}
	}
	if after := pids(ctx, t, srv); len(after) != len(before) {
		t.Errorf("failed runs left processes: %v, before %v", after, before)
	}

	// kill leaves no process behind.
	ps := pids(ctx, t, srv)
	if len(ps) != 4 {
		t.Fatalf("pids = %v, want 2 apps and 2 sidecars", ps)
	}
	srv.run(ctx, t, meshctl, "kill", "pingpong")
	srv.run(ctx, t, meshctl, "kill", "helloworld")
	for _, pid := range ps {
		if alive(pid) {
			t.Errorf("process %d still runs after kill", pid)
		}
	}
	if out := srv.run(ctx, t, meshctl, "status"); !strings.Contains(out, "no services run") {
		t.Errorf("status after kill:\n%s", out)
	}
	srv.interrupt(t)
	if strings.Contains(srv.logs.String(), "eyJ") {
		t.Error("a token reached the server's logs")
	}
}

// The server stops what it runs on Ctrl-C, and starts it again when it
// starts again.
func TestServerRestartStartsServicesAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	srv := startServer(ctx, t)
	examples, _ := filepath.Abs("../../examples")
	srv.run(ctx, t, meshctl, "run", filepath.Join(examples, "helloworld"))
	ps := pids(ctx, t, srv)
	srv.interrupt(t)
	for _, pid := range ps {
		if alive(pid) {
			t.Errorf("process %d still runs after the server stopped", pid)
		}
	}
	// Same home: the service comes back.
	again := startServerIn(ctx, t, srv.home)
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := again.try(ctx, meshctl, "call", "helloworld", "Helloworld.Call", `{"name":"again"}`)
		if err == nil && strings.Contains(out, "Hello again") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("helloworld did not come back: %v\n%s\n%s", err, out, again.logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	again.interrupt(t)
}
