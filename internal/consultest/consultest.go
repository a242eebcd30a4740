// Package consultest runs a real Consul dev agent for tests: the binary the
// Makefile builds into bin/consul (Consul 1.15.4, the last MPL release),
// on loopback ports of its own, in-memory, stopped by t.Cleanup.
package consultest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/micromesh/micromesh/internal/ports"
	"github.com/micromesh/micromesh/internal/syncbuf"
)

// BinaryEnv names the variable that may point at the consul binary; by
// default the tests use bin/consul at the top of the repository.
const BinaryEnv = "MESH_CONSUL_BIN"

// Agent is a running Consul dev agent.
type Agent struct {
	t    testing.TB
	bin  string
	Addr string // HTTP API, host:port
	args []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
	log    *syncbuf.Buffer
}

// Start starts a dev agent and waits until it has a leader.
func Start(t testing.TB) *Agent {
	t.Helper()
	bin := binary(t)
	a := &Agent{t: t, bin: bin}
	t.Cleanup(func() {
		a.Stop()
		if t.Failed() {
			t.Logf("consul agent log:\n%s", a.Log())
		}
	})
	// The ports are picked free, then bound by the agent; another process
	// may take one in between: start again on others.
	for attempt := 1; ; attempt++ {
		ps, err := ports.FreeLoopback(4) // serf speaks TCP and UDP
		if err != nil {
			t.Fatal(err)
		}
		a.Addr = "127.0.0.1:" + strconv.Itoa(ps[0])
		a.args = []string{"agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
			"-http-port", strconv.Itoa(ps[0]), "-serf-lan-port", strconv.Itoa(ps[1]),
			"-serf-wan-port", strconv.Itoa(ps[2]), "-server-port", strconv.Itoa(ps[3]),
			"-grpc-port", "-1", "-grpc-tls-port", "-1", "-dns-port", "-1", "-log-level", "info"}
		err = a.start()
		if err == nil {
			return a
		}
		if attempt == 3 || !ports.InUse(a.Log()) {
			t.Fatal(err)
		}
		t.Logf("consul agent lost a port (%v); trying others", err)
	}
}

func (a *Agent) start() error {
	a.t.Helper()
	a.mu.Lock()
	cmd := exec.Command(a.bin, a.args...)
	a.log = &syncbuf.Buffer{} // one writer for both: exec then writes from one goroutine
	cmd.Stdout, cmd.Stderr = a.log, a.log
	if err := cmd.Start(); err != nil {
		a.mu.Unlock()
		return fmt.Errorf("start consul: %w", err)
	}
	a.cmd = cmd
	exited := make(chan struct{})
	a.exited = exited
	go func() { _ = cmd.Wait(); close(exited) }()
	a.mu.Unlock()
	// Ready means a check update reaches the catalog at once. A new leader
	// makes the agent schedule a full anti-entropy sync up to 3 s later
	// (Consul's serverUpIntv, staggered), and partial syncs — a lapsed TTL
	// among them — wait behind it; a test of "within 1 s" would measure the
	// agent's warm-up. So: a leader, 3.5 s, then two prompt probes.
	deadline := time.Now().Add(30 * time.Second)
	var leaderAt time.Time
	prompt := 0
	for prompt < 2 {
		var err error
		switch {
		case leaderAt.IsZero():
			var leader string
			if err = getJSON("http://"+a.Addr+"/v1/status/leader", &leader); err == nil && leader != "" {
				leaderAt = time.Now()
			}
		case time.Since(leaderAt) < 3500*time.Millisecond:
		default:
			if err = a.probe(); err == nil {
				prompt++
				continue
			}
			prompt = 0
		}
		select {
		case <-exited:
			a.Stop()
			return fmt.Errorf("consul agent at %s exited while starting:\n%s", a.Addr, a.Log())
		default:
		}
		if time.Now().After(deadline) {
			a.Stop()
			return fmt.Errorf("consul agent at %s not ready after 30s: %v\n%s", a.Addr, err, a.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = do("PUT", "http://"+a.Addr+"/v1/agent/service/deregister/consultest-probe", "")
	return nil
}

// probe registers a probe service whose 300 ms TTL check lapses at once,
// and reports whether the catalog shows it critical within 200 ms of the lapse.
func (a *Agent) probe() error {
	base := "http://" + a.Addr
	start := time.Now()
	if err := do("PUT", base+"/v1/agent/service/register?replace-existing-checks=true",
		`{"ID":"consultest-probe","Name":"consultest-probe","Port":1,"Check":{"CheckID":"consultest-probe","TTL":"300ms","Status":"passing"}}`); err != nil {
		return err
	}
	for end := start.Add(500 * time.Millisecond); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		var checks []struct{ Status string }
		if err := getJSON(base+"/v1/health/checks/consultest-probe", &checks); err != nil {
			return err
		}
		if len(checks) == 1 && checks[0].Status == "critical" {
			return nil
		}
	}
	return fmt.Errorf("a lapsed TTL check was not critical in the catalog within 200ms")
}

func do(method, url, body string) error {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s", method, url, resp.Status)
	}
	return nil
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// Log returns what the agent has logged.
func (a *Agent) Log() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.log.String()
}

// Stop stops the agent (a dev agent forgets everything).
func (a *Agent) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return
	}
	_ = a.cmd.Process.Kill()
	<-a.exited
	a.cmd = nil
}

// Restart starts a fresh agent on the same ports.
func (a *Agent) Restart() {
	a.t.Helper()
	a.Stop()
	if err := a.start(); err != nil {
		a.t.Fatal(err)
	}
}

// binary finds the consul binary: $MESH_CONSUL_BIN, or bin/consul in the
// repository this test runs in.
func binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(BinaryEnv); p != "" {
		return p
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if p := filepath.Join(dir, "bin", "consul"); fileExists(p) {
				return p
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no consul binary: run `make bin/consul` (make test builds it), or set " + BinaryEnv)
		}
		dir = parent
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// Ctx returns a context for a test's calls.
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
