package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/micromesh/micromesh/internal/meshcheck"
	adminv1 "github.com/micromesh/micromesh/proto/admin/v1"
)

type proxyStatusJSON struct {
	Generation uint64           `json:"generation"`
	Proxies    []proxyEntryJSON `json:"proxies"`
}

type proxyEntryJSON struct {
	Node      string           `json:"node"`
	Kind      string           `json:"kind"`
	Delta     bool             `json:"delta"`
	Connected time.Time        `json:"connected"`
	Types     []typeStatusJSON `json:"types"`
}

type typeStatusJSON struct {
	Type      string `json:"type"`
	State     string `json:"state"` // SYNCED, STALE, NACKED, NOT SENT
	Served    string `json:"served_version"`
	Acked     string `json:"acked_version,omitempty"`
	NackError string `json:"nack_error,omitempty"`
}

func proxyStatus(resp *adminv1.ProxyStatusResponse) proxyStatusJSON {
	out := proxyStatusJSON{Generation: resp.GetGeneration(), Proxies: []proxyEntryJSON{}}
	for _, p := range resp.GetProxies() {
		e := proxyEntryJSON{Node: p.GetNodeId(), Kind: p.GetKind(), Delta: p.GetDelta(), Connected: p.GetConnectedAt().AsTime().UTC()}
		for _, t := range p.GetTypes() {
			e.Types = append(e.Types, typeStatusJSON{Type: t.GetType(), State: meshcheck.TypeState(t), Served: t.GetServedVersion(), Acked: t.GetAckedVersion(), NackError: t.GetNackError()})
		}
		out.Proxies = append(out.Proxies, e)
	}
	return out
}

func renderProxyStatus(st proxyStatusJSON) string {
	if len(st.Proxies) == 0 {
		return "no proxies connected\n"
	}
	var rows [][]string
	var nacks []string
	for _, p := range st.Proxies {
		mode := "sotw"
		if p.Delta {
			mode = "delta"
		}
		row := []string{p.Node, p.Kind, mode}
		for _, t := range p.Types {
			row = append(row, t.State)
			if t.NackError != "" {
				nacks = append(nacks, fmt.Sprintf("%s %s: %s", p.Node, t.Type, t.NackError))
			}
		}
		rows = append(rows, row)
	}
	out := table([]string{"NODE", "KIND", "XDS", "LDS", "RDS", "CDS", "EDS", "SDS"}, rows)
	for _, n := range nacks {
		out += "NACK " + n + "\n"
	}
	return out
}

func newProxyStatusCommand(g *globalOptions, s Streams) *cobra.Command {
	var controlPlane string
	cmd := &cobra.Command{
		Use:     "proxy-status",
		Short:   "Connected proxies and, per resource type, whether they run what the control plane serves",
		Args:    cobra.NoArgs,
		Example: "  meshctl proxy-status\n  meshctl proxy-status -o json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			var resp *adminv1.ProxyStatusResponse
			err := withAdmin(cmd.Context(), g, controlPlane, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
				resp, err = adminv1.NewAdminServiceClient(conn).ProxyStatus(ctx, &adminv1.ProxyStatusRequest{})
				return err
			})
			if err != nil {
				return err
			}
			st := proxyStatus(resp)
			return render(s.Out, g.output, st, func() string { return renderProxyStatus(st) })
		},
	}
	cmd.Flags().StringVar(&controlPlane, "controlplane", "", "control plane address (default: the local server)")
	return cmd
}

func newProxyConfigCommand(g *globalOptions, s Streams) *cobra.Command {
	var controlPlane string
	cmd := &cobra.Command{
		Use:   "proxy-config NODE [listeners|clusters|routes|endpoints|secrets]",
		Short: "What the control plane serves one proxy, as Envoy-style JSON (no key material)",
		Args:  cobra.RangeArgs(1, 2),
		Example: `  meshctl proxy-config spiffe://micromesh.local/ns/default/svc/hello~hello-1
  meshctl proxy-config spiffe://micromesh.local/ns/default/svc/client clusters`,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &adminv1.ProxyConfigRequest{NodeId: args[0]}
			if len(args) == 2 {
				req.Type = args[1]
			}
			var resp *adminv1.ProxyConfigResponse
			err := withAdmin(cmd.Context(), g, controlPlane, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
				resp, err = adminv1.NewAdminServiceClient(conn).ProxyConfig(ctx, req)
				return err
			})
			if err != nil {
				return err
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, []byte(resp.GetJson()), "", "  "); err != nil {
				return err
			}
			pretty.WriteByte('\n')
			_, err = s.Out.Write(pretty.Bytes())
			return err
		},
	}
	cmd.Flags().StringVar(&controlPlane, "controlplane", "", "control plane address (default: the local server)")
	return cmd
}
