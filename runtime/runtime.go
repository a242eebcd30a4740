// Package runtime is the local runtime behind `meshctl run`: it builds a
// service from source (a directory or a git URL) with `go build`, and runs
// each instance as two processes — its sidecar first (`meshctl sidecar`,
// with a join token minted for the service's identity), then the app, with
// the environment the framework reads (MESH_SERVICE, MESH_ADDRESS,
// MESH_PROXY, ...). The sidecar registers the instance once the app answers
// gRPC health; Run returns then.
//
// It supervises: an app that exits is restarted with exponential backoff
// (shown by Status with its exit code and last lines), a sidecar that exits
// is restarted. Update rebuilds and replaces instances one by one, each new
// one registered before an old one is drained; Kill drains (the sidecar
// deregisters and keeps proxying while callers learn of it), stops the app,
// then the sidecar. Logs of every process go to rotated files under
// $MESH_HOME/logs. What runs is remembered under $MESH_HOME/runtime and
// started again when the server starts again.
//
// `meshctl server` hosts it and serves it as the Runtime API
// (proto/runtime/v1) to the platform's identities.
package runtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/envconfig"
	"github.com/micromesh/micromesh/internal/home"
	runtimev1 "github.com/micromesh/micromesh/proto/runtime/v1"
	"github.com/micromesh/micromesh/xds"
	"github.com/micromesh/micromesh/xds/policymeta"
)

// Errors, by kind (the Runtime API maps them to gRPC codes).
var (
	ErrInvalid  = errors.New("invalid request")
	ErrExists   = errors.New("already running")
	ErrNotFound = errors.New("not running")
	ErrBuild    = errors.New("build failed")
	ErrStart    = errors.New("start failed")
)

// MaxInstances bounds the instances of one service.
const MaxInstances = 16

// Options configure the runtime.
type Options struct {
	Home home.Dir
	// ControlPlane is the address sidecars and apps reach the control
	// plane at.
	ControlPlane string
	TrustDomain  string
	// Mint returns a join token for a workload identity.
	Mint func(id identity.ID, ttl time.Duration) (string, error)
	// SidecarCommand runs a sidecar; flags are appended (default:
	// mesh-sidecar beside this program, else its `sidecar` command).
	SidecarCommand []string
	// Advertise is the IP address sidecars register for peers to reach
	// them at (default: theirs, 127.0.0.1).
	Advertise string
	// Go is the go command (default: go on $PATH).
	Go     string
	Logger *slog.Logger
	// StartTimeout bounds an instance's start, to registered (default 60 s).
	StartTimeout time.Duration
	// DrainDelay is how long a deregistered instance keeps serving before
	// its app is stopped: callers' sidecars must hear of it first
	// (default 1 s).
	DrainDelay time.Duration
	// StopGrace is how long a process gets between SIGTERM and SIGKILL
	// (default 10 s).
	StopGrace time.Duration
	// AppTracing points each app's OpenTelemetry SDK at its sidecar
	// (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT and friends: see AppTraceEnv),
	// which sends the app's spans on with its own.
	AppTracing bool
}

// Spec is what to run.
type Spec struct {
	Name      string   `json:"name"`
	Namespace string   `json:"namespace"`
	Source    string   `json:"source"`
	Instances int      `json:"instances"`
	Env       []string `json:"env,omitempty"`
	Args      []string `json:"args,omitempty"`
	Version   string   `json:"version,omitempty"`
	// Policy is the traffic policy the service's callers apply (keys
	// without the policy_ prefix), passed to each sidecar as --policy.
	Policy map[string]string `json:"policy,omitempty"`
	// Upstreams are the TCP services the app reaches ("db", "db.shop"):
	// each instance's sidecar takes them on loopback ports of its own,
	// given to the app in $MESH_UPSTREAM_<NAME> (envconfig.UpstreamVar).
	Upstreams []string `json:"upstreams,omitempty"`
	// AppProtocol is what the app speaks on $MESH_ADDRESS: grpc (the
	// framework's; the default), http or tcp.
	AppProtocol string `json:"app_protocol,omitempty"`
}

// Runtime runs services.
type Runtime struct {
	o           Options
	log         *slog.Logger
	trustDomain string

	mu       sync.Mutex
	services map[string]*service // by key
	closed   bool
	saved    []savedService // to Resume
	bg       sync.WaitGroup
}

// service is a service the runtime runs.
type service struct {
	op sync.Mutex // one Run, Update, Scale or Kill at a time

	mu        sync.Mutex
	spec      Spec
	src       source
	binary    string
	version   string
	status    string // starting, running, updating, failed, stopped
	updated   time.Time
	instances []*instance
}

// sidecarCommand is mesh-sidecar beside meshctl when there is one (`make
// build` puts both in bin/): the data plane alone, a much smaller process
// than meshctl's own `sidecar` command, which is the fallback.
func sidecarCommand(meshctl string) []string {
	lean := filepath.Join(filepath.Dir(meshctl), "mesh-sidecar")
	if fi, err := os.Stat(lean); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return []string{lean}
	}
	return []string{meshctl, "sidecar"}
}

// key names a running service: namespace/name, and @version when it was
// run with an explicit version (so that versions of one service can run
// side by side, for a split between them).
func key(ns, name, version string) string { return ns + "/" + versioned(name, version) }

// versioned is name, and @version when there is one: a service's key and
// the directories of its source and builds, apart for each version run
// side by side.
func versioned(name, version string) string {
	if version != "" {
		return name + "@" + version
	}
	return name
}

// Open opens the runtime; Resume starts the services it ran before the
// server last stopped.
func Open(o Options) (*Runtime, error) {
	if o.Mint == nil || o.ControlPlane == "" || o.TrustDomain == "" || o.Home == "" {
		return nil, errors.New("runtime: Home, ControlPlane, TrustDomain and Mint are required")
	}
	if len(o.SidecarCommand) == 0 {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("runtime: finding meshctl: %w", err)
		}
		o.SidecarCommand = sidecarCommand(self)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = time.Minute
	}
	if o.DrainDelay <= 0 {
		o.DrainDelay = time.Second
	}
	if o.StopGrace <= 0 {
		o.StopGrace = 10 * time.Second
	}
	rt := &Runtime{o: o, log: o.Logger.With("component", "runtime"), trustDomain: o.TrustDomain, services: map[string]*service{}}
	saved, err := rt.loadState()
	if err != nil {
		return nil, err
	}
	rt.saved = saved
	return rt, nil
}

// Resume starts again, in the background, the services that ran when the
// server last stopped (their last build, else a new one).
func (rt *Runtime) Resume() {
	rt.mu.Lock()
	saved := rt.saved
	rt.saved = nil
	rt.mu.Unlock()
	for _, st := range saved {
		rt.bg.Add(1)
		go func() {
			defer rt.bg.Done()
			ctx := context.Background()
			if _, err := rt.run(ctx, st.Spec, st.Binary); err != nil {
				rt.log.Error("could not start again a service that ran before", "service", st.Spec.Name, "namespace", st.Spec.Namespace, "err", err)
			} else {
				rt.log.Info("started again", "service", st.Spec.Name, "namespace", st.Spec.Namespace)
			}
		}()
	}
}

// goCommand finds the go command.
func (rt *Runtime) goCommand() (string, error) {
	if rt.o.Go != "" {
		return rt.o.Go, nil
	}
	p, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("%w: the go command is not on $PATH of `meshctl server`: install Go (https://go.dev/dl) or put it on $PATH", ErrBuild)
	}
	return p, nil
}

// normalize validates a spec and fills in defaults.
func normalize(spec Spec) (Spec, source, error) {
	src, err := parseSource(spec.Source)
	if err != nil {
		return spec, src, err
	}
	spec.Source = src.String()
	if spec.Name == "" {
		spec.Name = src.defaultName()
		if err := identity.ValidateName("service", spec.Name); err != nil {
			return spec, src, fmt.Errorf("%w: the name %q taken from the source is not a valid service name (%v): pass --name", ErrInvalid, spec.Name, err)
		}
	}
	if spec.Namespace == "" {
		spec.Namespace = identity.DefaultNamespace
	}
	if err := identity.ValidateName("service", spec.Name); err != nil {
		return spec, src, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := identity.ValidateName("namespace", spec.Namespace); err != nil {
		return spec, src, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if spec.Namespace == identity.SystemNamespace {
		return spec, src, fmt.Errorf("%w: namespace %s is the platform's", ErrInvalid, identity.SystemNamespace)
	}
	if spec.Version != "" {
		if err := identity.ValidateVersion(spec.Version); err != nil {
			return spec, src, fmt.Errorf("%w: --version: %v", ErrInvalid, err)
		}
	}
	if spec.Instances == 0 {
		spec.Instances = 1
	}
	if spec.Instances < 0 || spec.Instances > MaxInstances {
		return spec, src, fmt.Errorf("%w: %d instances: between 1 and %d", ErrInvalid, spec.Instances, MaxInstances)
	}
	if _, _, err := xds.PolicyFromMetadata(policymeta.Metadata(spec.Policy)); err != nil {
		return spec, src, fmt.Errorf("%w: --policy: %v", ErrInvalid, err)
	}
	switch spec.AppProtocol {
	case "":
		spec.AppProtocol = "grpc"
	case "grpc", "http", "tcp":
	default:
		return spec, src, fmt.Errorf("%w: --app-protocol %q: grpc (the framework's), http or tcp", ErrInvalid, spec.AppProtocol)
	}
	vars := map[string]string{}
	for _, u := range spec.Upstreams {
		if _, _, err := identity.SplitService(u); err != nil {
			return spec, src, fmt.Errorf("%w: --upstream: %v", ErrInvalid, err)
		}
		v := envconfig.UpstreamVar(u)
		if other, ok := vars[v]; ok {
			return spec, src, fmt.Errorf("%w: --upstream %s and %s: both would be $%s", ErrInvalid, other, u, v)
		}
		vars[v] = u
	}
	for _, kv := range spec.Env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t\n") {
			return spec, src, fmt.Errorf("%w: env %q: want KEY=VALUE", ErrInvalid, kv)
		}
		if strings.HasPrefix(k, "MESH_") {
			return spec, src, fmt.Errorf("%w: env %s: MESH_ variables are set by the runtime", ErrInvalid, k)
		}
	}
	return spec, src, nil
}

// Run builds spec's source and starts its instances; it returns once all
// are registered, or with why not (nothing is left running then).
func (rt *Runtime) Run(ctx context.Context, spec Spec) (*runtimev1.Service, error) {
	return rt.run(ctx, spec, "")
}

// run is Run, reusing binary when it still exists (a restart).
func (rt *Runtime) run(ctx context.Context, spec Spec, binary string) (*runtimev1.Service, error) {
	spec, src, err := normalize(spec)
	if err != nil {
		return nil, err
	}
	k := key(spec.Namespace, spec.Name, spec.Version)
	s := &service{spec: spec, src: src, status: "starting", updated: time.Now()}
	s.op.Lock()
	defer s.op.Unlock()
	rt.mu.Lock()
	if rt.closed {
		rt.mu.Unlock()
		return nil, fmt.Errorf("%w: the runtime is shutting down", ErrStart)
	}
	if _, ok := rt.services[k]; ok {
		rt.mu.Unlock()
		if spec.Version != "" {
			return nil, fmt.Errorf("%w: %s %s runs in namespace %s: `meshctl update %s --version %s` rebuilds it, `meshctl kill %s --version %s` stops it",
				ErrExists, spec.Name, spec.Version, spec.Namespace, spec.Name, spec.Version, spec.Name, spec.Version)
		}
		return nil, fmt.Errorf("%w: %s runs in namespace %s: `meshctl update %s` rebuilds it, `meshctl kill %s` stops it; another version runs beside it with --version", ErrExists, spec.Name, spec.Namespace, spec.Name, spec.Name)
	}
	rt.services[k] = s
	rt.mu.Unlock()
	fail := func(err error) (*runtimev1.Service, error) {
		rt.mu.Lock()
		delete(rt.services, k)
		rt.mu.Unlock()
		return nil, err
	}
	version := spec.Version
	if _, err := os.Stat(binary); binary == "" || err != nil {
		var commit string
		binary, commit, err = rt.build(ctx, spec, src)
		if err != nil {
			return fail(err)
		}
		if version == "" {
			version = commit
		}
	}
	if version == "" {
		version = filepath.Base(binary)[:8]
	}
	s.mu.Lock()
	s.binary, s.version = binary, version
	s.mu.Unlock()
	ins, err := rt.startInstances(ctx, s, spec.Instances, binary, version)
	if err != nil {
		return fail(err)
	}
	rt.mu.Lock()
	closed := rt.closed
	rt.mu.Unlock()
	if closed { // Close did not see these instances
		stopAll(ins)
		return fail(fmt.Errorf("%w: the runtime is shutting down", ErrStart))
	}
	s.mu.Lock()
	s.instances, s.status, s.updated = ins, "running", time.Now()
	s.mu.Unlock()
	rt.log.Info("running", "service", spec.Name, "namespace", spec.Namespace, "instances", len(ins), "version", version)
	if err := rt.saveState(); err != nil {
		rt.log.Error("saving the runtime's state", "err", err)
	}
	return s.view(ctx), nil
}

// build fetches and compiles; it returns the binary and, for git
// sources, the commit.
func (rt *Runtime) build(ctx context.Context, spec Spec, src source) (binary, commit string, err error) {
	goBin, err := rt.goCommand()
	if err != nil {
		return "", "", err
	}
	start := time.Now()
	dir, commit, err := src.fetch(ctx, filepath.Join(rt.o.Home.Src(), spec.Namespace, versioned(spec.Name, spec.Version)))
	if err != nil {
		return "", "", err
	}
	binary, _, err = build(ctx, goBin, dir, filepath.Join(rt.o.Home.Runtime(), "bin", spec.Namespace, versioned(spec.Name, spec.Version)))
	if err != nil {
		return "", "", err
	}
	rt.log.Info("built", "service", spec.Name, "namespace", spec.Namespace, "source", spec.Source, "took", time.Since(start).Round(time.Millisecond).String())
	return binary, commit, nil
}

// startInstances starts n instances in parallel; if one fails, the others
// are stopped and the first failure returned.
func (rt *Runtime) startInstances(ctx context.Context, s *service, n int, binary, version string) ([]*instance, error) {
	ins := make([]*instance, n)
	var g errgroup.Group
	for i := range ins {
		g.Go(func() (err error) {
			ins[i], err = rt.startInstance(ctx, s, binary, version)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		for _, in := range ins {
			if in == nil {
				continue
			}
			in.mu.Lock()
			ok := in.state == stateRunning
			in.mu.Unlock()
			if ok {
				in.stop()
			}
		}
		return nil, err
	}
	return ins, nil
}

// startInstance starts one instance (instance.start tries other ports
// when one it picked was taken meanwhile).
func (rt *Runtime) startInstance(ctx context.Context, s *service, binary, version string) (*instance, error) {
	in := rt.newInstance(s, binary, version)
	if err := in.start(ctx); err != nil {
		return nil, err
	}
	return in, nil
}

// get finds a running service: of version (the one it was run with, or
// the one it built) when given, else the only one of that name.
func (rt *Runtime) get(ns, name, version string) (*service, error) {
	if ns == "" {
		ns = identity.DefaultNamespace
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	var found []*service
	for _, s := range rt.services {
		if s.spec.Namespace != ns || s.spec.Name != name {
			continue
		}
		s.mu.Lock()
		built := s.version
		s.mu.Unlock()
		if version == "" || s.spec.Version == version || built == version {
			found = append(found, s)
		}
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) > 1:
		return nil, fmt.Errorf("%w: %s runs as several versions in namespace %s%s; say which with --version", ErrInvalid, name, ns, rt.runningList(ns))
	case version != "":
		return nil, fmt.Errorf("%w: %s %s is not running in namespace %s%s", ErrNotFound, name, version, ns, rt.runningList(ns))
	}
	return nil, fmt.Errorf("%w: %s is not running in namespace %s%s", ErrNotFound, name, ns, rt.runningList(ns))
}

// acquire finds a running service, as get does, and takes its operation
// lock (one Run, Update, Scale or Kill at a time; the caller unlocks
// s.op); a service being killed is not found.
func (rt *Runtime) acquire(ns, name, which string) (*service, error) {
	s, err := rt.get(ns, name, which)
	if err != nil {
		return nil, err
	}
	s.op.Lock()
	s.mu.Lock()
	stopped := s.status == "stopped"
	s.mu.Unlock()
	if stopped {
		s.op.Unlock()
		return nil, fmt.Errorf("%w: %s is being killed", ErrNotFound, name)
	}
	return s, nil
}

// runningList says what runs in ns, for error messages. rt.mu is held.
func (rt *Runtime) runningList(ns string) string {
	var names []string
	for _, s := range rt.services {
		if s.spec.Namespace == ns {
			name := s.spec.Name
			if s.spec.Version != "" {
				name += " " + s.spec.Version
			}
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return " (nothing runs there)"
	}
	sort.Strings(names)
	return "; running: " + strings.Join(names, ", ")
}

// Update rebuilds a service and replaces its instances one at a time: a
// new one is registered before an old one is drained and stopped, so
// callers see no failed request. which picks a version when several run.
func (rt *Runtime) Update(ctx context.Context, ns, name, which string) (*runtimev1.Service, error) {
	s, err := rt.acquire(ns, name, which)
	if err != nil {
		return nil, err
	}
	defer s.op.Unlock()
	s.mu.Lock()
	spec, src, prev := s.spec, s.src, s.status
	s.status = "updating"
	s.mu.Unlock()
	restore := func(err error) (*runtimev1.Service, error) {
		s.mu.Lock()
		s.status = prev
		s.mu.Unlock()
		return nil, err
	}
	binary, commit, err := rt.build(ctx, spec, src)
	if err != nil {
		return restore(err)
	}
	version := spec.Version
	if version == "" {
		version = commit
	}
	if version == "" {
		version = filepath.Base(binary)[:8]
	}
	s.mu.Lock()
	old := append([]*instance(nil), s.instances...)
	s.mu.Unlock()
	for i, o := range old {
		in, err := rt.startInstance(ctx, s, binary, version)
		if err != nil {
			return restore(fmt.Errorf("updating %s: instance %d of %d did not start (the old ones still run): %w", name, i+1, len(old), err))
		}
		s.mu.Lock()
		s.instances[i] = in
		s.mu.Unlock()
		o.stop()
	}
	s.mu.Lock()
	s.binary, s.version, s.status, s.updated = binary, version, "running", time.Now()
	s.mu.Unlock()
	rt.log.Info("updated", "service", name, "namespace", spec.Namespace, "version", version)
	if err := rt.saveState(); err != nil {
		rt.log.Error("saving the runtime's state", "err", err)
	}
	return s.view(ctx), nil
}

// Scale sets how many instances a service runs, from the binary it runs:
// new instances are registered before Scale returns; extra ones are
// drained and stopped, the newest first. The count is saved, so the
// service starts with it again after a restart. which picks a version
// when several run.
func (rt *Runtime) Scale(ctx context.Context, ns, name, which string, n int) (*runtimev1.Service, error) {
	if n < 1 || n > MaxInstances {
		return nil, fmt.Errorf("%w: %d instances: between 1 and %d (meshctl kill stops a service)", ErrInvalid, n, MaxInstances)
	}
	s, err := rt.acquire(ns, name, which)
	if err != nil {
		return nil, err
	}
	defer s.op.Unlock()
	s.mu.Lock()
	binary, version, have := s.binary, s.version, len(s.instances)
	s.mu.Unlock()
	switch {
	case n > have:
		ins, err := rt.startInstances(ctx, s, n-have, binary, version)
		if err != nil {
			return nil, fmt.Errorf("scaling %s to %d: %w (the %d running still do)", name, n, err, have)
		}
		s.mu.Lock()
		s.instances = append(s.instances, ins...)
		s.mu.Unlock()
	case n < have:
		s.mu.Lock()
		extra := append([]*instance(nil), s.instances[n:]...)
		s.instances = s.instances[:n:n]
		s.mu.Unlock()
		stopAll(extra)
	}
	s.mu.Lock()
	s.spec.Instances, s.updated = n, time.Now()
	s.mu.Unlock()
	rt.log.Info("scaled", "service", name, "namespace", s.spec.Namespace, "from", have, "to", n)
	if err := rt.saveState(); err != nil {
		rt.log.Error("saving the runtime's state", "err", err)
	}
	return s.view(ctx), nil
}

// Kill drains and stops a service's instances and forgets it; which picks
// a version when several run.
func (rt *Runtime) Kill(ctx context.Context, ns, name, which string) error {
	s, err := rt.get(ns, name, which)
	if err != nil {
		return err
	}
	s.op.Lock()
	defer s.op.Unlock()
	s.mu.Lock()
	s.status = "stopped"
	ins := s.instances
	s.mu.Unlock()
	stopAll(ins)
	rt.mu.Lock()
	delete(rt.services, key(s.spec.Namespace, s.spec.Name, s.spec.Version))
	rt.mu.Unlock()
	rt.log.Info("killed", "service", name, "namespace", s.spec.Namespace)
	return rt.saveState()
}

func stopAll(ins []*instance) {
	var wg sync.WaitGroup
	for _, in := range ins {
		wg.Go(in.stop)
	}
	wg.Wait()
}

// Status lists the services in ns (all namespaces for "").
func (rt *Runtime) Status(ctx context.Context, ns string) []*runtimev1.Service {
	rt.mu.Lock()
	var list []*service
	for _, s := range rt.services {
		if ns == "" || s.spec.Namespace == ns {
			list = append(list, s)
		}
	}
	rt.mu.Unlock()
	out := make([]*runtimev1.Service, 0, len(list))
	for _, s := range list {
		out = append(out, s.view(ctx))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Version < out[j].Version
	})
	return out
}

// view is the service's status.
func (s *service) view(ctx context.Context) *runtimev1.Service {
	s.mu.Lock()
	v := &runtimev1.Service{Name: s.spec.Name, Namespace: s.spec.Namespace, Version: s.version, Source: s.spec.Source,
		Status: s.status, Updated: timestamppb.New(s.updated)}
	ins := append([]*instance(nil), s.instances...)
	s.mu.Unlock()
	crashing := false
	for _, in := range ins {
		st := in.status(ctx)
		v.Instances = append(v.Instances, st)
		if st.Status == stateBackoff && st.Restarts >= 3 {
			crashing = true
		}
	}
	if crashing && v.Status == "running" {
		v.Status = "crashloop"
	}
	return v
}

// LogDir is where a service's logs are.
func (rt *Runtime) LogDir(ns, name string) string {
	if ns == "" {
		ns = identity.DefaultNamespace
	}
	return filepath.Join(rt.o.Home.Logs(), ns, name)
}

// Logs sends the last n lines newer than since of a service's apps and
// sidecars (of the instances of version, when not ""), then, with follow,
// new lines until ctx ends. A service that no longer runs still has its
// logs.
func (rt *Runtime) Logs(ctx context.Context, ns, name, version string, n int, since time.Time, follow bool, send func(Line) error) error {
	if err := identity.ValidateName("service", name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	dir := rt.LogDir(ns, name)
	if _, err := os.Stat(dir); err != nil {
		_, gerr := rt.get(ns, name, "")
		if gerr != nil {
			return fmt.Errorf("%w: no logs", gerr)
		}
		return fmt.Errorf("%w: no logs yet", ErrNotFound)
	}
	lines, offsets, err := readLogs(dir, version, since, n)
	if err != nil {
		return err
	}
	for _, l := range lines {
		if err := send(l); err != nil {
			return err
		}
	}
	if !follow {
		return nil
	}
	return followLogs(ctx, dir, version, offsets, send)
}

// Close stops every service (they start again with the next Open).
func (rt *Runtime) Close() {
	rt.mu.Lock()
	rt.closed = true
	rt.mu.Unlock()
	rt.bg.Wait()
	rt.mu.Lock()
	var ins []*instance
	for _, s := range rt.services {
		s.mu.Lock()
		ins = append(ins, s.instances...)
		s.mu.Unlock()
	}
	rt.mu.Unlock()
	stopAll(ins)
}

func randomID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
