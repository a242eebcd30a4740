package cli

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/join"
	"github.com/micromesh/micromesh/internal/meshclient"
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
mints the sidecar's certificate), as call --as does.`,
		Args: cobra.RangeArgs(1, 2),
		Example: `  meshctl port-forward helloworld 9090
  grpcurl -plaintext -d '{"name":"Ann"}' 127.0.0.1:9090 examples.helloworld.v1.Helloworld/Call
  meshctl port-forward billing.finance --as orders.shop   # as orders' calls would`,
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
			callerNS, caller := identity.SystemNamespace, meshclient.AdminService
			if as != "" {
				if caller, callerNS, err = identity.SplitService(as); err != nil {
					return fmt.Errorf("--as: %w", err)
				}
				if callerNS == "" {
					callerNS = ns
				}
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
