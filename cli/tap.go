package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/micromesh/micromesh/controlplane/stats"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
	runtimev1 "github.com/micromesh/micromesh/proto/runtime/v1"
)

// tapKey is the policy key tap turns on for as long as it runs.
const tapKey = "access_log"

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
transport — from its own sidecars, until Ctrl-C.

tap turns the service's access log on (policy key access_log=on, which
its sidecars apply at once) for as long as it runs, and off again when it
ends, unless the log was on already; then it follows the sidecars' logs.
Services the runtime runs only (meshctl run): it reads their logs.`,
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
			rt := runtimev1.NewRuntimeServiceClient(conn)
			// A service the runtime does not run says so before any policy
			// is touched.
			st, err := rt.Status(ctx, &runtimev1.StatusRequest{Namespace: ns})
			if err != nil {
				return err
			}
			if !slices.ContainsFunc(st.GetServices(), func(sv *runtimev1.Service) bool { return sv.GetName() == args[0] }) {
				return fmt.Errorf("%s does not run in namespace %s under the runtime (meshctl status lists what does): tap reads the logs of services meshctl run started", args[0], ns)
			}
			stream, err := rt.Logs(ctx, &runtimev1.LogsRequest{Name: args[0], Namespace: ns, Follow: true, Version: version, Since: timestamppb.Now()})
			if err != nil {
				return err
			}
			off, err := tapOn(ctx, reg, ns, args[0])
			if err != nil {
				return err
			}
			defer func() {
				// Ctrl-C ended ctx: put the policy back with a context of
				// its own.
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), adminCallTimeout)
				defer cancel()
				if err := off(cctx); err != nil {
					fmt.Fprintf(s.Err, "meshctl: turning %s's access log off: %v (meshctl policy clear %s %s)\n", args[0], describe(err), args[0], tapKey)
				}
			}()
			fmt.Fprintf(s.Err, "tapping %s (its sidecars log each request until Ctrl-C)\n", args[0])
			return tapLines(stream, filter, g.output, s.Out)
		},
	}
	t.flags(cmd)
	cmd.Flags().StringVar(&version, "version", "", "only the instances of this version (of versions side by side)")
	cmd.Flags().StringVar(&filter.from, "from", "", "only the calls of this caller (name, or name.namespace)")
	cmd.Flags().StringVar(&filter.path, "path", "", "only requests whose path starts so (/pkg.Service/ for one gRPC service)")
	cmd.Flags().BoolVar(&filter.failed, "failed", false, "only failures: HTTP 5xx or a gRPC status that is the server's fault (as meshctl stat counts them)")
	return cmd
}

// tapOn sets the service's access_log policy key, unless the operator's
// policy has it on already, and returns how to undo that.
func tapOn(ctx context.Context, reg registryv1.RegistryServiceClient, ns, service string) (off func(context.Context) error, err error) {
	keys, err := operatorPolicy(ctx, reg, ns, service)
	if err != nil {
		return nil, err
	}
	if keys[tapKey] == "on" {
		return func(context.Context) error { return nil }, nil
	}
	on := maps.Clone(keys)
	if on == nil {
		on = map[string]string{}
	}
	on[tapKey] = "on"
	if err := putPolicy(ctx, reg, ns, service, on); err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		// The operator's keys as they are now, less this one (back to
		// what it was, if anything).
		now, err := operatorPolicy(ctx, reg, ns, service)
		if err != nil {
			return err
		}
		now = maps.Clone(now)
		if v, ok := keys[tapKey]; ok {
			now[tapKey] = v
		} else {
			delete(now, tapKey)
		}
		return putPolicy(ctx, reg, ns, service, now)
	}, nil
}

// tapFilter picks the requests tap shows.
type tapFilter struct {
	from   string // caller: "name" or "name.namespace"
	path   string // prefix
	failed bool   // only failures (as meshctl stat counts them)
}

func (f tapFilter) keep(l tapLineJSON) bool {
	switch {
	case f.from != "" && l.Source != f.from && !strings.HasPrefix(l.Source, f.from+"."):
		return false
	case f.path != "" && !strings.HasPrefix(l.Path, f.path):
		return false
	case f.failed && !stats.Failed(strconv.Itoa(l.Code), l.GRPCStatus):
		return false
	}
	return true
}

// tapLines prints the sidecars' request lines f keeps until the stream
// ends.
func tapLines(stream runtimev1.RuntimeService_LogsClient, f tapFilter, format string, w io.Writer) error {
	for {
		l, err := stream.Recv()
		if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
			return nil
		}
		if err != nil {
			return err
		}
		line, ok := tapLine(l)
		if !ok || !f.keep(line) {
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

// tapLine reads a log line: a request the sidecar took (its access log's
// inbound line), or not one.
func tapLine(l *runtimev1.LogsResponse) (tapLineJSON, bool) {
	if l.GetSource() != "sidecar" || !strings.Contains(l.GetLine(), "msg=request ") {
		return tapLineJSON{}, false
	}
	kv := logfmt(l.GetLine())
	if kv["direction"] != "inbound" {
		return tapLineJSON{}, false
	}
	code, _ := strconv.Atoi(kv["code"])
	return tapLineJSON{Time: l.GetTime().AsTime(), Instance: l.GetInstance(), Source: kv["source"], Method: kv["method"], Path: kv["path"],
		Code: code, GRPCStatus: kv["grpc_status"], Duration: kv["duration"], Transport: kv["transport"], RequestID: kv["request_id"]}, true
}

// logfmt reads slog's text format (key=value, values quoted when they
// need it) into a map.
func logfmt(line string) map[string]string {
	out := map[string]string{}
	for line != "" {
		line = strings.TrimLeft(line, " ")
		eq := strings.IndexByte(line, '=')
		if eq <= 0 {
			break
		}
		key := line[:eq]
		line = line[eq+1:]
		var val string
		if strings.HasPrefix(line, `"`) {
			q, err := strconv.QuotedPrefix(line)
			if err != nil {
				break
			}
			val, _ = strconv.Unquote(q)
			line = line[len(q):]
		} else {
			end := strings.IndexByte(line, ' ')
			if end < 0 {
				end = len(line)
			}
			val, line = line[:end], line[end:]
		}
		out[key] = val
	}
	return out
}
