package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/clienv"
	"github.com/micromesh/micromesh/internal/grpcrelay"
	"github.com/micromesh/micromesh/internal/join"
	"github.com/micromesh/micromesh/internal/meshclient"
	"github.com/micromesh/micromesh/internal/ports"
	"github.com/micromesh/micromesh/internal/rawcodec"
	"github.com/micromesh/micromesh/internal/upstreams"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
)

func newPortForwardCommand(g *globalOptions, s Streams) *cobra.Command {
	t := &serviceTarget{}
	var as string
	cmd := &cobra.Command{
		Use:   "port-forward SERVICE [[ADDR:]PORT]",
		Short: "A local port that stands for a service: grpcurl, curl, a browser reach it through the mesh",
		Long: `Listen on a local port (127.0.0.1, PORT or a free one) and send every request
that comes in — gRPC, or HTTP/1.1 — to SERVICE through a sidecar this
command runs, whatever host the client names, until Ctrl-C: grpcurl,
Postman, curl or a browser reach a service of the mesh as if it ran here.

The sidecar joins as --as (default meshctl.micromesh, the CLI's platform
identity, which every service admits unless its deny_from names it):
requests meet what that caller's calls meet — the service's RBAC rules,
faults, splits, retries. The port listens on loopback only, since whoever
reaches it calls as that identity. It needs the server's state (its CA
mints the sidecar's certificate), as call --as does.

For a TCP service (a database run with --app-protocol tcp) the port takes
raw TCP instead: each connection is tunnelled to an instance of the service
(psql, redis-cli, nc reach it as if it ran here); the port is then on
127.0.0.1.

In a remote environment (meshctl env) the port takes gRPC only and relays
each call to the environment's remote proxy as your login, as meshctl call
does there.`,
		Args: cobra.RangeArgs(1, 2),
		Example: `  meshctl port-forward helloworld 9090
  grpcurl -plaintext -d '{"name":"Ann"}' 127.0.0.1:9090 examples.helloworld.v1.Helloworld/Call
  meshctl port-forward billing.finance --as orders.shop   # as orders' calls would
  meshctl port-forward linedb 16000 && nc 127.0.0.1 16000   # a TCP service`,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, ns, err := identity.SplitService(args[0])
			if err != nil {
				return err
			}
			if ns == "" {
				ns = t.namespace
			}
			addr := "127.0.0.1:0"
			if len(args) == 2 {
				addr = args[1]
				if _, err := strconv.ParseUint(addr, 10, 16); err == nil {
					addr = "127.0.0.1:" + addr
				}
			}
			if err := meshclient.CheckForwardAddr(addr); err != nil {
				return err
			}
			env, err := g.environment()
			if err != nil {
				return err
			}
			if env != nil {
				if as != "" {
					return fmt.Errorf("--as runs a sidecar with a certificate from the server's CA, on the server's machine: not in environment %s, where the forward calls as your login", env.Name)
				}
				authority := args[0] // NAME.NS as given; NAME: the account's namespace
				if _, named, _ := identity.SplitService(args[0]); named == "" && cmd.Flags().Changed("namespace") {
					authority += "." + t.namespace
				}
				return forwardRemote(cmd.Context(), g, s, env, addr, authority)
			}
			callerNS, caller := identity.SystemNamespace, meshclient.AdminService
			if as != "" {
				if caller, callerNS, err = splitAs(as, ns); err != nil {
					return err
				}
			}
			tcp, err := isTCPService(cmd.Context(), g, t.controlPlane, ns, name)
			if err != nil {
				return err
			}
			if tcp {
				return forwardTCP(cmd.Context(), g, s, t, addr, ns, name, callerNS, caller)
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			defer ln.Close()
			h := g.homeDir()
			c, err := meshclient.StartCaller(cmd.Context(), h, join.ControlPlaneAddr(t.controlPlane, h), callerNS, caller,
				slog.New(slog.NewTextHandler(s.Err, &slog.HandlerOptions{Level: slog.LevelWarn})))
			if err != nil {
				return err
			}
			defer c.Close()
			local := ln.Addr().String()
			out := map[string]string{"listen": local, "service": name + "." + ns, "as": c.ID.String()}
			if err := render(s.Out, g.output, out, func() string {
				return fmt.Sprintf("forwarding %s → %s.%s through a sidecar as %s (Ctrl-C stops)\n  grpcurl -plaintext %s list\n  curl http://%s/...\n",
					local, name, ns, c.ID, local, local)
			}); err != nil {
				return err
			}
			return c.Forward(cmd.Context(), ln, ns, name)
		},
	}
	t.flags(cmd)
	cmd.Flags().StringVar(&as, "as", "", "the caller the requests come from, name or name.namespace (default: meshctl.micromesh, the CLI's platform identity)")
	return cmd
}

// isTCPService reports whether service name of namespace ns has
// instances registered with protocol tcp (false for one not registered:
// the HTTP forward then says so per request).
func isTCPService(ctx context.Context, g *globalOptions, controlPlane, ns, name string) (bool, error) {
	var tcp bool
	err := withAdmin(ctx, g, controlPlane, func(ctx context.Context, conn *grpc.ClientConn) error {
		resp, err := registryv1.NewRegistryServiceClient(conn).ListServices(ctx, &registryv1.ListServicesRequest{Namespace: ns})
		if err != nil {
			return err
		}
		for _, svc := range resp.GetServices() {
			if svc.GetName() != name {
				continue
			}
			for _, in := range svc.GetInstances() {
				tcp = tcp || in.GetProtocol() == registry.ProtocolTCP
			}
		}
		return nil
	})
	return tcp, err
}

// forwardTCP tunnels each connection to addr (127.0.0.1, a free port for
// port 0) to TCP service name of namespace ns, through a sidecar in this
// process as caller of callerNS, until ctx ends.
func forwardTCP(ctx context.Context, g *globalOptions, s Streams, t *serviceTarget, addr, ns, name, callerNS, caller string) error {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host != "127.0.0.1" {
		return fmt.Errorf("%s is a TCP service: its forward listens on 127.0.0.1 (give PORT alone), not %s", name, host)
	}
	port, _ := strconv.Atoi(p)
	if port == 0 {
		free, err := ports.Free(1)
		if err != nil {
			return err
		}
		port = free[0]
	}
	up := upstreams.Upstream{Service: name, Namespace: ns, Port: uint16(port)}
	h := g.homeDir()
	c, err := meshclient.StartCaller(ctx, h, join.ControlPlaneAddr(t.controlPlane, h), callerNS, caller,
		slog.New(slog.NewTextHandler(s.Err, &slog.HandlerOptions{Level: slog.LevelWarn})), up)
	if err != nil {
		return err
	}
	defer c.Close()
	local := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	out := map[string]string{"listen": local, "service": name + "." + ns, "as": c.ID.String(), "protocol": registry.ProtocolTCP}
	if err := render(s.Out, g.output, out, func() string {
		return fmt.Sprintf("forwarding %s → %s.%s (TCP, tunnelled through a sidecar as %s; Ctrl-C stops)\n  connect your client to %s\n",
			local, name, ns, c.ID, local)
	}); err != nil {
		return err
	}
	return c.Wait(ctx)
}

// forwardRemote serves gRPC on addr until ctx ends, relaying each call
// to env's remote proxy for the service at authority, as the account the
// CLI logged in with (its token refreshed as it nears its end).
func forwardRemote(ctx context.Context, g *globalOptions, s Streams, env *clienv.Env, addr, authority string) error {
	if _, err := accessToken(ctx, g, env); err != nil {
		return err // not logged in, or the login expired: say so now
	}
	conn, err := dialProxy(env, grpc.WithAuthority(authority), grpc.WithPerRPCCredentials(&loginToken{g: g, env: env}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(remoteMaxMessage), grpc.MaxCallSendMsgSize(remoteMaxMessage)))
	if err != nil {
		return err
	}
	defer conn.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := grpc.NewServer(
		grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
			method, _ := grpc.MethodFromServerStream(ss)
			in, _ := metadata.FromIncomingContext(ss.Context())
			return grpcrelay.Relay(ss.Context(), ss, conn, method, grpcrelay.Forwardable(in))
		}),
		grpc.ForceServerCodecV2(rawcodec.Codec{}),
		grpc.MaxRecvMsgSize(remoteMaxMessage), grpc.MaxSendMsgSize(remoteMaxMessage),
	)
	local := ln.Addr().String()
	out := map[string]string{"listen": local, "service": authority, "as": "your login to " + env.Name}
	if err := render(s.Out, g.output, out, func() string {
		return fmt.Sprintf("forwarding %s → %s in environment %s, through its remote proxy as your login; gRPC only (Ctrl-C stops)\n  grpcurl -plaintext %s list\n",
			local, authority, env.Name, local)
	}); err != nil {
		_ = ln.Close()
		return err
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(2 * time.Second):
			srv.Stop()
		}
		return nil
	}
}

// remoteMaxMessage is the remote proxy's own limit on a message.
const remoteMaxMessage = 16 << 20

// loginToken gives each call the login's access token, kept in memory
// while it has more than a minute left, then refreshed through its
// session (under the token file's lock, as every meshctl process does).
type loginToken struct {
	g   *globalOptions
	env *clienv.Env

	mu     sync.Mutex
	access string
	until  time.Time
}

func (l *loginToken) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.access == "" || !time.Now().Before(l.until) {
		access, until, err := loginAccess(ctx, l.g, l.env)
		if err != nil {
			return nil, err
		}
		l.access, l.until = access, until
	}
	return map[string]string{"authorization": "Bearer " + l.access}, nil
}

func (*loginToken) RequireTransportSecurity() bool { return true }
