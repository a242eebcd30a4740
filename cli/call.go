package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/dataplane/tracing"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/join"
	"github.com/micromesh/micromesh/internal/meshclient"
	"github.com/micromesh/micromesh/service"
	"github.com/micromesh/micromesh/service/endpoints"
)

// serviceTarget names the service a command talks to.
type serviceTarget struct {
	namespace    string
	controlPlane string
	// explicitNS is set when the command was given the namespace: in a
	// remote environment, one not given is the account's.
	explicitNS bool
}

func (t *serviceTarget) flags(cmd *cobra.Command) {
	t.flagsShort(cmd, "n")
}

// flagsShort is flags with another shorthand for --namespace ("" for
// none): logs keeps -n for its line count, as tail does.
func (t *serviceTarget) flagsShort(cmd *cobra.Command, short string) {
	cmd.Flags().StringVarP(&t.namespace, "namespace", short, identity.DefaultNamespace, "the service's namespace")
	cmd.Flags().StringVar(&t.controlPlane, "controlplane", "", "control plane address (default: the local server)")
}

// dialService connects to a ready instance of service name as the CLI's
// admin identity, straight to the instance's mTLS port (its sidecar's
// inbound): the CLI is a mesh client of its own.
//
// In a remote environment it connects to the environment's remote proxy
// instead, as the account the CLI logged in with.
func dialService(ctx context.Context, g *globalOptions, t *serviceTarget, name string) (*grpc.ClientConn, error) {
	env, err := g.environment()
	if err != nil {
		return nil, err
	}
	if env != nil {
		authority := name
		if t.explicitNS {
			authority += "." + t.namespace
		}
		return dialRemote(ctx, g, env, authority, true)
	}
	h := g.homeDir()
	return meshclient.DialService(ctx, h, join.ControlPlaneAddr(t.controlPlane, h), t.namespace, name)
}

type callOptions struct {
	target   serviceTarget
	metadata []string
	timeout  time.Duration
	// as is the service to call as ("name" or "name.namespace"; "" for
	// the CLI's admin identity, straight to an instance).
	as string
	// trace records the call's trace whatever the sampling, and says its ID.
	trace bool
}

// asCaller splits --as into a service and its namespace (the target's
// when not given).
func (o *callOptions) asCaller() (name, ns string, err error) {
	return splitAs(o.as, o.target.namespace)
}

// splitAs splits an --as value into a service and its namespace,
// targetNS when it names none.
func splitAs(as, targetNS string) (name, ns string, err error) {
	name, ns, err = identity.SplitService(as)
	if err != nil {
		return "", "", fmt.Errorf("--as: %w", err)
	}
	if ns == "" {
		ns = targetNS
	}
	return name, ns, nil
}

func (o *callOptions) validate() (metadata.MD, error) {
	if o.timeout <= 0 {
		return nil, fmt.Errorf("--timeout %v: must be positive", o.timeout)
	}
	if o.as != "" {
		if _, _, err := o.asCaller(); err != nil {
			return nil, err
		}
	}
	md := metadata.MD{}
	for _, kv := range o.metadata {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		if !ok || k == "" {
			return nil, fmt.Errorf("--metadata %q: want key=value", kv)
		}
		if strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-") || k == "x-mesh-caller" || (o.trace && k == service.TraceHeader) {
			return nil, fmt.Errorf("--metadata %q: %s is reserved", kv, k)
		}
		md.Append(k, v)
	}
	return md, nil
}

func newCallCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &callOptions{}
	cmd := &cobra.Command{
		Use:   "call SERVICE ENDPOINT [JSON]",
		Short: "Call an endpoint of a service with JSON and print the JSON answer",
		Long: `Call an endpoint of a running service through the mesh (mTLS, as the CLI's
admin identity) and print the answer as JSON, one line per message.

By default the call goes straight to an instance, a diagnostic that meets
none of the policies callers apply. With --as SERVICE it goes through a
sidecar run in the CLI as that service (outbound only, not registered): the
call meets what that service's calls meet — the target's faults, splits,
retries and mirrors, and its RBAC rules toward that service.

ENDPOINT is Service.Method (see meshctl describe SERVICE). JSON is the request
in protobuf JSON; "-" reads it from standard input; none means {}. An
endpoint that takes a stream of requests takes a JSON array of them, or with
"-" one per line of standard input, each sent as it is read (a bidirectional
stream's answers print as they come).`,
		Example: `  meshctl call helloworld Helloworld.Call '{"name":"Alice"}'
  echo '{"name":"Bob"}' | meshctl call helloworld Helloworld.Call -
  meshctl call -n prod orders Orders.Get '{"id":"42"}' --metadata tenant=acme --timeout 5s
  meshctl call helloworld Helloworld.Call '{"name":"Dan"}' --as pingpong   # as pingpong's calls go
  meshctl call helloworld Helloworld.Call '{"name":"Eve"}' --trace         # then: meshctl trace ID`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			md, err := o.validate()
			if err != nil {
				return err
			}
			o.target.explicitNS = cmd.Flags().Changed("namespace")
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			conn, set, err := describeService(ctx, g, &o.target, args[0])
			if err != nil {
				return err
			}
			defer conn.Close()
			ep, err := set.Lookup(args[1])
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			arg := ""
			if len(args) == 3 {
				arg = args[2]
			}
			return o.invoke(ctx, g, s, conn, args[0], ep, arg, md)
		},
	}
	o.target.flags(cmd)
	cmd.Flags().StringArrayVar(&o.metadata, "metadata", nil, "request metadata key=value (repeatable)")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 30*time.Second, "deadline of the call (the service sees it)")
	cmd.Flags().BoolVar(&o.trace, "trace", false, "record the call's trace (every hop's span, whatever the mesh's sampling) and print its ID on standard error: meshctl trace ID shows it")
	cmd.Flags().StringVar(&o.as, "as", "", "call as this service (name, or name.namespace): through a sidecar of its own, meeting the target's faults, splits, retries, mirrors and RBAC rules as that service's calls do")
	return cmd
}

// invoke calls endpoint ep of service name with the request arg (JSON,
// "-" for standard input, a JSON array or "-" lines for a stream) where
// describe went (conn), or through a sidecar as the --as service, and
// prints each answer as a line of JSON.
func (o *callOptions) invoke(ctx context.Context, g *globalOptions, s Streams, conn *grpc.ClientConn, name string, ep *endpoints.Endpoint, arg string, md metadata.MD) error {
	var body []byte
	var next func() ([]byte, error)
	var err error
	if ep.ClientStreaming {
		if next, err = streamMessages(arg, s.In); err != nil {
			return err
		}
	} else {
		body = []byte(arg)
		if arg == "-" {
			if body, err = io.ReadAll(s.In); err != nil {
				return fmt.Errorf("reading the request from stdin: %w", err)
			}
		}
		if _, err := ep.NewRequest(body); err != nil {
			return err
		}
	}
	via := grpc.ClientConnInterface(conn)
	if o.as != "" {
		env, err := g.environment()
		if err != nil {
			return err
		}
		if env != nil {
			return fmt.Errorf("--as runs a sidecar with a certificate from the server's CA, on the server's machine: not in environment %s", env.Name)
		}
		caller, ns, _ := o.asCaller()
		h := g.homeDir()
		c, err := meshclient.StartCaller(ctx, h, join.ControlPlaneAddr(o.target.controlPlane, h), ns, caller,
			slog.New(slog.NewTextHandler(s.Err, &slog.HandlerOptions{Level: slog.LevelWarn})))
		if err != nil {
			return err
		}
		defer c.Close()
		asConn, err := c.Dial(o.target.namespace, name)
		if err != nil {
			return err
		}
		defer asConn.Close()
		via = asConn
	}
	var tc tracing.Context
	if o.trace {
		tc = tracing.Context{TraceID: tracing.NewTraceID(), SpanID: tracing.NewSpanID(), Sampled: true}
		md.Set(service.TraceHeader, tc.String())
	}
	ctx = metadata.NewOutgoingContext(ctx, md)
	show := func(b []byte) error {
		_, err := fmt.Fprintf(s.Out, "%s\n", b)
		return err
	}
	start := time.Now()
	if ep.ClientStreaming {
		err = ep.Stream(ctx, via, next, show)
	} else {
		err = ep.Call(ctx, via, body, show)
	}
	if o.trace {
		o.recordTrace(g, s, tc, name, ep, start, err)
	}
	return err
}

// recordTrace records the call as its trace's root span, as the CLI's
// admin identity (in a remote environment, which gives the CLI none, the
// trace starts at the first proxy), and says the trace's ID.
func (o *callOptions) recordTrace(g *globalOptions, s Streams, tc tracing.Context, name string, ep *endpoints.Endpoint, start time.Time, callErr error) {
	end := time.Now()
	if env, err := g.environment(); err == nil && env == nil {
		span := &tracing.Span{TraceID: tc.TraceID, SpanID: tc.SpanID, Service: meshclient.AdminService + "." + identity.SystemNamespace,
			Name: "meshctl call " + name + " " + ep.Name, Kind: tracing.KindClient, Start: start, End: end,
			Attrs: []tracing.Attr{tracing.String("rpc.system", "grpc"), tracing.String("rpc.method", strings.TrimPrefix(ep.Method, "/")),
				tracing.String("server.address", name+"."+o.target.namespace), tracing.Int("rpc.grpc.status_code", int64(status.Code(callErr)))}}
		if callErr != nil {
			span.Error, span.Message = true, status.Convert(callErr).Message()
		}
		err := withAdmin(context.Background(), g, o.target.controlPlane, func(ctx context.Context, conn *grpc.ClientConn) error {
			_, _, err := tracing.Export(ctx, conn, tracing.Resource{SDK: "meshctl"}, []*tracing.Span{span})
			return err
		})
		if err != nil {
			fmt.Fprintf(s.Err, "recording the call's own span: %v\n", describe(err))
		}
	}
	fmt.Fprintf(s.Err, "trace %s (meshctl trace %s)\n", tc.TraceIDString(), tc.TraceIDString())
}

// streamMessages yields the requests of a client or bidirectional stream:
// the elements of a JSON array, or with "-" each line of in (blank lines
// skipped) as it is read; none: no requests.
func streamMessages(arg string, in io.Reader) (func() ([]byte, error), error) {
	switch {
	case arg == "-":
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		return func() ([]byte, error) {
			for sc.Scan() {
				if line := bytes.TrimSpace(sc.Bytes()); len(line) > 0 {
					return bytes.Clone(line), nil
				}
			}
			if err := sc.Err(); err != nil {
				return nil, fmt.Errorf("reading requests from stdin: %w", err)
			}
			return nil, io.EOF
		}, nil
	case strings.TrimSpace(arg) == "":
		return func() ([]byte, error) { return nil, io.EOF }, nil
	}
	var msgs []json.RawMessage
	if err := json.Unmarshal([]byte(arg), &msgs); err != nil {
		return nil, fmt.Errorf("the endpoint takes a stream of requests: give a JSON array of them ([{...},{...}]), or - for one per line of standard input (%v)", err)
	}
	return func() ([]byte, error) {
		if len(msgs) == 0 {
			return nil, io.EOF
		}
		m := msgs[0]
		msgs = msgs[1:]
		return m, nil
	}, nil
}

func newDescribeCommand(g *globalOptions, s Streams) *cobra.Command {
	t := &serviceTarget{}
	cmd := &cobra.Command{
		Use:     "describe SERVICE",
		Short:   "List a service's endpoints with their request and response fields",
		Args:    cobra.ExactArgs(1),
		Example: "  meshctl describe helloworld\n  meshctl describe helloworld -o json",
		RunE: func(cmd *cobra.Command, args []string) error {
			t.explicitNS = cmd.Flags().Changed("namespace")
			ctx, cancel := context.WithTimeout(cmd.Context(), adminCallTimeout)
			defer cancel()
			conn, set, err := describeService(ctx, g, t, args[0])
			if err != nil {
				return err
			}
			defer conn.Close()
			return render(s.Out, g.output, set.Endpoints, func() string { return renderEndpoints(set) })
		},
	}
	t.flags(cmd)
	return cmd
}

// describeService connects to a service and reads its endpoints by
// reflection; the caller closes the connection.
func describeService(ctx context.Context, g *globalOptions, t *serviceTarget, name string) (*grpc.ClientConn, *endpoints.Set, error) {
	conn, err := dialService(ctx, g, t, name)
	if err != nil {
		return nil, nil, err
	}
	set, err := endpoints.Describe(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	return conn, set, nil
}

func renderEndpoints(set *endpoints.Set) string {
	var rows [][]string
	for _, e := range set.Endpoints {
		req, resp := fieldList(e.Request.Fields), fieldList(e.Response.Fields)
		if e.ClientStreaming {
			req = "stream " + req
		}
		if e.ServerStreaming {
			resp = "stream " + resp
		}
		rows = append(rows, []string{e.Name, req, resp})
	}
	return table([]string{"ENDPOINT", "REQUEST", "RESPONSE"}, rows)
}

// fieldList writes fields as {name type, ...}, nested messages inline.
func fieldList(fields []endpoints.Field) string {
	parts := make([]string, 0, len(fields))
	for _, f := range fields {
		p := f.Name + " " + f.Type
		if len(f.Fields) > 0 {
			p = f.Name + " " + fieldList(f.Fields)
			if strings.HasPrefix(f.Type, "repeated ") {
				p = f.Name + " []" + fieldList(f.Fields)
			}
		}
		parts = append(parts, p)
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
