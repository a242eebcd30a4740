package cli

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/identity"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
	"github.com/micromesh/micromesh/xds"
	"github.com/micromesh/micromesh/xds/policymeta"
)

func newPolicyCommand(g *globalOptions, s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Change a service's traffic policy at run time (timeouts, retries, breakers, faults)",
		Long: `Change a service's traffic policy while it runs: the keys --policy takes on
meshctl run (timeout, retries, fault_abort, …; PATH:KEY for one path), set by
an operator over what the service's instances registered, key by key. Its
callers apply the change within a second; nothing restarts. meshctl services
shows both. Keys: ` + strings.Join(policyKeys(), ", ") + ".",
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newPolicySetCommand(g, s), newPolicyClearCommand(g, s))
	return cmd
}

// policyOutput is what policy set and clear print: the operator's policy
// of a service after the change (empty: none left).
type policyOutput struct {
	Service   string            `json:"service"`
	Namespace string            `json:"namespace"`
	Keys      map[string]string `json:"keys"`
	// UnknownMirrors are mirrors the keys name that have no instances
	// (name.namespace): callers send them no copies until they do.
	UnknownMirrors []string `json:"unknown_mirrors,omitempty"`
}

func (o policyOutput) text() string {
	if len(o.Keys) == 0 {
		return fmt.Sprintf("operator policy of %s.%s removed: its instances' own applies\n", o.Service, o.Namespace)
	}
	out := fmt.Sprintf("operator policy of %s.%s: %s\n", o.Service, o.Namespace, policymeta.String(o.Keys))
	for _, m := range o.UnknownMirrors {
		out += fmt.Sprintf("note: the mirror %s has no instances: callers send it copies once it has\n", m)
	}
	return out
}

// unknownMirrors lists the mirrors keys name (mirror, PATH:mirror) that
// have no registered instance, as name.namespace (the service's namespace
// when the value names none).
func unknownMirrors(ctx context.Context, client registryv1.RegistryServiceClient, ns string, keys map[string]string) ([]string, error) {
	var out []string
	listed := map[string]*registryv1.ListServicesResponse{}
	for k, v := range keys {
		if k != "mirror" && !strings.HasSuffix(k, ":mirror") {
			continue
		}
		name, mns, err := identity.SplitService(v)
		if err != nil {
			return nil, err // the registry took it: cannot happen
		}
		if mns == "" {
			mns = ns
		}
		resp := listed[mns]
		if resp == nil {
			var err error
			if resp, err = client.ListServices(ctx, &registryv1.ListServicesRequest{Namespace: mns}); err != nil {
				return nil, err
			}
			listed[mns] = resp
		}
		if !slices.ContainsFunc(resp.GetServices(), func(s *registryv1.Service) bool { return s.GetName() == name && s.GetNamespace() == mns }) {
			out = append(out, name+"."+mns)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// parsePolicyArgs reads KEY=VALUE arguments.
func parsePolicyArgs(args []string) (map[string]string, error) {
	out := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("%q: want KEY=VALUE, e.g. fault_abort=503 or '/pkg.S/Slow:timeout=5s'", a)
		}
		out[k] = v
	}
	return out, nil
}

// operatorPolicy returns the operator's policy of a service (nil: none).
func operatorPolicy(ctx context.Context, client registryv1.RegistryServiceClient, ns, service string) (map[string]string, error) {
	resp, err := client.ListServices(ctx, &registryv1.ListServicesRequest{Namespace: ns})
	if err != nil {
		return nil, err
	}
	for _, p := range resp.GetPolicies() {
		if p.GetService() == service && p.GetNamespace() == ns {
			return p.GetKeys(), nil
		}
	}
	return nil, nil
}

// putPolicy makes keys the operator's policy of a service: removed when
// empty.
func putPolicy(ctx context.Context, client registryv1.RegistryServiceClient, ns, service string, keys map[string]string) error {
	if len(keys) == 0 {
		_, err := client.DeletePolicy(ctx, &registryv1.DeletePolicyRequest{Service: service, Namespace: ns})
		return err
	}
	_, err := client.SetPolicy(ctx, &registryv1.SetPolicyRequest{Policy: &registryv1.Policy{Service: service, Namespace: ns, Keys: keys}})
	return err
}

func newPolicySetCommand(g *globalOptions, s Streams) *cobra.Command {
	var namespace, controlPlane string
	cmd := &cobra.Command{
		Use:   "set SERVICE KEY=VALUE...",
		Short: "Set keys of a service's traffic policy (the others the operator set stay)",
		Long: "Set keys of a service's traffic policy while it runs, over what its instances registered; the others the\n" +
			"operator set stay. Keys (each described in docs/policies.md): " + strings.Join(policyKeys(), ", ") + ".\n" +
			"PATH:KEY=VALUE sets a key for one path, PATH*:KEY=VALUE for a prefix (" + strings.Join(xds.PathPolicyKeys(), ", ") + ").",
		Args: cobra.MinimumNArgs(2),
		Example: `  meshctl policy set helloworld fault_abort=503 fault_abort_percent=20   # a fifth of the calls fail
  meshctl policy set helloworld '/examples.helloworld.v1.Helloworld/Call:fault_delay=2s'
  meshctl policy set helloworld fault_abort_grpc=14 fault_header=x-chaos            # only requests with x-chaos
  meshctl policy set helloworld mirror=helloworld-next mirror_percent=10            # a copy of a tenth of the calls
  meshctl policy set billing allow_from=orders.shop,*.reports deny_from=legacy.default # who may call it
  meshctl policy set billing scopes='*' '/refund/*:scopes=finance'                  # accounts' tokens it asks for
  meshctl policy set reports -n prod timeout=30s retries=0`,
		RunE: func(cmd *cobra.Command, args []string) error {
			keys, err := parsePolicyArgs(args[1:])
			if err != nil {
				return err
			}
			p := registry.Policy{Service: args[0], Namespace: namespace, Keys: keys}
			if err := p.Validate(); err != nil {
				return err
			}
			out := policyOutput{Service: p.Service, Namespace: p.Namespace}
			err = withAdmin(cmd.Context(), g, controlPlane, func(ctx context.Context, conn *grpc.ClientConn) error {
				client := registryv1.NewRegistryServiceClient(conn)
				cur, err := operatorPolicy(ctx, client, p.Namespace, p.Service)
				if err != nil {
					return err
				}
				out.Keys = maps.Clone(cur)
				if out.Keys == nil {
					out.Keys = map[string]string{}
				}
				maps.Copy(out.Keys, keys)
				if err := putPolicy(ctx, client, p.Namespace, p.Service, out.Keys); err != nil {
					return err
				}
				out.UnknownMirrors, err = unknownMirrors(ctx, client, p.Namespace, keys)
				return err
			})
			if err != nil {
				return err
			}
			return render(s.Out, g.output, out, out.text)
		},
	}
	targetFlags(cmd, &namespace, &controlPlane)
	return cmd
}

func newPolicyClearCommand(g *globalOptions, s Streams) *cobra.Command {
	var namespace, controlPlane string
	cmd := &cobra.Command{
		Use:   "clear SERVICE [KEY...]",
		Short: "Remove keys of a service's operator policy, or all of it",
		Args:  cobra.MinimumNArgs(1),
		Example: `  meshctl policy clear helloworld                    # the instances' own policy applies again
  meshctl policy clear helloworld fault_abort fault_abort_percent`,
		RunE: func(cmd *cobra.Command, args []string) error {
			service, drop := args[0], args[1:]
			if err := identity.ValidateName("service name", service); err != nil {
				return err
			}
			if err := identity.ValidateName("namespace", namespace); err != nil {
				return err
			}
			out := policyOutput{Service: service, Namespace: namespace, Keys: map[string]string{}}
			err := withAdmin(cmd.Context(), g, controlPlane, func(ctx context.Context, conn *grpc.ClientConn) error {
				client := registryv1.NewRegistryServiceClient(conn)
				if len(drop) == 0 {
					return putPolicy(ctx, client, namespace, service, nil)
				}
				cur, err := operatorPolicy(ctx, client, namespace, service)
				if err != nil {
					return err
				}
				if len(cur) == 0 {
					return fmt.Errorf("%s.%s has no operator policy", service, namespace)
				}
				for _, k := range drop {
					if _, ok := cur[k]; !ok {
						return fmt.Errorf("%s is not in the operator policy of %s.%s (it has: %s)", k, service, namespace, strings.Join(slices.Sorted(maps.Keys(cur)), ", "))
					}
				}
				out.Keys = maps.Clone(cur)
				for _, k := range drop {
					delete(out.Keys, k)
				}
				return putPolicy(ctx, client, namespace, service, out.Keys)
			})
			if err != nil {
				return err
			}
			return render(s.Out, g.output, out, out.text)
		},
	}
	targetFlags(cmd, &namespace, &controlPlane)
	return cmd
}
