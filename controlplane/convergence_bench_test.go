package controlplane_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/identity/ca"
	"github.com/micromesh/micromesh/internal/adstest"
	"github.com/micromesh/micromesh/internal/home"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
)

// Convergence: a registry change to the last ACK of the proxies it
// concerns, with 10,000 endpoints (1,000 services × 10) and N proxies on real
// gRPC streams (delta xDS, mTLS). The control plane runs as its own process
// (meshctl server) so its RSS is its own.
//
// Two topologies:
//   - namespaces=1: every proxy may call every service — the worst case:
//     each change reaches all N proxies, each holding 1,000 clusters.
//   - namespaces=50: 20 services per namespace, proxies spread over them, as
//     the default rules scope a mesh: a change reaches the proxies of its
//     namespace.
//
// proxies=1 is the same-run baseline: the fixed cost of a change (API call,
// registry commit, debounce, build, push, ACK) with no fan-out.
//
//	go test -run '^$' -bench Convergence -benchtime 20x -timeout 60m ./controlplane/
func BenchmarkConvergence(b *testing.B) {
	for _, ns := range []int{1, 50} {
		for _, n := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("namespaces=%d/proxies=%d", ns, n), func(b *testing.B) { benchConvergence(b, n, 1000, 10, ns, false) })
		}
	}
}

// BenchmarkConvergenceSotW is the worst case of BenchmarkConvergence with
// state-of-the-world streams, as Envoy's bootstrap asks for: every change
// sends each proxy all its clusters or endpoints again.
//
//	go test -run '^$' -bench ConvergenceSotW -benchtime 10x -timeout 60m ./controlplane/
func BenchmarkConvergenceSotW(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("namespaces=1/proxies=%d", n), func(b *testing.B) { benchConvergence(b, n, 1000, 10, 1, true) })
	}
}

func namespaceOf(i, namespaces int) string { return fmt.Sprintf("ns-%02d", i%namespaces) }

func benchConvergence(b *testing.B, proxies, services, instances, namespaces int, sotw bool) {
	srv := startServerProcess(b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	admin := srv.join(b, identity.SystemNamespace, "bench-admin")
	regConn, err := adstest.Dial(srv.info.Address, admin.Bundle, admin.TLSCertificate())
	if err != nil {
		b.Fatal(err)
	}
	defer regConn.Close()
	reg := registryv1.NewRegistryServiceClient(regConn.ClientConn)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for s := range services {
		for i := range instances {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				if _, err := reg.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{
					Id: fmt.Sprintf("svc-%04d-%d", s, i), Service: fmt.Sprintf("svc-%04d", s), Namespace: namespaceOf(s, namespaces),
					Address: fmt.Sprintf("10.%d.%d.%d", s/250, s%250, i+1), Port: 8443, QuicPort: 8443, Kind: "builtin",
				}}); err != nil {
					b.Error(err)
				}
			}()
		}
	}
	wg.Wait()

	// The proxies of a namespace share one identity, told apart by instance.
	creds := map[string]*identity.Credentials{}
	for p := range min(proxies, namespaces) {
		creds[namespaceOf(p, namespaces)] = srv.join(b, namespaceOf(p, namespaces), "bench")
	}
	tracker := &convergence{acks: map[int]time.Time{}}
	start := time.Now()
	for p := range proxies {
		creds := creds[namespaceOf(p, namespaces)]
		conn, err := adstest.Dial(srv.info.Address, creds.Bundle, creds.TLSCertificate())
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		// A built-in sidecar as `meshctl run` starts one: an outbound
		// listener and an inbound one with its app's cluster.
		node := adstest.Node(identity.NodeID(creds.ID, strconv.Itoa(p)), map[string]any{"kind": "builtin", "outbound_port": 15001.0, "inbound_port": 15006.0, "app_port": 8080.0, "app_protocol": "http", "cert_dir": "/certs"})
		if sotw {
			s, err := conn.StreamSotW(ctx, node)
			if err != nil {
				b.Fatal(err)
			}
			go runProxySotW(p, s, services/namespaces, tracker)
			continue
		}
		d, err := conn.StreamDelta(ctx, node)
		if err != nil {
			b.Fatal(err)
		}
		go runProxy(p, d, services/namespaces, tracker)
	}
	tracker.waitSynced(b, proxies, services, 15*time.Minute)
	b.Logf("%d proxies synced %d clusters each in %v", proxies, services/namespaces, time.Since(start).Round(time.Millisecond))

	var p50s, p99s []time.Duration
	if path := os.Getenv("MESH_BENCH_CPUPROFILE"); path != "" {
		// Profile the control plane, not this process, while changes converge.
		go srv.cpuProfile(b, path, 10*time.Second)
	}
	b.ResetTimer()
	for round := range b.N {
		// A service of a namespace that has proxies.
		s := (round * namespaces) % services
		if proxies < namespaces {
			s = (round % proxies) + namespaces*(round%(services/namespaces))
		}
		svc, ns := fmt.Sprintf("svc-%04d", s), namespaceOf(s, namespaces)
		concerned := 0
		for p := range proxies {
			if namespaceOf(p, namespaces) == ns {
				concerned++
			}
		}
		tracker.begin(svc + "." + ns)
		t0 := time.Now()
		if _, err := reg.Register(ctx, &registryv1.RegisterRequest{Instance: &registryv1.Instance{
			Id: fmt.Sprintf("%s-extra-%d", svc, round), Service: svc, Namespace: ns,
			Address: fmt.Sprintf("10.200.%d.%d", round/250, round%250+1), Port: 8443, QuicPort: 8443, Kind: "builtin",
		}}); err != nil {
			b.Fatal(err)
		}
		lat := tracker.wait(b, concerned, t0, time.Minute)
		p50s = append(p50s, lat[len(lat)/2])
		p99s = append(p99s, lat[len(lat)*99/100])
	}
	b.StopTimer()
	if path := os.Getenv("MESH_BENCH_HEAPPROFILE"); path != "" {
		srv.fetch(b, "/debug/pprof/heap?gc=1", path)
	}
	slices.Sort(p50s)
	slices.Sort(p99s)
	b.ReportMetric(float64(p50s[len(p50s)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99s[len(p99s)/2].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(p99s[len(p99s)-1].Microseconds())/1000, "worst-p99-ms")
	b.ReportMetric(srv.rssMB(b), "cp-rss-MB")
	// MESH_BENCH_REST (a duration) also reports the RSS after that long
	// with no change: the runtime returns the initial sync's free pages
	// to the kernel in the background, over seconds.
	if rest, err := time.ParseDuration(os.Getenv("MESH_BENCH_REST")); err == nil {
		time.Sleep(rest)
		b.ReportMetric(srv.rssMB(b), "cp-rss-at-rest-MB")
	}
	b.ReportMetric(srv.liveHeapMB(b), "cp-live-heap-MB")
}

// convergence tracks, per round, when each proxy ACKed the changed cluster.
type convergence struct {
	mu      sync.Mutex
	synced  int
	target  string
	acks    map[int]time.Time
	changed chan struct{}
}

func (c *convergence) begin(cluster string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.target, c.acks, c.changed = cluster, map[int]time.Time{}, make(chan struct{}, 1)
}

func (c *convergence) ack(proxy int, names []string) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.target != "" && slices.Contains(names, c.target) {
		if _, seen := c.acks[proxy]; !seen {
			c.acks[proxy] = now
			select {
			case c.changed <- struct{}{}:
			default:
			}
		}
	}
}

func (c *convergence) wait(b *testing.B, proxies int, t0 time.Time, within time.Duration) []time.Duration {
	deadline := time.After(within)
	for {
		c.mu.Lock()
		n, ch := len(c.acks), c.changed
		if n == proxies {
			lat := make([]time.Duration, 0, n)
			for _, at := range c.acks {
				lat = append(lat, at.Sub(t0))
			}
			c.mu.Unlock()
			slices.Sort(lat)
			return lat
		}
		c.mu.Unlock()
		select {
		case <-ch:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			b.Fatalf("only %d of %d proxies converged within %v", n, proxies, within)
		}
	}
}

func (c *convergence) waitSynced(b *testing.B, proxies, clusters int, within time.Duration) {
	deadline := time.Now().Add(within)
	for {
		c.mu.Lock()
		n := c.synced
		c.mu.Unlock()
		if n == proxies {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d proxies synced within %v", n, proxies, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runProxy is one simulated proxy: clusters by wildcard, endpoints for each
// cluster, every response ACKed at once.
func runProxy(id int, d *adstest.Delta, clusters int, c *convergence) {
	if err := d.Subscribe(resource.ClusterType); err != nil {
		return
	}
	var subscribed bool
	endpoints := map[string]bool{}
	counted := false
	for {
		resp, err := d.Recv()
		if err != nil {
			return
		}
		var names []string
		for _, r := range resp.GetResources() {
			names = append(names, r.GetName())
		}
		if err := d.Ack(resp); err != nil {
			return
		}
		switch resp.GetTypeUrl() {
		case resource.ClusterType:
			if !subscribed {
				subscribed = true
				if err := d.Subscribe(resource.EndpointType, names...); err != nil {
					return
				}
			}
		case resource.EndpointType:
			for _, n := range names {
				endpoints[n] = true
			}
			c.ack(id, names)
			if !counted && len(endpoints) >= clusters {
				counted = true
				c.mu.Lock()
				c.synced++
				c.mu.Unlock()
			}
		}
	}
}

// runProxySotW is runProxy over a state-of-the-world stream. Every
// endpoints response holds every cluster's, so the first after a change
// is the change (names are decoded once, for the clusters: decoding
// 1,000 responses of 1,000 resources per change would take this
// process's CPU from the server's).
func runProxySotW(id int, s *adstest.SotW, clusters int, c *convergence) {
	if err := s.Subscribe(resource.ClusterType); err != nil {
		return
	}
	var names []string
	counted := false
	for {
		resp, err := s.Recv()
		if err != nil {
			return
		}
		switch resp.GetTypeUrl() {
		case resource.ClusterType:
			if err := s.Ack(resp); err != nil {
				return
			}
			if names == nil {
				if names, err = adstest.Names(resp); err != nil {
					return
				}
				if err := s.Subscribe(resource.EndpointType, names...); err != nil {
					return
				}
			}
		case resource.EndpointType:
			if err := s.Ack(resp, names...); err != nil {
				return
			}
			c.mu.Lock()
			target := c.target
			c.mu.Unlock()
			c.ack(id, []string{target})
			if !counted && len(resp.GetResources()) >= clusters {
				counted = true
				c.mu.Lock()
				c.synced++
				c.mu.Unlock()
			}
		}
	}
}

// serverProcess is `meshctl server` in a process of its own.
type serverProcess struct {
	cmd  *exec.Cmd
	home home.Dir
	info home.ServerInfo
}

func startServerProcess(b *testing.B) *serverProcess {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "meshctl")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/meshctl").CombinedOutput(); err != nil {
		b.Fatalf("build meshctl: %v\n%s", err, out)
	}
	dir := home.Dir(b.TempDir())
	cmd := exec.Command(bin, "server", "--home", string(dir), "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--gateway-addr", "off", "--dashboard-addr", "off", "--proxy-addr", "off", "--log-level", "warn")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	// MESH_BENCH_GOGC and MESH_BENCH_GOMEMLIMIT tune the server's garbage collector.
	cmd.Env = os.Environ()
	if v := os.Getenv("MESH_BENCH_GOGC"); v != "" {
		cmd.Env = append(cmd.Env, "GOGC="+v)
	}
	if v := os.Getenv("MESH_BENCH_GOMEMLIMIT"); v != "" {
		cmd.Env = append(cmd.Env, "GOMEMLIMIT="+v)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if !bufio.NewScanner(stdout).Scan() {
		b.Fatal("meshctl server printed no ready line")
	}
	go func() { _, _ = bufio.NewReader(stdout).WriteTo(discard{}) }()
	info, err := dir.ReadServerInfo()
	if err != nil {
		b.Fatal(err)
	}
	return &serverProcess{cmd: cmd, home: dir, info: info}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func (s *serverProcess) join(b *testing.B, ns, name string) *identity.Credentials {
	b.Helper()
	signer, err := ca.LoadTokenSigner(s.home.CA())
	if err != nil {
		b.Fatal(err)
	}
	id, err := identity.ServiceID(s.info.TrustDomain, ns, name)
	if err != nil {
		b.Fatal(err)
	}
	tok, err := signer.Mint(id, time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	creds, err := identity.Join(context.Background(), s.info.Address, nil, id, tok)
	if err != nil {
		b.Fatal(err)
	}
	return creds
}

// cpuProfile saves the server's CPU profile over d to path.
func (s *serverProcess) cpuProfile(b *testing.B, path string, d time.Duration) {
	s.fetch(b, fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(d.Seconds())), path)
}

// fetch saves what the server's admin port answers at urlPath to path.
func (s *serverProcess) fetch(b *testing.B, urlPath, path string) {
	resp, err := http.Get("http://" + s.info.AdminAddress + urlPath)
	if err != nil {
		b.Log(err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		b.Log(err)
		return
	}
	defer f.Close()
	_, _ = io.Copy(f, resp.Body)
}

// liveHeapMB is the server's heap after a collection: what it holds, not
// the garbage collector's headroom.
func (s *serverProcess) liveHeapMB(b *testing.B) float64 {
	resp, err := http.Get("http://" + s.info.AdminAddress + "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	stats := map[string]float64{}
	for sc.Scan() {
		if name, value, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "# "), " = "); ok {
			value, _, _ = strings.Cut(value, " / ") // Stack = in use / from the OS
			if n, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
				stats[name] = n / (1 << 20)
			}
		}
	}
	// Where the rest of the RSS is: the heap's spans, free pages not yet
	// returned to the kernel, goroutine stacks.
	b.Logf("control plane MB: heap live %.0f, in use %.0f, idle not released %.0f; stacks %.0f; runtime total %.0f",
		stats["HeapAlloc"], stats["HeapInuse"], stats["HeapIdle"]-stats["HeapReleased"], stats["Stack"], stats["Sys"])
	return stats["HeapAlloc"]
}

// rssMB reads the server process's resident set size.
func (s *serverProcess) rssMB(b *testing.B) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return float64(kb) / 1024
		}
	}
	return 0
}
