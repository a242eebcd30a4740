package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/controlplane/stats"
	"github.com/micromesh/micromesh/identity"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
	runtimev1 "github.com/micromesh/micromesh/proto/runtime/v1"
	tapv1 "github.com/micromesh/micromesh/proto/tap/v1"
)

// tapLineJSON is one request of meshctl tap -o json.
type tapLineJSON struct {
	Time       time.Time `json:"time"`
	Instance   string    `json:"instance"`
	Source     string    `json:"source"`
	Method     string    `json:"method"`
	Path       string    `json:"path"`
	Code       int       `json:"code"`
	GRPCStatus string    `json:"grpc_status,omitempty"`
	Duration   string    `json:"duration"`
	Transport  string    `json:"transport"`
	RequestID  string    `json:"request_id,omitempty"`
}

func newTapCommand(g *globalOptions, s Streams) *cobra.Command {
	t := &serviceTarget{}
	var version string
	var filter tapFilter
	cmd := &cobra.Command{
		Use:   "tap SERVICE",
		Short: "Watch the requests a service takes, live, until Ctrl-C",
		Long: `Show each request a service's instances take as it ends: when, which instance,
the caller, method and path, HTTP code and gRPC status, duration and
transport — from its own proxies, until Ctrl-C.

While anyone taps a service, the control plane has its proxies —
built-in sidecars on any host, and Envoy — send each request to it
(Envoy's OpenTelemetry access logger), which hands them to the tappers;
when the last one goes (Ctrl-C, a lost connection), the proxies stop.
Nothing is kept, and the service's policy is not touched (its access_log
key is for log lines: meshctl logs). Durations are whole milliseconds, as
Envoy's access logs have them.`,
		Example: "  meshctl tap helloworld\n  meshctl tap helloworld --from pingpong --failed\n  meshctl tap helloworld --path /examples.helloworld.v1.Helloworld/ -o json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			conn, err := adminConn(ctx, g, t.controlPlane)
			if err != nil {
				return err
			}
			defer conn.Close()
			ns := t.namespace
			reg := registryv1.NewRegistryServiceClient(conn)
			// A service the registry does not have says so before any
			// policy is touched.
			listed, err := reg.ListServices(ctx, &registryv1.ListServicesRequest{Namespace: ns})
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(listed.GetServices(), func(sv *registryv1.Service) bool { return sv.GetName() == args[0] }) {
				return fmt.Errorf("%s is not a service in namespace %s (meshctl services lists them)", args[0], ns)
			}
			if version != "" {
				// Versions are the runtime's: its instances of that one.
				if filter.instances, err = versionInstances(ctx, runtimev1.NewRuntimeServiceClient(conn), ns, args[0], version); err != nil {
					return err
				}
			}
			// Watching before the log goes on: the first request is seen.
			stream, err := tapv1.NewTapServiceClient(conn).Watch(ctx, &tapv1.WatchRequest{Namespace: ns, Service: args[0]})
			if err == nil {
				_, err = stream.Header()
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(s.Err, "tapping %s (its proxies send each request until Ctrl-C)\n", args[0])
			return tapLines(stream, filter, g.output, s.Out, s.Err)
		},
	}
	t.flags(cmd)
	cmd.Flags().StringVar(&version, "version", "", "only the instances of this version (of versions the runtime runs side by side)")
	cmd.Flags().StringVar(&filter.from, "from", "", "only the calls of this caller (name, or name.namespace)")
	cmd.Flags().StringVar(&filter.path, "path", "", "only requests whose path starts so (/pkg.Service/ for one gRPC service)")
	cmd.Flags().BoolVar(&filter.failed, "failed", false, "only failures: HTTP 5xx or a gRPC status that is the server's fault (as meshctl stat counts them)")
	return cmd
}

// versionInstances returns the IDs of the instances of one version of a
// service the runtime runs.
func versionInstances(ctx context.Context, rt runtimev1.RuntimeServiceClient, ns, service, version string) (map[string]bool, error) {
	st, err := rt.Status(ctx, &runtimev1.StatusRequest{Namespace: ns})
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, sv := range st.GetServices() {
		if sv.GetName() == service && sv.GetVersion() == version {
			for _, in := range sv.GetInstances() {
				ids[in.GetId()] = true
			}
		}
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("the runtime runs no instance of %s version %s in namespace %s (meshctl status lists what it runs)", service, version, ns)
	}
	return ids, nil
}

// tapFilter picks the requests tap shows.
type tapFilter struct {
	from      string          // caller: "name" or "name.namespace"
	path      string          // prefix
	failed    bool            // only failures (as meshctl stat counts them)
	instances map[string]bool // only these instances (nil: all)
}

func (f tapFilter) keep(l tapLineJSON) bool {
	switch {
	case f.from != "" && l.Source != f.from && !strings.HasPrefix(l.Source, f.from+"."):
		return false
	case f.path != "" && !strings.HasPrefix(l.Path, f.path):
		return false
	case f.failed && !stats.Failed(strconv.Itoa(l.Code), l.GRPCStatus):
		return false
	case f.instances != nil && !f.instances[l.Instance]:
		return false
	}
	return true
}

// tapLines prints the requests f keeps until the stream ends.
func tapLines(stream tapv1.TapService_WatchClient, f tapFilter, format string, w, errw io.Writer) error {
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
			return nil
		}
		if err != nil {
			return err
		}
		if r.GetMissed() > 0 {
			fmt.Fprintf(errw, "meshctl: %d requests missed (tap fell behind)\n", r.GetMissed())
		}
		line := tapLine(r)
		if !f.keep(line) {
			continue
		}
		if err := render(w, format, line, func() string {
			grpc := ""
			if line.GRPCStatus != "" {
				grpc = " grpc " + line.GRPCStatus
			}
			return fmt.Sprintf("%s %s  %s → %s %s  %d%s  %s  %s\n", line.Time.Local().Format("15:04:05.000"), line.Instance,
				line.Source, line.Method, line.Path, line.Code, grpc, line.Duration, line.Transport)
		}); err != nil {
			return err
		}
	}
}

// tapLine is a request as tap shows it: the caller as "name.namespace",
// the transport as the mesh names it.
func tapLine(r *tapv1.WatchResponse) tapLineJSON {
	l := tapLineJSON{Time: r.GetTime().AsTime(), Instance: r.GetInstance(), Source: r.GetSource(), Method: r.GetMethod(), Path: r.GetPath(),
		Code: int(r.GetCode()), Duration: r.GetDuration().AsDuration().String(), RequestID: r.GetRequestId()}
	if id, err := identity.ParseID(l.Source); err == nil {
		l.Source = id.Name + "." + id.Namespace
	}
	if l.Source == "" {
		l.Source = "-"
	}
	if r.GetGrpcStatus() >= 0 {
		l.GRPCStatus = strconv.Itoa(int(r.GetGrpcStatus()))
	}
	if r.GetDuration().AsDuration() < time.Millisecond {
		l.Duration = "<1ms"
	}
	switch r.GetProtocol() {
	case "HTTP/3":
		l.Transport = "quic"
	case "":
		l.Transport = "-"
	default:
		l.Transport = "tls"
	}
	return l
}
