package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/micromesh/micromesh/internal/poll"
	"github.com/micromesh/micromesh/internal/syncbuf"
)

// gitService makes a git repository of helloworld as its own module
// (depending on this one through a replace directive) and returns its
// file:// URL.
func gitService(t *testing.T) string {
	t.Helper()
	root, _ := filepath.Abs("../..")
	dir := filepath.Join(t.TempDir(), "greeter")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	main, err := os.ReadFile(filepath.Join(root, "examples/helloworld/main.go"))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	mod := "module example.com/greeter\n\ngo 1.26\n\nrequire github.com/micromesh/micromesh v0.0.0\n\nreplace github.com/micromesh/micromesh => " + root + "\n"
	for name, data := range map[string][]byte{"main.go": main, "go.mod": []byte(mod), "go.sum": sum} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{
		// -e: offline, tidy cannot look up the modules only the tests of
		// dependencies import (go-cmp for grpc's); the build needs none of them.
		{"go", "mod", "tidy", "-e"},
		{"git", "init", "--quiet", "--initial-branch", "main"},
		{"git", "add", "."},
		{"git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "--quiet", "-m", "greeter"},
		{"git", "tag", "v1"},
	} {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	return "file://" + dir
}

type runtimeStatus struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Status    string `json:"status"`
	Instances []struct {
		ID           string   `json:"id"`
		Status       string   `json:"status"`
		Restarts     int      `json:"restarts"`
		LastExitCode int      `json:"last_exit_code"`
		LastLines    []string `json:"last_lines"`
	} `json:"instances"`
}

func statusOf(ctx context.Context, t *testing.T, s *testServer, name string) runtimeStatus {
	t.Helper()
	var svcs []runtimeStatus
	out := s.run(ctx, t, meshctl, "status", name, "-o", "json")
	if err := json.Unmarshal([]byte(out), &svcs); err != nil || len(svcs) != 1 {
		t.Fatalf("status %s: %v\n%s", name, err, out)
	}
	return svcs[0]
}

// A git source at a tag; an update under a steady stream of calls fails
// none; a crash-looping service backs off and disturbs no other.
func TestGitSourceUpdateAndCrashLoop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	srv := startServer(ctx, t)
	examples, _ := filepath.Abs("../../examples")
	out := srv.run(ctx, t, meshctl, "run", gitService(t)+"@v1", "--name", "helloworld")
	if !strings.Contains(out, "helloworld is running") {
		t.Fatalf("run from git:\n%s", out)
	}
	st := statusOf(ctx, t, srv, "helloworld")
	if len(st.Version) != 7 { // the short commit
		t.Errorf("version of a git source = %q, want its commit", st.Version)
	}
	// The runtime injected mesh-sidecar, the binary beside meshctl.
	if n := running(filepath.Join(filepath.Dir(meshctl), "mesh-sidecar")); n != 1 {
		t.Errorf("%d mesh-sidecar processes run, want the one of helloworld's instance", n)
	}
	srv.run(ctx, t, meshctl, "run", filepath.Join(examples, "pingpong"))

	// Calls through pingpong's sidecar to helloworld while it is replaced.
	var calls, failed atomic.Int64
	var firstErr sync.Once
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("w%d-%d", w, i)
				out, err := srv.try(ctx, meshctl, "call", "pingpong", "Pingpong.Ping", `{"name":"`+name+`"}`)
				calls.Add(1)
				if err != nil || !strings.Contains(out, "Hello "+name) {
					failed.Add(1)
					firstErr.Do(func() { t.Errorf("call during update: %v\n%s", err, out) })
				}
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	srv.run(ctx, t, meshctl, "update", "helloworld")
	time.Sleep(1500 * time.Millisecond) // calls after the old instance is gone
	updated := statusOf(ctx, t, srv, "helloworld")
	if updated.Instances[0].ID == st.Instances[0].ID {
		t.Errorf("update kept instance %s", updated.Instances[0].ID)
	}
	// Scaled out and back in under the same calls: the new instances
	// registered before scale answers, the extra ones drained.
	if out := srv.run(ctx, t, meshctl, "scale", "helloworld", "3"); !strings.Contains(out, "helloworld scaled: 3 instance(s)") {
		t.Errorf("scale to 3: %s", out)
	}
	if n := len(statusOf(ctx, t, srv, "helloworld").Instances); n != 3 {
		t.Errorf("%d instances after scale 3", n)
	}
	time.Sleep(time.Second)
	srv.run(ctx, t, meshctl, "scale", "helloworld", "1")
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	t.Logf("update and scale under load: %d calls, %d failed", calls.Load(), failed.Load())
	if after := statusOf(ctx, t, srv, "helloworld"); len(after.Instances) != 1 || after.Instances[0].ID != updated.Instances[0].ID {
		t.Errorf("after scale 1: %+v; want the first instance kept", after.Instances)
	}
	if state, err := os.ReadFile(filepath.Join(srv.home, "runtime", "services.json")); err != nil || !strings.Contains(string(state), `"instances": 1`) {
		t.Errorf("the runtime's saved state after scaling: %v\n%s", err, state)
	}
	// tap: the requests helloworld takes, live, while it runs; its proxy
	// sends them only while someone taps — not after Ctrl-C, nor after a
	// tap killed outright — and its policy is never touched.
	helloNode := regexp.MustCompile(`spiffe://[^"]*/svc/helloworld~[^"]*`)
	tapLogger := func() bool {
		node := helloNode.FindString(srv.run(ctx, t, meshctl, "proxy-status", "-o", "json"))
		return strings.Contains(srv.run(ctx, t, meshctl, "proxy-config", node, "listeners"), "envoy.access_loggers.open_telemetry")
	}
	startTap := func() (*exec.Cmd, *syncbuf.Buffer) {
		tap := srv.command(ctx, meshctl, "tap", "helloworld", "-o", "json")
		tap.Env, tap.Dir = srv.env, srv.home
		tapped := &syncbuf.Buffer{}
		tap.Stdout, tap.Stderr = tapped, tapped
		if err := tap.Start(); err != nil {
			t.Fatal(err)
		}
		return tap, tapped
	}
	tap, tapped := startTap()
	poll.Until(t, "a call through pingpong in tap's output", 20*time.Second, 300*time.Millisecond, func() bool {
		srv.try(ctx, meshctl, "call", "pingpong", "Pingpong.Ping", `{"name":"Tap"}`)
		return strings.Contains(tapped.String(), `"source": "pingpong.default"`) && strings.Contains(tapped.String(), `"path": "/examples.helloworld.v1.Helloworld/Call"`)
	})
	if out := srv.run(ctx, t, meshctl, "services", "-o", "json"); strings.Contains(out, "access_log") {
		t.Errorf("tap set helloworld's policy:\n%s", out)
	}
	_ = tap.Process.Signal(os.Interrupt)
	if err := tap.Wait(); err != nil {
		t.Errorf("tap after Ctrl-C: %v\n%s", err, tapped.String())
	}
	poll.Until(t, "helloworld's proxy to stop sending after Ctrl-C", 10*time.Second, 100*time.Millisecond, func() bool { return !tapLogger() })
	tap, _ = startTap()
	poll.Until(t, "helloworld's proxy to send while tapped again", 10*time.Second, 100*time.Millisecond, tapLogger)
	_ = tap.Process.Kill()
	_ = tap.Wait()
	poll.Until(t, "helloworld's proxy to stop sending after tap was killed", 10*time.Second, 100*time.Millisecond, func() bool { return !tapLogger() })
	if out, err := srv.try(ctx, meshctl, "tap", "nosuch"); err == nil || !strings.Contains(out, "nosuch is not a service in namespace default") {
		t.Errorf("tap nosuch: %v\n%s", err, out)
	}
	for _, bad := range [][]string{{"scale", "helloworld", "0"}, {"scale", "helloworld", "17"}, {"scale", "nosuch", "2"}} {
		if out, err := srv.try(ctx, meshctl, bad...); err == nil {
			t.Errorf("%v: no error\n%s", bad, out)
		} else if !strings.Contains(out, "1 to 16") && !strings.Contains(out, "not running") {
			t.Errorf("%v: %s", bad, out)
		}
	}

	// The crasher serves, exits with 2 after 1.5 s, again and again: the
	// pauses grow (1 s, 2 s, 4 s …) and the others keep answering.
	crasher, _ := filepath.Abs("testdata/crasher")
	srv.run(ctx, t, meshctl, "run", crasher)
	deadline := time.Now().Add(9 * time.Second)
	for time.Now().Before(deadline) {
		if out, err := srv.try(ctx, meshctl, "call", "helloworld", "Helloworld.Call", `{"name":"x"}`); err != nil {
			t.Errorf("helloworld while crasher loops: %v\n%s", err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	cs := statusOf(ctx, t, srv, "crasher")
	in := cs.Instances[0]
	// 9 s: crash at ~1.5, ~4 (1 s pause), ~7.5 (2 s pause); the next pause is 4 s.
	if in.Restarts < 2 || in.Restarts > 4 || in.LastExitCode != 2 {
		t.Errorf("crasher after 9 s: %d restarts, last exit %d (want 2-4 restarts with backoff, code 2)", in.Restarts, in.LastExitCode)
	}
	text := srv.run(ctx, t, meshctl, "status", "crasher")
	if !strings.Contains(text, "last exit code 2") {
		t.Errorf("status crasher:\n%s", text)
	}
	if logs := srv.run(ctx, t, meshctl, "logs", "crasher"); strings.Count(logs, "crashing on purpose") < 2 {
		t.Errorf("logs of crasher:\n%s", logs)
	}
	for _, name := range []string{"crasher", "pingpong", "helloworld"} {
		srv.run(ctx, t, meshctl, "kill", name)
	}
	srv.interrupt(t)
}

// running counts the processes executing the binary at path.
func running(path string) int {
	exes, _ := filepath.Glob("/proc/[0-9]*/exe")
	n := 0
	for _, exe := range exes {
		if target, err := os.Readlink(exe); err == nil && target == path {
			n++
		}
	}
	return n
}
