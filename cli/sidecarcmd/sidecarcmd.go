// Package sidecarcmd is the command that runs the built-in sidecar: `meshctl
// sidecar`, and the whole of the standalone mesh-sidecar binary, which the
// runtime injects. It links the data plane and nothing of the server (no CA,
// registry or platform), so the sidecar process stays small.
package sidecarcmd

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/micromesh/micromesh/dataplane"
	"github.com/micromesh/micromesh/dataplane/stats"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/envconfig"
	"github.com/micromesh/micromesh/internal/home"
	"github.com/micromesh/micromesh/internal/join"
	"github.com/micromesh/micromesh/internal/logging"
	"github.com/micromesh/micromesh/internal/upstreams"
)

// Config is what the command needs from the program around it.
type Config struct {
	Out, Err io.Writer
	// Home and Output read the program's --home and -o flags when the command runs.
	Home   func() home.Dir
	Output func() string // text or json
	// Mint mints a join token from a local CA; nil in programs that have
	// none (mesh-sidecar), which then need --token or $MESH_TOKEN.
	Mint func(service, namespace string) (string, error)
}

type sidecarOptions struct {
	join.Flags
	app         string
	appProtocol string
	outbound    string
	inboundPort uint16
	admin       string
	certDir     string
	instance    string
	advertise   string
	accessLog   bool
	qlogDir     string
	statsEvery  time.Duration
	xds         string
	transport   string
	logLevel    string
	waitApp     bool
	cores       int
	batch       bool
	version     string
	policy      map[string]string
	upstreams   []string
	ups         []upstreams.Upstream // upstreams, read by validate
}

// statsInterval is --stats-interval as dataplane.Options has it (0 there
// is the default; never is negative).
func statsInterval(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func (o *sidecarOptions) validate() error {
	if err := o.Flags.Validate(); err != nil {
		return err
	}
	if o.app == "" {
		return errors.New("--app is required: the app's address (127.0.0.1:PORT), or none")
	}
	if o.app != "none" {
		if err := loopback("--app", o.app); err != nil {
			return err
		}
		if o.inboundPort == 0 {
			return errors.New("--inbound-port is required with an app: peers reach it there (TCP for TLS, UDP for QUIC)")
		}
	}
	if o.outbound != "" {
		if err := loopback("--outbound", o.outbound); err != nil {
			return err
		}
	}
	var err error
	if o.ups, err = upstreams.Parse(strings.Join(o.upstreams, ",")); err != nil {
		return fmt.Errorf("--upstream: %w", err)
	}
	if o.outbound == "" && o.app == "none" && len(o.ups) == 0 {
		return errors.New("nothing to do: give --outbound, --upstream, or an --app and --inbound-port")
	}
	if o.appProtocol != "grpc" && o.appProtocol != "http" && o.appProtocol != "tcp" {
		return fmt.Errorf("--app-protocol %q: http, grpc or tcp", o.appProtocol)
	}
	if o.statsEvery != 0 && o.statsEvery < time.Second {
		return fmt.Errorf("--stats-interval %v: want 1s or more (0: never)", o.statsEvery)
	}
	if o.cores < 0 {
		return fmt.Errorf("--cores %d: want 1 or more (0: the default)", o.cores)
	}
	if o.transport != "quic" && o.transport != "tls" {
		return fmt.Errorf("--transport %q: quic or tls", o.transport)
	}
	if o.xds != "delta" && o.xds != "sotw" {
		return fmt.Errorf("--xds %q: delta or sotw", o.xds)
	}
	if o.advertise != "" && net.ParseIP(o.advertise) == nil {
		return fmt.Errorf("--advertise %q is not an IP address", o.advertise)
	}
	return nil
}

func loopback(flag, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: want 127.0.0.1:PORT", flag, addr)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s %q: must be a loopback address", flag, addr)
	}
	return nil
}

// New returns the sidecar command.
func New(c Config) *cobra.Command {
	o := &sidecarOptions{}
	cmd := &cobra.Command{
		Use:   "sidecar",
		Short: "Run the built-in sidecar for a service (HTTP/3 over QUIC between sidecars, mTLS)",
		Long: `Run Micromesh's built-in sidecar in the foreground for one instance of a
service. It gets the service's certificate (join token, or the local CA, or
--cert-dir), follows the control plane over xDS, takes the app's outbound
calls on --outbound (HTTP/1.1 or h2c; route by Host: "name" or "name.namespace"),
takes mTLS callers on --inbound-port (TCP: HTTP/2 over TLS; UDP: HTTP/3 over
QUIC), forwards them to --app with their identity in x-mesh-caller, and keeps
the instance registered. Ctrl-C deregisters, drains and stops.

TCP services (a database, a cache) run with --app-protocol tcp; their callers
list them with --upstream NAME=PORT and connect to 127.0.0.1:PORT: each
connection rides a CONNECT stream between the two sidecars, mTLS and the
service's rules applied as to HTTP (docs/tcp.md).`,
		Args: cobra.NoArgs,
		Example: `  meshctl sidecar --service hello --app 127.0.0.1:8080 --inbound-port 18443 --outbound 127.0.0.1:15001
  curl -H 'Host: hello' http://127.0.0.1:15001/   # from another service's sidecar
  meshctl sidecar --service loadgen --app none --outbound 127.0.0.1:15002 --token "$TOKEN"
  meshctl sidecar --service db --app 127.0.0.1:5432 --app-protocol tcp --inbound-port 18444
  meshctl sidecar --service web --app none --upstream db=15432   # psql -h 127.0.0.1 -p 15432 reaches db`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			tuneRuntime(o.cores)
			log, err := logging.New(c.Err, o.logLevel)
			if err != nil {
				return err
			}
			if o.batch {
				if err := batchScheduling(); err != nil {
					log.Warn("keeping the normal scheduling policy", "component", "sidecar", "err", err)
				}
			}
			if o.instance == "" {
				b := make([]byte, 4)
				_, _ = rand.Read(b)
				o.instance = o.Service + "-" + hex.EncodeToString(b)
			}
			var creds *identity.Credentials
			certDir := o.certDir
			if certDir != "" {
				if creds, err = identity.LoadCredentials(certDir); err != nil {
					return fmt.Errorf("--cert-dir: %w", err)
				}
				if time.Now().After(creds.Leaf().NotAfter) {
					return fmt.Errorf("--cert-dir: the certificate expired at %s; get a new one (meshctl cert issue)", creds.Leaf().NotAfter.Format(time.RFC3339))
				}
			} else {
				certDir = filepath.Join(c.Home().Sidecar(o.instance), "certs")
				if creds, err = join.Run(cmd.Context(), o.Options(c.Home(), c.Mint, certDir)); err != nil {
					return err
				}
			}
			opts := dataplane.Options{
				Credentials: creds, CertDir: absPath(certDir), Instance: o.instance,
				ControlPlane: join.ControlPlaneAddr(o.ControlPlane, c.Home()),
				AppProtocol:  o.appProtocol, Outbound: o.outbound, InboundPort: o.inboundPort, Upstreams: o.ups,
				Advertise: o.advertise, Admin: o.admin, AccessLog: o.accessLog, SotW: o.xds == "sotw", NoQUIC: o.transport == "tls", Logger: log,
				WaitForApp: o.waitApp, Version: o.version, QlogDir: o.qlogDir, Policy: o.policy, StatsInterval: statsInterval(o.statsEvery),
				Ready: func(i dataplane.Info) {
					if c.Output() == "json" {
						_ = json.NewEncoder(c.Out).Encode(i)
						return
					}
					fmt.Fprintf(c.Out, "sidecar ready: %s, outbound %s, inbound %s, admin http://%s\n", i.NodeID, dash(i.Outbound), dash(i.Inbound), dash(i.Admin))
				},
			}
			if o.app != "none" {
				opts.App = o.app
			}
			return dataplane.Run(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	o.Flags.Add(f)
	f.StringVar(&o.app, "app", "", "the app's address on loopback (127.0.0.1:PORT), or none")
	f.StringVar(&o.appProtocol, "app-protocol", "http", "what the app speaks: http (HTTP/1.1), grpc (h2c), or tcp (its own protocol: callers reach it through their --upstream ports)")
	f.StringArrayVar(&o.upstreams, "upstream", nil, "a TCP service the app reaches at a loopback port of the sidecar: SERVICE[.NAMESPACE]=PORT (repeat, or comma-separate)")
	f.StringVar(&o.outbound, "outbound", "", "loopback address the app calls out through (127.0.0.1:PORT; port 0 picks a free one, printed when ready)")
	f.Uint16Var(&o.inboundPort, "inbound-port", 0, "port taking mTLS callers: TCP (TLS) and UDP (QUIC)")
	f.StringVar(&o.admin, "admin", "127.0.0.1:0", "loopback address for /ready, /config_dump, /metrics and /debug/pprof/")
	f.StringVar(&o.certDir, "cert-dir", "", "use the certificate in this directory (cert.pem, key.pem, bundle.pem) instead of joining")
	f.StringVar(&o.instance, "instance", "", "instance ID (default <service>-<random>)")
	f.StringVar(&o.advertise, "advertise", "127.0.0.1", "the IP address peers reach this instance at")
	f.BoolVar(&o.accessLog, "access-log", false, "log every request")
	f.DurationVar(&o.statsEvery, "stats-interval", stats.DefaultInterval, "how often to send request metrics to the control plane, for meshctl stat (0: never)")
	f.StringVar(&o.qlogDir, "qlog-dir", "", "write a qlog trace of every QUIC connection to this directory (for qvis; debugging only: costly)")
	f.IntVar(&o.cores, "cores", 0, "CPU cores the proxy runs on (GOMAXPROCS; default 1, or $GOMAXPROCS when set)")
	f.BoolVar(&o.batch, "batch-scheduling", true, "run with SCHED_BATCH (Linux): woken by a packet, the sidecar does not preempt the thread that sent it")
	f.BoolVar(&o.waitApp, "wait-app", false, "register only once the app answers (gRPC health or TCP), pause heartbeats while it does not")
	f.StringVar(&o.version, "version", "", "version registered with the instance")
	f.StringToStringVar(&o.policy, "policy", nil, "traffic policy its callers apply, key=value, repeatable: timeout, per_try_timeout, retries, retry_on (conditions and HTTP statuses: 5xx, gateway-error, reset, connect-failure, retriable-4xx, cancelled, deadline-exceeded, internal, resource-exhausted, unavailable, 429...), lb (round_robin|least_request), max_connections, max_pending_requests, max_requests, max_retries, consecutive_5xx, base_ejection_time, max_ejection_percent (e.g. --policy timeout=2s --policy retries=3); and the rate limit each instance enforces: rate_limit (requests/s), rate_limit_burst; faults its callers inject: fault_delay (a duration), fault_delay_percent, fault_abort (an HTTP status) or fault_abort_grpc (a gRPC code), fault_abort_percent (a fault without its percent hits every call), fault_header (only requests carrying that header); who may call it beyond its namespace and the platform: allow_from (name.namespace or *.namespace, comma-separated), and who may not: deny_from; the accounts' access tokens it asks for: scopes (* for any account of its namespace, or scopes, comma-separated); shadow traffic: mirror (a service, name or name.namespace, that gets a copy of each call), mirror_percent; PATH:key=value for the requests of one path, PATH* for a prefix: timeout, per_try_timeout, retries, retry_on, rate_limit, rate_limit_burst, fault_*, mirror, mirror_percent, allow_from, deny_from, scopes (e.g. --policy '/pkg.Greeter/Slow:timeout=30s')")
	f.StringVar(&o.transport, "transport", "quic", "what callers should use to reach this instance: quic (HTTP/3) or tls (HTTP/2)")
	f.StringVar(&o.xds, "xds", "delta", "xDS protocol: delta (only changes travel) or sotw (state of the world)")
	f.StringVar(&o.logLevel, "log-level", envconfig.Get(envconfig.LogLevel, "info"), "debug, info, warn or error")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// sidecarGOGC is the sidecar's garbage-collection target unless $GOGC
// says otherwise. The live heap is small (~1.4 MB under load: no protobuf
// reflection metadata since dataplane/xdswire), so the runtime's minimum
// heap target — 4 MB scaled by GOGC/100 — decides how often it collects:
// at 200 every ~7 MB allocated instead of every ~2 MB at 75, for about
// 30 % less CPU per request and a higher maximum rate, with peak RSS at
// 26 MB (docs/dataplane.md, Memory).
const sidecarGOGC = 200

// tuneRuntime sets how many goroutines run at once (GOMAXPROCS) and the
// GC target. A sidecar serves one instance: by default it runs on one
// core, which on a small machine also costs less CPU per request than more
// (fewer threads woken per hand-off; docs/dataplane.md has the figures).
// --cores, or $GOMAXPROCS, gives a busy instance more; $GOGC overrides
// sidecarGOGC.
func tuneRuntime(cores int) {
	switch {
	case cores > 0:
		runtime.GOMAXPROCS(cores)
	case os.Getenv("GOMAXPROCS") == "":
		runtime.GOMAXPROCS(1)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(sidecarGOGC)
	}
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
