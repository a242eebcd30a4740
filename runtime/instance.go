package runtime

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/envconfig"
	"github.com/micromesh/micromesh/internal/ports"
	runtimev1 "github.com/micromesh/micromesh/proto/runtime/v1"
)

// Instance states.
const (
	stateStarting = "starting"
	stateRunning  = "running"
	stateBackoff  = "backoff"
	stateStopped  = "stopped"
)

// instance is one copy of a service: its sidecar, then its app.
type instance struct {
	rt      *Runtime
	name    string
	ns      string
	id      string
	bin     string
	version string
	args    []string
	env     []string
	policy  map[string]string // the service's traffic policy, for its sidecar
	proto   string            // what the app speaks: grpc, http or tcp
	// upstreamNames are the service's TCP upstreams; upstreams their
	// addresses at this instance's sidecar, picked with its other ports.
	upstreamNames []string
	upstreams     map[string]string

	appAddr, outbound, admin string
	inbound                  uint16

	appLog, sidecarLog   *logFile
	appTail, sidecarTail *tail

	mu          sync.Mutex
	app         *proc
	sidecar     *proc
	state       string
	restarts    int
	crashes     int // in a row, for the backoff
	lastExit    time.Time
	lastCode    int
	lastLines   []string
	stopping    bool
	stopCh      chan struct{}
	supervising chan struct{} // closed when the supervisor returns
}

func (rt *Runtime) newInstance(s *service, bin, version string) *instance {
	return &instance{
		rt: rt, name: s.spec.Name, ns: s.spec.Namespace, id: s.spec.Name + "-" + randomID(),
		bin: bin, version: version, args: s.spec.Args, env: s.spec.Env, policy: s.spec.Policy, upstreamNames: s.spec.Upstreams, proto: s.spec.AppProtocol,
		appTail: newTail(20), sidecarTail: newTail(20), state: stateStarting,
		stopCh: make(chan struct{}), supervising: make(chan struct{}),
	}
}

// start starts the sidecar, waits until it listens, starts the app and
// waits until the sidecar has registered the instance (its app answers
// health checks). On failure nothing is left running and the error says
// why, with the last lines of whichever process gave up.
func (in *instance) start(ctx context.Context) (err error) {
	ctx, cancel := context.WithTimeout(ctx, in.rt.o.StartTimeout)
	defer cancel()
	dir := filepath.Join(in.rt.o.Home.Logs(), in.ns, in.name)
	if in.appLog, err = openLog(filepath.Join(dir, in.id+".app.log")); err != nil {
		return err
	}
	if in.sidecarLog, err = openLog(filepath.Join(dir, in.id+".sidecar.log")); err != nil {
		in.appLog.close()
		return err
	}
	// Noted for `meshctl logs --version` (versions side by side share
	// the service's log directory).
	if err := os.WriteFile(versionFile(dir, in.id), []byte(in.version+"\n"), 0o600); err != nil {
		in.appLog.close()
		in.sidecarLog.close()
		return err
	}
	defer func() {
		if err != nil {
			in.kill()
		}
	}()
	// The ports are picked free, then bound by the sidecar and the app as
	// they start; another process may take one in between, and the one
	// that lost it exits saying so: start both again on other ports.
	for attempt := 1; ; attempt++ {
		err = in.startProcs(ctx)
		if err == nil {
			break
		}
		if attempt == 3 || !in.lostPort() {
			return err
		}
		in.rt.log.Warn("a port picked for the instance was taken; trying others", "instance", in.id, "attempt", attempt)
		in.stopProcs()
	}
	in.mu.Lock()
	in.state = stateRunning
	in.mu.Unlock()
	go in.supervise()
	return nil
}

// startProcs picks ports, starts the sidecar, waits until it listens,
// starts the app and waits until the instance is registered.
func (in *instance) startProcs(ctx context.Context) error {
	free, err := ports.Free(4 + len(in.upstreamNames))
	if err != nil {
		return fmt.Errorf("%w: allocating ports: %v", ErrStart, err)
	}
	in.appAddr = "127.0.0.1:" + strconv.Itoa(free[0])
	in.outbound = "127.0.0.1:" + strconv.Itoa(free[1])
	in.admin = "127.0.0.1:" + strconv.Itoa(free[2])
	in.inbound = uint16(free[3])
	ups := make(map[string]string, len(in.upstreamNames))
	for i, u := range in.upstreamNames {
		ups[u] = "127.0.0.1:" + strconv.Itoa(free[4+i])
	}
	in.mu.Lock()
	in.upstreams = ups // whole: Status may read it meanwhile
	in.mu.Unlock()
	if err := in.startSidecar(); err != nil {
		return err
	}
	if err := in.waitListening(ctx); err != nil {
		return err
	}
	in.mu.Lock()
	err = in.startApp()
	in.mu.Unlock()
	if err != nil {
		return err
	}
	return in.waitReady(ctx)
}

// lostPort reports whether the sidecar or the app exited because a port
// picked for it was taken.
func (in *instance) lostPort() bool {
	in.mu.Lock()
	app, sc := in.app, in.sidecar
	in.mu.Unlock()
	return (sc != nil && sc.lostPort()) || (app != nil && app.lostPort())
}

// stopProcs stops the sidecar and the app of a failed start attempt.
func (in *instance) stopProcs() {
	in.mu.Lock()
	app, sc := in.app, in.sidecar
	in.app, in.sidecar = nil, nil
	in.mu.Unlock()
	if app != nil {
		app.stop(time.Second)
	}
	if sc != nil {
		sc.stop(time.Second)
	}
	in.appTail.reset()
	in.sidecarTail.reset()
}

func (in *instance) startSidecar() error {
	id, err := identity.ServiceID(in.rt.trustDomain, in.ns, in.name)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	token, err := in.rt.o.Mint(id, 5*time.Minute)
	if err != nil {
		return fmt.Errorf("%w: minting a join token: %v", ErrStart, err)
	}
	argv := append(append([]string(nil), in.rt.o.SidecarCommand...),
		"--service", in.name, "--namespace", in.ns, "--instance", in.id,
		"--app", in.appAddr, "--app-protocol", cmp.Or(in.proto, "grpc"), "--wait-app", "--version", in.version,
		"--outbound", in.outbound, "--inbound-port", strconv.Itoa(int(in.inbound)), "--admin", in.admin,
		"--controlplane", in.rt.o.ControlPlane)
	if in.rt.o.Advertise != "" {
		argv = append(argv, "--advertise", in.rt.o.Advertise)
	}
	argv = append(argv, policyArgs(in.policy)...)
	for _, u := range in.upstreamNames {
		_, port, _ := net.SplitHostPort(in.upstreams[u])
		argv = append(argv, "--upstream", u+"="+port)
	}
	env := append(baseEnv(), envconfig.Home+"="+string(in.rt.o.Home), envconfig.Token+"="+token)
	p, err := startProc(argv, env, "", in.sidecarLog, in.sidecarTail)
	if err != nil {
		return fmt.Errorf("%w: starting the sidecar: %v", ErrStart, err)
	}
	in.mu.Lock()
	in.sidecar = p
	in.mu.Unlock()
	return nil
}

// policyArgs are the sidecar's --policy flags, in key order.
func policyArgs(policy map[string]string) []string {
	keys := make([]string, 0, len(policy))
	for k := range policy {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		out = append(out, "--policy", k+"="+policy[k])
	}
	return out
}

// startApp starts the app with the runtime's environment. in.mu is held.
func (in *instance) startApp() error {
	env := baseEnv()
	if in.rt.o.AppTracing {
		env = append(env, AppTraceEnv(in.name+"."+in.ns, in.admin)...)
	}
	// The service's own variables (meshctl run --env) win over the
	// runtime's OTEL_ ones; nothing wins over MESH_ ones.
	env = append(env, in.env...)
	env = append(env,
		envconfig.Service+"="+in.name, envconfig.Namespace+"="+in.ns, envconfig.Version+"="+in.version,
		envconfig.Address+"="+in.appAddr, envconfig.Proxy+"="+in.outbound,
		envconfig.ControlPlane+"="+in.rt.o.ControlPlane)
	for _, u := range in.upstreamNames {
		env = append(env, envconfig.UpstreamVar(u)+"="+in.upstreams[u])
	}
	p, err := startProc(append([]string{in.bin}, in.args...), env, "", in.appLog, in.appTail)
	if err != nil {
		return fmt.Errorf("%w: starting %s: %v", ErrStart, in.bin, err)
	}
	in.app = p
	return nil
}

// AppTraceEnv is OpenTelemetry's standard configuration pointing the SDK
// of an app of service ("name.namespace") at its sidecar's OTLP/HTTP
// endpoint (the admin listener's /v1/traces, loopback): spans of
// requests the mesh records only (the sampler follows the parent, whose
// decision is the sidecar's), batched about once a second as the
// sidecar's own, no metrics or logs (an SDK configured from the
// environment would send those to the same host and fail).
func AppTraceEnv(service, admin string) []string {
	return []string{
		"OTEL_SERVICE_NAME=" + service,
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://" + admin + "/v1/traces",
		"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf",
		"OTEL_TRACES_SAMPLER=parentbased_always_off",
		"OTEL_BSP_SCHEDULE_DELAY=1000",
		"OTEL_PROPAGATORS=tracecontext,baggage",
		"OTEL_METRICS_EXPORTER=none",
		"OTEL_LOGS_EXPORTER=none",
	}
}

// baseEnv is the server's environment without Micromesh's own variables.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MESH_") {
			env = append(env, kv)
		}
	}
	return env
}

// waitListening waits for the sidecar's outbound listener: the sidecar has
// its certificate and its config, and the app may call out from its first
// line.
func (in *instance) waitListening(ctx context.Context) error {
	for {
		c, err := net.DialTimeout("tcp", in.outbound, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-in.sidecar.exited:
			return fmt.Errorf("%w: %s", ErrStart, in.sidecar.describeExit("the sidecar of "+in.id))
		case <-ctx.Done():
			return fmt.Errorf("%w: the sidecar of %s did not listen within %v; its last lines:\n  %s", ErrStart, in.id, in.rt.o.StartTimeout, strings.Join(in.sidecarTail.lines(), "\n  "))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// waitReady waits for the sidecar's /ready: it registered the instance
// once the app answered.
func (in *instance) waitReady(ctx context.Context) error {
	for !in.ready(ctx) {
		select {
		case <-in.app.exited:
			return fmt.Errorf("%w: %s", ErrStart, in.app.describeExit(in.id))
		case <-in.sidecar.exited:
			return fmt.Errorf("%w: %s", ErrStart, in.sidecar.describeExit("the sidecar of "+in.id))
		case <-ctx.Done():
			return fmt.Errorf("%w: %s did not become healthy within %v (is it serving gRPC health on $MESH_ADDRESS?); its last lines:\n  %s",
				ErrStart, in.id, in.rt.o.StartTimeout, strings.Join(in.appTail.lines(), "\n  "))
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

var readyClient = &http.Client{Timeout: time.Second}

func (in *instance) ready(ctx context.Context) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+in.admin+"/ready", nil)
	if err != nil {
		return false
	}
	resp, err := readyClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// supervise restarts the app when it exits (backing off 1 s, 2 s, 4 s … up
// to 30 s while it keeps crashing) and the sidecar when it does, until the
// instance is stopped.
func (in *instance) supervise() {
	defer close(in.supervising)
	for {
		in.mu.Lock()
		app, sc := in.app, in.sidecar
		in.mu.Unlock()
		select {
		case <-in.stopCh:
			return
		case <-app.exited:
			in.mu.Lock()
			in.restarts++
			if time.Since(app.started) > time.Minute {
				in.crashes = 0
			}
			in.crashes++
			in.lastExit, in.lastCode, in.lastLines = time.Now(), app.code, app.tail.lines()
			in.state = stateBackoff
			delay := min(time.Second<<min(in.crashes-1, 5), 30*time.Second)
			in.mu.Unlock()
			in.rt.log.Warn("app exited; restarting after a pause", "service", in.name, "namespace", in.ns, "instance", in.id,
				"code", app.code, "restarts", in.restarts, "pause", delay.String())
			select {
			case <-in.stopCh:
				return
			case <-time.After(delay):
			}
			in.mu.Lock()
			if err := in.startApp(); err != nil {
				in.rt.log.Error("restarting the app", "instance", in.id, "err", err)
				in.app = exitedProc(err, in.appTail)
			} else {
				in.state = stateRunning
			}
			in.mu.Unlock()
		case <-sc.exited:
			in.rt.log.Warn("sidecar exited; restarting it", "instance", in.id, "code", sc.code)
			select {
			case <-in.stopCh:
				return
			case <-time.After(time.Second):
			}
			if err := in.startSidecar(); err != nil {
				in.rt.log.Error("restarting the sidecar", "instance", in.id, "err", err)
				in.mu.Lock()
				in.sidecar = exitedProc(err, in.sidecarTail)
				in.mu.Unlock()
			}
		}
	}
}

// exitedProc stands for a process that could not start.
func exitedProc(err error, t *tail) *proc {
	t.add(err.Error())
	p := &proc{started: time.Now(), exited: make(chan struct{}), code: 127, tail: t}
	close(p.exited)
	return p
}

// stop takes the instance out of the mesh and stops it: the sidecar
// deregisters it (POST /drain) and keeps proxying while callers learn of
// it, then the app stops (SIGTERM, SIGKILL after the grace period), then
// the sidecar.
func (in *instance) stop() {
	in.mu.Lock()
	if in.stopping {
		in.mu.Unlock()
		<-in.supervising
		return
	}
	in.stopping = true
	close(in.stopCh)
	in.mu.Unlock()
	<-in.supervising
	resp, err := readyClient.Post("http://"+in.admin+"/drain", "text/plain", nil)
	if err == nil {
		resp.Body.Close()
		time.Sleep(in.rt.o.DrainDelay)
	}
	in.mu.Lock()
	app, sc := in.app, in.sidecar
	in.mu.Unlock()
	app.stop(in.rt.o.StopGrace)
	sc.stop(in.rt.o.StopGrace)
	in.mu.Lock()
	in.state = stateStopped
	in.mu.Unlock()
	in.appLog.close()
	in.sidecarLog.close()
}

// kill stops whatever started, at once (a start that failed).
func (in *instance) kill() {
	in.mu.Lock()
	app, sc := in.app, in.sidecar
	in.stopping = true
	in.state = stateStopped
	in.mu.Unlock()
	if app != nil {
		app.stop(time.Second)
	}
	if sc != nil {
		sc.stop(time.Second)
	}
	if in.appLog != nil {
		in.appLog.close()
	}
	if in.sidecarLog != nil {
		in.sidecarLog.close()
	}
}

func (in *instance) status(ctx context.Context) *runtimev1.Instance {
	in.mu.Lock()
	st := &runtimev1.Instance{
		Id: in.id, Status: in.state, AppAddress: in.appAddr, Outbound: in.outbound, InboundPort: uint32(in.inbound), Upstreams: in.upstreams,
		Admin: in.admin, Restarts: uint32(in.restarts), LastExitCode: int32(in.lastCode),
	}
	if in.app != nil && in.app.cmd != nil {
		st.AppPid = int64(in.app.pid())
	}
	if in.sidecar != nil && in.sidecar.cmd != nil {
		st.SidecarPid = int64(in.sidecar.pid())
	}
	if !in.lastExit.IsZero() {
		st.LastExit = timestamppb.New(in.lastExit)
		if in.state != stateRunning {
			st.LastLines = in.lastLines
		}
	}
	running := in.state == stateRunning
	in.mu.Unlock()
	if running {
		ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		st.Ready = in.ready(ctx)
		cancel()
	}
	return st
}
