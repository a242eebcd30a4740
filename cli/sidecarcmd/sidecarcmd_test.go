package sidecarcmd

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/micromesh/micromesh/internal/join"
)

func TestValidateSaysWhatIsWrong(t *testing.T) {
	ok := func() sidecarOptions {
		return sidecarOptions{Flags: join.Flags{Service: "web", Namespace: "default"}, app: "127.0.0.1:8080", inboundPort: 18443,
			appProtocol: "http", transport: "quic", xds: "delta"}
	}
	if o := ok(); o.validate() != nil {
		t.Fatalf("good options refused: %v", o.validate())
	}
	// An app that only reaches TCP services has something to do.
	if o := (sidecarOptions{Flags: join.Flags{Service: "web", Namespace: "default"}, app: "none", appProtocol: "http", transport: "quic", xds: "delta",
		upstreams: []string{"db=15432", "cache.shop=16379"}}); o.validate() != nil || len(o.ups) != 2 {
		t.Fatalf("an upstreams-only sidecar: %v, %v", o.validate(), o.ups)
	}
	for want, change := range map[string]func(*sidecarOptions){
		"--service is required":                  func(o *sidecarOptions) { o.Service = "" },
		"--app is required":                      func(o *sidecarOptions) { o.app = "" },
		"must be a loopback address":             func(o *sidecarOptions) { o.app = "10.0.0.1:80" },
		"--inbound-port is required":             func(o *sidecarOptions) { o.inboundPort = 0 },
		"nothing to do":                          func(o *sidecarOptions) { o.app = "none" },
		"--cores -1: want 1 or more":             func(o *sidecarOptions) { o.cores = -1 },
		`--transport "udp"`:                      func(o *sidecarOptions) { o.transport = "udp" },
		`--xds "rest"`:                           func(o *sidecarOptions) { o.xds = "rest" },
		`--advertise "host" is not`:              func(o *sidecarOptions) { o.advertise = "host" },
		`--app-protocol "h3": http, grpc or tcp`: func(o *sidecarOptions) { o.appProtocol = "h3" },
		`--upstream: upstream "db"`:              func(o *sidecarOptions) { o.upstreams = []string{"db"} },
		"one port for two services":              func(o *sidecarOptions) { o.upstreams = []string{"db=1", "cache=1"} },
	} {
		o := ok()
		change(&o)
		if err := o.validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want an error containing %q, got %v", want, err)
		}
	}
}

func TestRuntimeDefaultsToOneCoreAndItsGOGCUnlessAsked(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOMAXPROCS", "")
	t.Setenv("GOGC", "")
	tuneRuntime(0)
	if got := debug.SetGCPercent(100); got != sidecarGOGC {
		t.Fatalf("GC target %d, want %d", got, sidecarGOGC)
	}
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Fatalf("default: GOMAXPROCS %d, want 1", got)
	}
	tuneRuntime(3)
	if got := runtime.GOMAXPROCS(0); got != 3 {
		t.Fatalf("--cores 3: GOMAXPROCS %d", got)
	}
	t.Setenv("GOMAXPROCS", "2")
	t.Setenv("GOGC", "60")
	runtime.GOMAXPROCS(2) // as the runtime read them at start
	debug.SetGCPercent(60)
	tuneRuntime(0)
	if got := runtime.GOMAXPROCS(0); got != 2 {
		t.Fatalf("$GOMAXPROCS=2: GOMAXPROCS %d", got)
	}
	if got := debug.SetGCPercent(100); got != 60 {
		t.Fatalf("$GOGC=60: GC target %d", got)
	}
}
