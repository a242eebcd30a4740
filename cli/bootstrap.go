package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/micromesh/micromesh/controlplane"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/atomicfile"
	"github.com/micromesh/micromesh/internal/join"
	"github.com/micromesh/micromesh/internal/upstreams"
	"github.com/micromesh/micromesh/xds"
	"github.com/micromesh/micromesh/xds/bootstrap"
)

// joinOptions are the flags of commands that obtain a workload's credentials.
type joinOptions struct{ join.Flags }

func (o *joinOptions) add(cmd *cobra.Command) { o.Flags.Add(cmd.Flags()) }

// join gets credentials for the service into out, as `cert issue` does.
func (o *joinOptions) join(ctx context.Context, g *globalOptions, out string) (*identity.Credentials, string, error) {
	if err := o.Validate(); err != nil {
		return nil, "", err
	}
	creds, err := join.Run(ctx, o.Options(g.homeDir(), localMint(g.homeDir()), out))
	return creds, join.ControlPlaneAddr(o.ControlPlane, g.homeDir()), err
}

func newBootstrapCommand(g *globalOptions, s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bootstrap",
		Short: "Write the bootstrap of a proxyless gRPC client",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newBootstrapGRPCCommand(g, s))
	return cmd
}

func newBootstrapGRPCCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &joinOptions{}
	var out string
	var watch bool
	cmd := &cobra.Command{
		Use:   "grpc",
		Short: "Get credentials and write bootstrap.json for a proxyless gRPC client (GRPC_XDS_BOOTSTRAP)",
		Long: `Get a workload certificate for the service and write, into --out, cert.pem,
key.pem, bundle.pem and bootstrap.json: mTLS to the control plane with that
certificate, and a file_watcher certificate provider for mTLS to services.
Point GRPC_XDS_BOOTSTRAP at bootstrap.json before the client starts, and dial
xds:///<service>.

Certificates last 24 hours: rerun to renew, or pass --watch to keep running
and renew them at half-life (gRPC rereads the files).`,
		Args: cobra.NoArgs,
		Example: `  meshctl bootstrap grpc --service client --out /etc/mesh/client
  GRPC_XDS_BOOTSTRAP=/etc/mesh/client/bootstrap.json ./client`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("--out is required")
			}
			creds, addr, err := o.join(cmd.Context(), g, out)
			if err != nil {
				return err
			}
			doc, err := bootstrap.GRPC(bootstrap.GRPCOptions{
				ServerURI: addr,
				NodeID:    identity.NodeID(creds.ID, ""),
				Cluster:   creds.ID.Name,
				Files: bootstrap.Files{
					Cert: abs(filepath.Join(out, identity.CertFile)), Key: abs(filepath.Join(out, identity.KeyFile)), Bundle: abs(filepath.Join(out, identity.BundleFile)),
				},
			})
			if err != nil {
				return err
			}
			path := filepath.Join(out, "bootstrap.json")
			if err := atomicfile.Write(path, append(doc, '\n'), 0o644); err != nil {
				return err
			}
			result := map[string]string{"bootstrap": abs(path), "spiffe_id": creds.ID.String(), "not_after": creds.Leaf().NotAfter.UTC().Format(time.RFC3339)}
			if err := render(s.Out, g.output, result, func() string {
				return fmt.Sprintf("wrote %s for %s (certificate expires %s)\nexport GRPC_XDS_BOOTSTRAP=%s\n", path, creds.ID, result["not_after"], abs(path))
			}); err != nil {
				return err
			}
			if !watch {
				return nil
			}
			src := identity.NewSource(creds, identity.RemoteRenewer(addr), identity.OnRotate(func(c *identity.Credentials) error { return c.WriteDir(out) }))
			fmt.Fprintln(s.Err, "renewing the certificate in", out, "at half-life; Ctrl-C to stop")
			return src.Run(cmd.Context())
		},
	}
	o.add(cmd)
	cmd.Flags().StringVar(&out, "out", "", "directory to write the credentials and bootstrap.json into")
	cmd.Flags().BoolVar(&watch, "watch", false, "keep running and renew the certificate at half-life")
	return cmd
}

func abs(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

type envoyOptions struct {
	serviceFlags
	instance     string
	certDir      string
	controlPlane string
	inboundPort  uint32
	outboundPort uint32
	appPort      uint32
	appProtocol  string
	adminPort    uint32
	xds          string
	upstreams    []string
}

func newEnvoyCommand(g *globalOptions, s Streams) *cobra.Command {
	cmd := &cobra.Command{Use: "envoy", Short: "Run Envoy as a Micromesh sidecar", Args: cobra.NoArgs}
	o := &envoyOptions{}
	boot := &cobra.Command{
		Use:   "bootstrap",
		Short: "Print an Envoy v3 bootstrap: ADS over mTLS to the control plane, certificates by SDS",
		Long: `Print an Envoy v3 bootstrap for a sidecar of the service. Envoy reads its
certificate from --cert-dir (cert.pem, key.pem, bundle.pem, as written by
meshctl cert issue) and reloads it when the directory changes. It speaks
delta xDS: a change sends it only what changed (--xds sotw for state of
the world).`,
		Args: cobra.NoArgs,
		Example: `  meshctl cert issue --service web --out /etc/envoy/certs
  meshctl envoy bootstrap --service web --cert-dir /etc/envoy/certs --app-port 8080 > envoy.json
  envoy -c envoy.json
  meshctl envoy bootstrap --service web --cert-dir /etc/envoy/certs --app-port 8080 --upstream db=15432 # web reaches db at 127.0.0.1:15432`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.serviceFlags.validate(); err != nil {
				return err
			}
			if o.certDir == "" {
				return errors.New("--cert-dir is required: where cert.pem, key.pem and bundle.pem are")
			}
			if o.xds != "delta" && o.xds != "sotw" {
				return fmt.Errorf("--xds %q: delta or sotw", o.xds)
			}
			if o.inboundPort != 0 && o.appPort == 0 {
				return errors.New("--app-port is required with an inbound port")
			}
			if o.appProtocol != xds.ProtocolHTTP && o.appProtocol != xds.ProtocolGRPC && o.appProtocol != xds.ProtocolTCP {
				return fmt.Errorf("--app-protocol %q: http, grpc or tcp", o.appProtocol)
			}
			ups, err := upstreams.Parse(strings.Join(o.upstreams, ","))
			if err != nil {
				return fmt.Errorf("--upstream: %w", err)
			}
			td := identity.DefaultTrustDomain
			if info, err := g.homeDir().ReadServerInfo(); err == nil {
				td = info.TrustDomain
			}
			id, err := identity.ServiceID(td, o.namespace, o.service)
			if err != nil {
				return err
			}
			certDir := abs(o.certDir)
			meta := map[string]any{
				controlplane.MetaKind: xds.KindEnvoy, controlplane.MetaInboundPort: float64(o.inboundPort),
				controlplane.MetaOutboundPort: float64(o.outboundPort), controlplane.MetaAppPort: float64(o.appPort),
				controlplane.MetaAppProtocol: o.appProtocol, controlplane.MetaCertDir: certDir,
			}
			if len(ups) > 0 {
				meta[controlplane.MetaUpstreams] = upstreams.Format(ups)
			}
			b, err := bootstrap.Envoy(bootstrap.EnvoyOptions{
				ControlPlane:   join.ControlPlaneAddr(o.controlPlane, g.homeDir()),
				ControlPlaneID: identity.ControlPlaneID(td).String(),
				NodeID:         identity.NodeID(id, o.instance),
				Cluster:        o.service,
				CertDir:        certDir,
				AdminPort:      o.adminPort,
				SotW:           o.xds == "sotw",
				Metadata:       meta,
			})
			if err != nil {
				return err
			}
			doc, err := protojson.Marshal(b)
			if err != nil {
				return err
			}
			var pretty bytes.Buffer // protojson varies its spacing on purpose; normalize
			if err := json.Indent(&pretty, doc, "", "  "); err != nil {
				return err
			}
			pretty.WriteByte('\n')
			_, err = s.Out.Write(pretty.Bytes())
			return err
		},
	}
	o.serviceFlags.add(boot)
	f := boot.Flags()
	f.StringVar(&o.instance, "instance", "", "instance name, when several instances of the service run")
	f.StringVar(&o.certDir, "cert-dir", "", "directory with cert.pem, key.pem and bundle.pem")
	f.StringVar(&o.controlPlane, "controlplane", "", "control plane address (default: the local server)")
	f.Uint32Var(&o.inboundPort, "inbound-port", 15006, "port taking mTLS traffic for the service (0: none)")
	f.Uint32Var(&o.outboundPort, "outbound-port", 15001, "loopback port the app sends outbound calls to (0: none)")
	f.Uint32Var(&o.appPort, "app-port", 0, "the app's port on loopback")
	f.StringVar(&o.appProtocol, "app-protocol", xds.ProtocolHTTP, "what the app speaks: http, grpc, or tcp (its callers reach it through their --upstream ports)")
	f.StringArrayVar(&o.upstreams, "upstream", nil, "a TCP service the app reaches at a loopback port of Envoy: SERVICE[.NAMESPACE]=PORT (repeat, or comma-separate)")
	f.Uint32Var(&o.adminPort, "admin-port", 15000, "Envoy's admin port on loopback")
	f.StringVar(&o.xds, "xds", "delta", "xDS protocol: delta (only changes travel) or sotw (state of the world: every change resends all of a type)")
	cmd.AddCommand(boot)
	return cmd
}
