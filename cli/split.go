package cli

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/micromesh/micromesh/controlplane"
	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/identity"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
)

func newSplitCommand(g *globalOptions, s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "split",
		Short: "Split a service's traffic between its versions (canary, blue/green)",
		Long: `Split a service's traffic between its versions: each request its callers send
goes to an instance of one version, picked by the versions' shares (percent,
adding up to 100); retries stay with that version. Instances of versions the
split does not name get no requests. meshctl services shows the splits.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newSplitSetCommand(g, s), newSplitClearCommand(g, s))
	return cmd
}

type splitSetOptions struct {
	namespace    string
	header       string
	controlPlane string
}

// parseShares reads VERSION=PERCENT arguments.
func parseShares(args []string) ([]registry.VersionWeight, error) {
	var out []registry.VersionWeight
	for _, a := range args {
		v, p, ok := strings.Cut(a, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want VERSION=PERCENT, e.g. v2=10", a)
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(p, "%"), 10, 32)
		if err != nil || n > 100 {
			return nil, fmt.Errorf("%q: the share must be a whole percentage, 0-100", a)
		}
		out = append(out, registry.VersionWeight{Version: v, Weight: uint32(n)})
	}
	return out, nil
}

type splitOutput struct {
	Service   string                   `json:"service"`
	Namespace string                   `json:"namespace"`
	Versions  []registry.VersionWeight `json:"versions"`
	Header    string                   `json:"header,omitempty"`
	// Missing are the versions with a share and no instance: their share
	// of requests fails until one registers.
	Missing []string `json:"missing,omitempty"`
	// Unregistered: the service has no instance at all (a name mistyped,
	// or the split set ahead of the service).
	Unregistered bool `json:"unregistered,omitempty"`
}

func newSplitSetCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &splitSetOptions{}
	cmd := &cobra.Command{
		Use:   "set SERVICE VERSION=PERCENT...",
		Short: "Set (or replace) a service's split",
		Args:  cobra.MinimumNArgs(1),
		Example: `  meshctl split set helloworld v1=90 v2=10     # a canary
  meshctl split set helloworld v1=0 v2=100     # all to v2 (v1's instances stay, idle)
  meshctl split set web -n prod blue=50 green=50
  meshctl split set helloworld v1=100 v2=0 --header x-version   # testers send x-version: v2`,
		RunE: func(cmd *cobra.Command, args []string) error {
			shares, err := parseShares(args[1:])
			if err != nil {
				return err
			}
			sp := registry.Split{Service: args[0], Namespace: o.namespace, Versions: shares, Header: o.header}
			if err := sp.Validate(); err != nil {
				return err
			}
			out := splitOutput{Service: sp.Service, Namespace: sp.Namespace, Versions: sp.Versions, Header: sp.Header}
			err = withAdmin(cmd.Context(), g, o.controlPlane, func(ctx context.Context, conn *grpc.ClientConn) error {
				client := registryv1.NewRegistryServiceClient(conn)
				if _, err := client.SetSplit(ctx, &registryv1.SetSplitRequest{Split: controlplane.SplitToProto(sp)}); err != nil {
					return err
				}
				resp, err := client.ListServices(ctx, &registryv1.ListServicesRequest{Namespace: sp.Namespace})
				if err != nil {
					return err
				}
				out.Missing = missingVersions(sp, resp)
				out.Unregistered = !slices.ContainsFunc(resp.GetServices(), func(svc *registryv1.Service) bool {
					return svc.GetName() == sp.Service && svc.GetNamespace() == sp.Namespace
				})
				return nil
			})
			if err != nil {
				return err
			}
			return render(s.Out, g.output, out, func() string {
				var b strings.Builder
				fmt.Fprintf(&b, "split %s.%s: %s%s\n", sp.Service, sp.Namespace, registry.Shares(out.Versions), headerNote(sp.Header))
				if out.Unregistered {
					fmt.Fprintf(&b, "warning: %s.%s has no instance registered (is the name right?); the split applies once it has\n", sp.Service, sp.Namespace)
					return b.String()
				}
				for _, v := range out.Missing {
					fmt.Fprintf(&b, "warning: no instance of %s.%s has version %s: its share of requests fails (503) until one registers\n", sp.Service, sp.Namespace, v)
				}
				return b.String()
			})
		},
	}
	targetFlags(cmd, &o.namespace, &o.controlPlane)
	cmd.Flags().StringVar(&o.header, "header", "", "a request header whose value, a version the split names, sends the request to that version whatever the shares")
	return cmd
}

// targetFlags adds the flags of a command on one service: its namespace
// and the control plane.
func targetFlags(cmd *cobra.Command, namespace, controlPlane *string) {
	cmd.Flags().StringVarP(namespace, "namespace", "n", identity.DefaultNamespace, "namespace of the service")
	cmd.Flags().StringVar(controlPlane, "controlplane", "", "control plane address (default: the local server)")
}

// headerNote says what a split's version header does ("" for none).
func headerNote(h string) string {
	if h == "" {
		return ""
	}
	return "; a request with " + h + ": VERSION goes to that version"
}

// missingVersions are the versions sp gives a share whose service has no
// instance of that version in resp.
func missingVersions(sp registry.Split, resp *registryv1.ListServicesResponse) []string {
	have := map[string]bool{}
	for _, svc := range resp.GetServices() {
		if svc.GetName() == sp.Service && svc.GetNamespace() == sp.Namespace {
			for _, in := range svc.GetInstances() {
				have[in.GetVersion()] = true
			}
		}
	}
	return registry.Unserved(sp.Versions, have)
}

func newSplitClearCommand(g *globalOptions, s Streams) *cobra.Command {
	var namespace, controlPlane string
	cmd := &cobra.Command{
		Use:     "clear SERVICE",
		Short:   "Remove a service's split: its callers use every instance alike again",
		Args:    cobra.ExactArgs(1),
		Example: "  meshctl split clear helloworld",
		RunE: func(cmd *cobra.Command, args []string) error {
			service := args[0]
			if err := identity.ValidateName("service name", service); err != nil {
				return err
			}
			if err := identity.ValidateName("namespace", namespace); err != nil {
				return err
			}
			err := withAdmin(cmd.Context(), g, controlPlane, func(ctx context.Context, conn *grpc.ClientConn) error {
				_, err := registryv1.NewRegistryServiceClient(conn).DeleteSplit(ctx, &registryv1.DeleteSplitRequest{Service: service, Namespace: namespace})
				return err
			})
			if err != nil {
				return err
			}
			out := map[string]string{"service": service, "namespace": namespace}
			return render(s.Out, g.output, out, func() string {
				return fmt.Sprintf("split of %s.%s removed: its callers use every instance alike\n", service, namespace)
			})
		},
	}
	targetFlags(cmd, &namespace, &controlPlane)
	return cmd
}
