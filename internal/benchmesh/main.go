// Command benchmesh compares the data plane with a direct connection and an
// nginx mTLS pair, side by side in one run (`make bench-dataplane`). It
// starts everything itself: a control plane, a fortio echo server, the
// built-in sidecars as real processes, and two nginx processes with a
// throwaway CA; runs fortio in interleaved rounds (A B C D, A B C D, ...);
// and prints one table.
//
//	(A) fortio → echo
//	(B) fortio → sidecar → HTTP/3 over QUIC, mTLS → sidecar → echo
//	(C) the same pair, HTTP/2 over TLS
//	(D) fortio → nginx → TLS 1.3, mTLS → nginx → echo
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchmesh:", err)
		os.Exit(1)
	}
}

type options struct {
	serverArgs          string
	meshctl, sidecar    string
	fortio, nginx       string
	rounds              int
	duration            time.Duration
	qps, conns, payload int
	sidecarEnv, profile string
	paths, compare      string
	hold                bool
}

func run() error {
	var o options
	flag.StringVar(&o.meshctl, "meshctl", "bin/meshctl", "meshctl binary")
	flag.StringVar(&o.sidecar, "sidecar", "bin/mesh-sidecar", "sidecar binary, as the runtime injects it (meshctl: its sidecar command)")
	flag.StringVar(&o.fortio, "fortio", "bin/fortio", "fortio binary")
	flag.StringVar(&o.nginx, "nginx", "nginx", "nginx binary")
	flag.IntVar(&o.rounds, "rounds", 3, "interleaved rounds")
	flag.DurationVar(&o.duration, "t", 10*time.Second, "duration of each run")
	flag.IntVar(&o.qps, "qps", 1000, "fixed rate for the latency runs")
	flag.IntVar(&o.conns, "c", 16, "connections")
	flag.IntVar(&o.payload, "payload", 1024, "request payload bytes (POST)")
	flag.StringVar(&o.sidecarEnv, "sidecar-env", "", "extra environment of the sidecars, space-separated (GOGC=200 GOMAXPROCS=1)")
	flag.StringVar(&o.paths, "paths", "ABCD", "the paths to run, by letter (A is the baseline of the added latencies and always runs)")
	flag.StringVar(&o.compare, "compare", "", "another sidecar binary: adds path E, B's pair run by this binary, interleaved with the others (to compare two builds in one run)")
	flag.StringVar(&o.serverArgs, "server-args", "", "extra flags of meshctl server, space-separated (--tracing=false: the data path without tracing; --trace-sampling 100)")
	flag.BoolVar(&o.hold, "hold", false, "start everything, print the addresses of each path and wait for Ctrl-C instead of running fortio (for perf, pprof or a load of your own)")
	flag.StringVar(&o.profile, "profile", "", "write execution traces (round 1's latency run) and CPU profiles (its max run) of both sidecars of B to this directory")
	flag.Parse()

	dir, err := os.MkdirTemp("", "benchmesh")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Signal(os.Interrupt)
		}
		for _, p := range procs {
			_ = p.Wait()
		}
	}()
	start := func(name string, env []string, args ...string) (*exec.Cmd, error) {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = append(os.Environ(), env...)
		logf, err := os.Create(filepath.Join(dir, filepath.Base(name)+"-"+strconv.Itoa(len(procs))+".log"))
		if err != nil {
			return nil, err
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		procs = append(procs, cmd)
		return cmd, nil
	}

	// The echo app.
	echoPort := freePort()
	if _, err := start(o.fortio, nil, "server", "-http-port", "127.0.0.1:"+echoPort, "-grpc-port", "disabled", "-redirect-port", "disabled", "-loglevel", "error"); err != nil {
		return err
	}
	if err := waitHTTP("http://127.0.0.1:" + echoPort + "/"); err != nil {
		return err
	}

	// The mesh: control plane, a server sidecar per transport, one client sidecar.
	home := filepath.Join(dir, "mesh")
	env := []string{"MESH_HOME=" + home}
	cpAddr := "127.0.0.1:" + freePort()
	serverArgs := append([]string{"server", "--addr", cpAddr, "--admin-addr", "127.0.0.1:0", "--gateway-addr", "off", "--dashboard-addr", "off", "--proxy-addr", "off", "--log-level", "warn"},
		strings.Fields(o.serverArgs)...)
	if _, err := start(o.meshctl, env, serverArgs...); err != nil {
		return err
	}
	if err := waitFile(filepath.Join(home, "controlplane.json")); err != nil {
		return err
	}
	scEnv := append(slices.Clone(env), strings.Fields(o.sidecarEnv)...)
	echoApp := "127.0.0.1:" + echoPort
	clientOut := "127.0.0.1:" + freePort()
	sidecars := map[string]*exec.Cmd{}
	admins := map[string]string{}
	// The sidecar as the runtime injects it: mesh-sidecar with a join
	// token in $MESH_TOKEN.
	startSidecar := func(bin, service string, args ...string) error {
		tok, err := exec.Command(o.meshctl, "--home", home, "cert", "token", "--service", service).Output()
		if err != nil {
			return fmt.Errorf("minting a token for %s: %w", service, err)
		}
		admins[service] = "127.0.0.1:" + freePort()
		name, argv := bin, []string{}
		if filepath.Base(bin) == "meshctl" {
			argv = append(argv, "sidecar")
		}
		argv = append(argv, "--service", service, "--controlplane", cpAddr, "--admin", admins[service], "--log-level", "warn")
		c, err := start(name, append(slices.Clone(scEnv), "MESH_TOKEN="+strings.TrimSpace(string(tok))), append(argv, args...)...)
		if err != nil {
			return err
		}
		sidecars[service] = c
		return nil
	}
	for _, s := range []struct{ name, transport string }{{"echo", "quic"}, {"echo-tls", "tls"}} {
		if err := startSidecar(o.sidecar, s.name, "--app", echoApp, "--inbound-port", freePort(), "--transport", s.transport); err != nil {
			return err
		}
	}
	if err := startSidecar(o.sidecar, "loadgen", "--app", "none", "--outbound", clientOut); err != nil {
		return err
	}
	routes := map[string]string{"echo": clientOut, "echo-tls": clientOut}
	var compareOut string
	if o.compare != "" {
		compareOut = "127.0.0.1:" + freePort()
		if err := startSidecar(o.compare, "echo-e", "--app", echoApp, "--inbound-port", freePort(), "--transport", "quic"); err != nil {
			return err
		}
		if err := startSidecar(o.compare, "loadgen-e", "--app", "none", "--outbound", compareOut); err != nil {
			return err
		}
		routes["echo-e"] = compareOut
	}
	for host, out := range routes {
		if err := waitRoute("http://"+out+"/", host); err != nil {
			return fmt.Errorf("the mesh does not route %s: %w (logs in %s)", host, err, dir)
		}
	}

	// The nginx pair.
	nginxIn, err := startNginxPair(dir, o.nginx, echoApp, start)
	if err != nil {
		return err
	}
	if err := waitHTTP("http://" + nginxIn + "/"); err != nil {
		return fmt.Errorf("nginx pair: %w (logs in %s)", err, dir)
	}

	configs := []config{
		{name: "A direct", url: "http://" + echoApp + "/"},
		{name: "B sidecars, HTTP/3 QUIC mTLS", url: "http://" + clientOut + "/", host: "echo", procs: []*exec.Cmd{sidecars["loadgen"], sidecars["echo"]}},
		{name: "C sidecars, HTTP/2 TLS mTLS", url: "http://" + clientOut + "/", host: "echo-tls", procs: []*exec.Cmd{sidecars["loadgen"], sidecars["echo-tls"]}},
		{name: "D nginx → TLS 1.3 mTLS → nginx", url: "http://" + nginxIn + "/", nginx: true},
	}
	paths := strings.ToUpper(o.paths)
	if o.compare != "" {
		configs = append(configs, config{name: "E as B, " + filepath.Base(o.compare), url: "http://" + compareOut + "/", host: "echo-e",
			procs: []*exec.Cmd{sidecars["loadgen-e"], sidecars["echo-e"]}})
		paths += "E"
	}
	configs = slices.DeleteFunc(configs, func(c config) bool {
		return c.name[0] != 'A' && !strings.ContainsRune(paths, rune(c.name[0]))
	})
	for i := range configs {
		if configs[i].nginx {
			configs[i].pids = nginxPids(dir)
		}
		for _, p := range configs[i].procs {
			configs[i].pids = append(configs[i].pids, p.Process.Pid)
		}
	}
	if o.hold {
		return hold(configs, admins)
	}
	for round := 1; round <= o.rounds; round++ {
		for i := range configs {
			var traced func() error
			if o.profile != "" && round == 1 && configs[i].name[0] == 'B' {
				traced = profile(o, "trace", admins["loadgen"], admins["echo"])
			}
			r, err := load(o, configs[i], o.qps)
			if err != nil {
				return err
			}
			if traced != nil {
				if err := traced(); err != nil {
					return err
				}
			}
			if o.profile != "" && round == 1 && configs[i].name[0] == 'B' {
				for _, a := range []string{admins["loadgen"], admins["echo"]} {
					if err := save(o.profile, "metrics-"+strings.ReplaceAll(a, ":", "_")+".txt", "http://"+a+"/metrics"); err != nil {
						return err
					}
				}
			}
			configs[i].latency = append(configs[i].latency, r)
			fmt.Fprintf(os.Stderr, "round %d %-32s %5.0f qps  p50 %6.2f ms  p99 %6.2f ms  %4.1f context switches/request in the proxies\n", round, configs[i].name, r.qps, r.p50*1e3, r.p99*1e3, r.switchesPerReq)
		}
		for i := range configs {
			var profiled func() error
			if o.profile != "" && round == 1 && configs[i].name[0] == 'B' {
				profiled = profile(o, "profile", admins["loadgen"], admins["echo"])
			}
			r, err := load(o, configs[i], 0)
			if profiled != nil {
				if err := profiled(); err != nil {
					return err
				}
			}
			if err != nil {
				return err
			}
			configs[i].max = append(configs[i].max, r)
			split := ""
			if r.callerCPUPerReq > 0 {
				split = fmt.Sprintf(" (caller's sidecar %.0f, callee's %.0f)", r.callerCPUPerReq*1e6, (r.cpuPerReq-r.callerCPUPerReq)*1e6)
			}
			fmt.Fprintf(os.Stderr, "round %d %-32s max %6.0f qps  %5.0f µs CPU/request in the proxies%s\n", round, configs[i].name, r.qps, r.cpuPerReq*1e6, split)
		}
	}
	report(o, configs, sidecars)
	return nil
}

type config struct {
	name, url, host string
	nginx           bool
	procs           []*exec.Cmd
	pids            []int
	latency, max    []result
}

type result struct {
	qps, p50, p90, p99 float64
	errors             int64
	cpu                float64 // seconds of proxy CPU in the run
	cpuPerReq          float64 // seconds of proxy CPU per request
	callerCPUPerReq    float64 // of which the caller's sidecar (B, C, E)
	switchesPerReq     float64 // context switches of proxy threads per request
}

// load runs fortio against c (qps 0: as fast as it goes).
func load(o options, c config, qps int) (result, error) {
	out := filepath.Join(os.TempDir(), "benchmesh-fortio.json")
	args := []string{"load", "-qps", strconv.Itoa(qps), "-c", strconv.Itoa(o.conns), "-t", o.duration.String(),
		"-payload-size", strconv.Itoa(o.payload), "-p", "50,90,99", "-json", out, "-loglevel", "error", "-a=false"}
	if c.host != "" {
		args = append(args, "-H", "Host: "+c.host)
	}
	args = append(args, c.url)
	before, switchesBefore := cpuSeconds(c.pids), contextSwitches(c.pids)
	cmd := exec.Command(o.fortio, args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return result{}, fmt.Errorf("fortio %s: %w\n%s", c.name, err, b)
	}
	after, switches := cpuSeconds(c.pids), contextSwitches(c.pids)-switchesBefore
	var cpu, callerCPU float64
	for i := range after {
		cpu += after[i] - before[i]
	}
	if !c.nginx && len(c.pids) == 2 { // a sidecar pair, the caller's first
		callerCPU = after[0] - before[0]
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return result{}, err
	}
	var f struct {
		ActualQPS         float64
		ActualDuration    int64
		RetCodes          map[string]int64
		DurationHistogram struct {
			Count       int64
			Percentiles []struct{ Percentile, Value float64 }
		}
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return result{}, err
	}
	r := result{qps: f.ActualQPS, cpu: cpu}
	for code, n := range f.RetCodes {
		if code != "200" {
			r.errors += n
		}
	}
	for _, p := range f.DurationHistogram.Percentiles {
		switch p.Percentile {
		case 50:
			r.p50 = p.Value
		case 90:
			r.p90 = p.Value
		case 99:
			r.p99 = p.Value
		}
	}
	if n := f.DurationHistogram.Count; n > 0 {
		r.cpuPerReq = cpu / float64(n)
		r.callerCPUPerReq = callerCPU / float64(n)
		r.switchesPerReq = float64(switches) / float64(n)
	}
	if r.errors > 0 {
		fmt.Fprintf(os.Stderr, "warning: %s: %d non-200 answers\n", c.name, r.errors)
	}
	return r, nil
}

func median(rs []result, f func(result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func report(o options, cs []config, sidecars map[string]*exec.Cmd) {
	a := cs[0]
	ms := func(s float64) string { return fmt.Sprintf("%.2f", s*1e3) }
	add := func(s float64) string { return fmt.Sprintf("%+.2f", s*1e3) }
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Printf("\nfortio %d qps × %d connections, %d B POST, HTTP/1.1, %v per run, medians of %d interleaved rounds\n\n", o.qps, o.conns, o.payload, o.duration, o.rounds)
	fmt.Fprintf(w, "path\tp50 ms\tp90 ms\tp99 ms\tadded p50\tadded p90\tadded p99\tproxy CPU s at %d qps\tmax req/s\tvs direct\tproxy CPU µs/req\t\n", o.qps)
	p := func(r result) float64 { return r.p50 }
	p9 := func(r result) float64 { return r.p90 }
	p99 := func(r result) float64 { return r.p99 }
	q := func(r result) float64 { return r.qps }
	cpu := func(r result) float64 { return r.cpuPerReq }
	secs := func(r result) float64 { return r.cpu }
	for _, c := range cs {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t%.3f×\t%s\t\n", c.name,
			ms(median(c.latency, p)), ms(median(c.latency, p9)), ms(median(c.latency, p99)),
			add(median(c.latency, p)-median(a.latency, p)), add(median(c.latency, p9)-median(a.latency, p9)), add(median(c.latency, p99)-median(a.latency, p99)),
			cpuCell(c, "%.2f", median(c.latency, secs)),
			median(c.max, q), median(c.max, q)/median(a.max, q), cpuCell(c, "%.0f", median(c.max, cpu)*1e6))
	}
	_ = w.Flush()
	fmt.Println()
	var worst float64
	for name, c := range sidecars {
		m := memMB(c.Process.Pid)
		worst = max(worst, m["VmHWM"])
		fmt.Printf("sidecar %-9s peak RSS %.1f MB (now: %.1f MB own memory, %.1f MB of the mapped binary)\n", name, m["VmHWM"], m["RssAnon"], m["RssFile"])
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	var b, d *config
	for i := range cs {
		switch cs[i].name[0] {
		case 'B':
			b = &cs[i]
		case 'D':
			d = &cs[i]
		}
	}
	if b == nil || d == nil {
		fmt.Printf("\nsidecar RSS ≤ 30 MB (%.1f): %s (run B and D for the other targets)\n", worst, verdict(worst <= 30))
		return
	}
	bAdd, dAdd := median(b.latency, p99)-median(a.latency, p99), median(d.latency, p99)-median(a.latency, p99)
	fmt.Printf("\ntargets: added p99 of B (%s ms) ≤ D (%s ms): %s; max req/s of B (%.0f) ≥ D (%.0f): %s; sidecar RSS ≤ 30 MB (%.1f): %s\n",
		add(bAdd), add(dAdd), verdict(bAdd <= dAdd), median(b.max, q), median(d.max, q), verdict(median(b.max, q) >= median(d.max, q)), worst, verdict(worst <= 30))
	// The same comparisons round by round: B and D ran minutes apart in
	// one round, so a spell of the VM moves both.
	var p99Gap, maxRatio []string
	for i := range min(len(b.latency), len(d.latency), len(b.max), len(d.max)) {
		p99Gap = append(p99Gap, add(b.latency[i].p99-d.latency[i].p99))
		maxRatio = append(maxRatio, fmt.Sprintf("%.2f", b.max[i].qps/d.max[i].qps))
	}
	fmt.Printf("per round: B's p99 minus D's (ms) %s; B's maximum over D's %s\n", strings.Join(p99Gap, " "), strings.Join(maxRatio, " "))
}

// cpuCell formats a proxy CPU figure, "-" for the path without proxies.
func cpuCell(c config, format string, v float64) string {
	if len(c.pids) == 0 {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

// cpuSeconds is the user+system CPU of each process (and its threads).
func cpuSeconds(pids []int) []float64 {
	secs := make([]float64, len(pids))
	for i, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name (in parentheses): utime is 14th, stime 15th overall.
		s := string(data)
		fields := strings.Fields(s[strings.LastIndex(s, ")")+2:])
		ut, _ := strconv.ParseFloat(fields[11], 64)
		st, _ := strconv.ParseFloat(fields[12], 64)
		secs[i] = (ut + st) / 100 // USER_HZ
	}
	return secs
}

// contextSwitches sums the voluntary and involuntary context switches of
// every thread of the processes: each is a thread going to sleep or being
// preempted, and on a VM each wake-up of an idle vCPU costs latency.
func contextSwitches(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
		for _, t := range tasks {
			data, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(data), "\n") {
				k, v, _ := strings.Cut(line, ":")
				if k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches" {
					n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					total += n
				}
			}
		}
	}
	return total
}

// memMB reads fields of /proc/<pid>/status (VmHWM: peak RSS; RssAnon: the
// process's own memory; RssFile: pages of the mapped binary, shared).
func memMB(pid int) map[string]float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || !strings.HasSuffix(v, "kB") {
			continue
		}
		kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(v, "kB")))
		m[k] = float64(kb) / 1024
	}
	return m
}

func freePort() string {
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		l.Close()
		if err == nil {
			u.Close()
			return strconv.Itoa(port)
		}
	}
}

func waitHTTP(url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitRoute(url, host string) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, _ := http.NewRequest("GET", url, nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitFile(path string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear", path)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// profile starts taking CPU profiles of the sidecars at the admin
// addresses, for most of a run; the returned func waits and writes them.
func profile(o options, kind string, admins ...string) func() error {
	secs := max(1, int(o.duration.Seconds())-1)
	errs := make(chan error, len(admins))
	for _, a := range admins {
		go func() {
			errs <- save(o.profile, kind+"-"+strings.ReplaceAll(a, ":", "_")+".pprof", fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", a, kind, secs))
		}()
	}
	return func() error {
		var all error
		for range admins {
			all = errors.Join(all, <-errs)
		}
		return all
	}
}

// save writes what url answers to dir/name.
func save(dir, name, url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name), data, 0o644)
}

// hold prints where each path listens and waits for an interrupt: the
// processes stay up for a load, a profile or perf of one's own.
func hold(cs []config, admins map[string]string) error {
	for _, c := range cs {
		host := ""
		if c.host != "" {
			host = " -H 'Host: " + c.host + "'"
		}
		fmt.Printf("%-32s fortio load%s %s   pids %v\n", c.name, host, c.url, c.pids)
	}
	for name, a := range admins {
		fmt.Printf("sidecar %-9s admin http://%s/\n", name, a)
	}
	fmt.Println("holding; Ctrl-C ends")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	return nil
}
