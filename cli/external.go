package cli

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/micromesh/micromesh/controlplane"
	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/identity"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
)

func newExternalCommand(g *globalOptions, s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "external",
		Short: "Declare services outside the mesh that apps reach through their sidecars (egress over TLS)",
		Long: `Declare a service outside the mesh — a payment API, a managed database's
HTTPS endpoint — by a name. The apps of its namespace call it as they call a
mesh service, plain HTTP to http://NAME/ through their sidecar; the sidecar
opens TLS to the host, checks that its certificate names the host and chains
to the roots given (the system's by default), and sends the request with the
host as its authority. Nothing leaves the host in plaintext, apps hold no
roots, and the calls show in meshctl stat, traces and access logs like any
other. Only requests that never reached the server are retried.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newExternalSetCommand(g, s), newExternalRemoveCommand(g, s), newExternalListCommand(g, s))
	return cmd
}

// externalJSON is an external service as the CLI prints it.
type externalJSON struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Host      string `json:"host"`
	Port      uint16 `json:"port"`
	// Roots: "system", or "own" when it brought its CA.
	Roots string `json:"roots"`
	// Protocol: http (HTTP/1.1) or grpc (HTTP/2).
	Protocol string `json:"protocol"`
}

func externalOf(e registry.External) externalJSON {
	roots := "system"
	if e.CA != "" {
		roots = "own"
	}
	protocol := e.Protocol
	if protocol == "" {
		protocol = registry.ProtocolHTTP
	}
	return externalJSON{Name: e.Name, Namespace: e.Namespace, Host: e.Host, Port: e.Port, Roots: roots, Protocol: protocol}
}

func (e externalJSON) url() string {
	if e.Port == 443 {
		return "https://" + e.Host
	}
	return "https://" + net.JoinHostPort(e.Host, strconv.Itoa(int(e.Port)))
}

// parseHostPort reads --host: HOST, HOST:PORT or https://HOST[:PORT].
func parseHostPort(v string) (string, uint16, error) {
	if rest, ok := strings.CutPrefix(v, "https://"); ok {
		v = strings.TrimSuffix(rest, "/")
	} else if strings.Contains(v, "://") {
		return "", 0, fmt.Errorf("--host %q: the sidecar reaches services outside the mesh over TLS only; give HOST or HOST:PORT (or https://…)", v)
	}
	if !strings.Contains(v, ":") {
		return v, 443, nil
	}
	host, p, err := net.SplitHostPort(v)
	if err != nil {
		return "", 0, fmt.Errorf("--host %q: %v", v, err)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("--host %q: port %q is not a TCP port (1-65535)", v, p)
	}
	return host, uint16(port), nil
}

func newExternalSetCommand(g *globalOptions, s Streams) *cobra.Command {
	var namespace, controlPlane, host, caFile, protocol string
	cmd := &cobra.Command{
		Use:   "set NAME --host HOST[:PORT] [--ca FILE] [--protocol http|grpc]",
		Short: "Declare (or change) a service outside the mesh",
		Args:  cobra.ExactArgs(1),
		Example: `  meshctl external set payments --host api.payments.example     # the system's roots, port 443
  meshctl external set ledger --host ledger.corp.example:8443 --ca corp-root.pem -n finance
  meshctl external set rates --host rates.partner.example --protocol grpc   # service.Dial(ctx, "rates") reaches it
  # then, from an app of that namespace: curl http://payments/v1/charges (through its sidecar)`,
		RunE: func(cmd *cobra.Command, args []string) error {
			h, port, err := parseHostPort(host)
			if err != nil {
				return err
			}
			e := registry.External{Name: args[0], Namespace: namespace, Host: h, Port: port, Protocol: protocol}
			if caFile != "" {
				ca, err := os.ReadFile(caFile)
				if err != nil {
					return fmt.Errorf("--ca: %w", err)
				}
				e.CA = string(ca)
			}
			if err := e.Validate(); err != nil {
				return err
			}
			err = withAdmin(cmd.Context(), g, controlPlane, func(ctx context.Context, conn *grpc.ClientConn) error {
				_, err := registryv1.NewRegistryServiceClient(conn).SetExternal(ctx, &registryv1.SetExternalRequest{External: controlplane.ExternalToProto(e)})
				return err
			})
			if err != nil {
				return err
			}
			out := externalOf(e)
			return render(s.Out, g.output, out, func() string {
				if out.Protocol == registry.ProtocolGRPC {
					return fmt.Sprintf("external service %s.%s → %s (gRPC, %s roots): the apps of %s dial %s through their sidecar\n",
						out.Name, out.Namespace, out.url(), out.Roots, out.Namespace, out.Name)
				}
				return fmt.Sprintf("external service %s.%s → %s (%s roots): the apps of %s call http://%s/ through their sidecar\n",
					out.Name, out.Namespace, out.url(), out.Roots, out.Namespace, out.Name)
			})
		},
	}
	targetFlags(cmd, &namespace, &controlPlane)
	cmd.Flags().StringVar(&host, "host", "", "the server: HOST or HOST:PORT (443 by default), a DNS name its certificate names")
	cmd.Flags().StringVar(&caFile, "ca", "", "PEM file of the roots its certificate chains to (default: the system's)")
	cmd.Flags().StringVar(&protocol, "protocol", registry.ProtocolHTTP, "what it speaks: http (HTTP/1.1) or grpc (HTTP/2)")
	_ = cmd.MarkFlagRequired("host")
	return cmd
}

func newExternalRemoveCommand(g *globalOptions, s Streams) *cobra.Command {
	var namespace, controlPlane string
	cmd := &cobra.Command{
		Use:     "remove NAME",
		Short:   "Remove a service outside the mesh (its callers get 503 again)",
		Args:    cobra.ExactArgs(1),
		Example: `  meshctl external remove payments`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := identity.ValidateName("service name", args[0]); err != nil {
				return err
			}
			if err := identity.ValidateName("namespace", namespace); err != nil {
				return err
			}
			err := withAdmin(cmd.Context(), g, controlPlane, func(ctx context.Context, conn *grpc.ClientConn) error {
				_, err := registryv1.NewRegistryServiceClient(conn).DeleteExternal(ctx, &registryv1.DeleteExternalRequest{Name: args[0], Namespace: namespace})
				return err
			})
			if err != nil {
				return err
			}
			out := externalJSON{Name: args[0], Namespace: namespace}
			return render(s.Out, g.output, out, func() string {
				return fmt.Sprintf("external service %s.%s removed\n", out.Name, out.Namespace)
			})
		},
	}
	targetFlags(cmd, &namespace, &controlPlane)
	return cmd
}

func newExternalListCommand(g *globalOptions, s Streams) *cobra.Command {
	var namespace, controlPlane string
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List the services outside the mesh",
		Args:    cobra.NoArgs,
		Example: "  meshctl external list\n  meshctl external list -n finance -o json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if namespace != "" {
				if err := identity.ValidateName("namespace", namespace); err != nil {
					return err
				}
			}
			var resp *registryv1.ListServicesResponse
			err := withAdmin(cmd.Context(), g, controlPlane, func(ctx context.Context, conn *grpc.ClientConn) error {
				var err error
				resp, err = registryv1.NewRegistryServiceClient(conn).ListServices(ctx, &registryv1.ListServicesRequest{Namespace: namespace})
				return err
			})
			if err != nil {
				return err
			}
			out := externalsOf(resp)
			return render(s.Out, g.output, out, func() string {
				if len(out) == 0 {
					return "no external services (meshctl external set NAME --host HOST declares one)\n"
				}
				return renderExternals(out)
			})
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "only this namespace (default: every namespace)")
	cmd.Flags().StringVar(&controlPlane, "controlplane", "", "control plane address (default: the local server)")
	return cmd
}

// externalsOf lists a ListServices answer's external services.
func externalsOf(resp *registryv1.ListServicesResponse) []externalJSON {
	out := []externalJSON{}
	for _, x := range resp.GetExternals() {
		out = append(out, externalOf(controlplane.ExternalFromProto(x)))
	}
	return out
}

func renderExternals(es []externalJSON) string {
	rows := make([][]string, 0, len(es))
	for _, e := range es {
		rows = append(rows, []string{e.Namespace, e.Name, e.url(), e.Protocol, e.Roots})
	}
	return table([]string{"NAMESPACE", "NAME", "REACHES", "PROTOCOL", "ROOTS"}, rows)
}
