package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/platform/remote"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
	"github.com/micromesh/micromesh/xds"
	"github.com/micromesh/micromesh/xds/policymeta"
)

func newRegistryCommand(g *globalOptions, s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "registry",
		Short: "Register and deregister instances by hand (VMs, proxyless servers, anything with its own mTLS)",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newRegistryRegisterCommand(g, s), newRegistryDeregisterCommand(g, s))
	return cmd
}

type registerOptions struct {
	serviceFlags
	id           string
	address      string
	quicPort     uint16
	protocol     string
	kind         string
	version      string
	ttl          time.Duration
	policy       map[string]string
	controlPlane string
}

func (o *registerOptions) validate() error {
	if err := o.serviceFlags.validate(); err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(o.address)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("--address %q: want HOST:PORT", o.address)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("--address %q: port must be 1-65535", o.address)
	}
	return nil
}

// policyKeys are the --policy keys (xds.PolicyKeys without the prefix).
func policyKeys() []string {
	keys := xds.PolicyKeys()
	for i, k := range keys {
		keys[i] = strings.TrimPrefix(k, policymeta.Prefix)
	}
	return keys
}

func newRegistryRegisterCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &registerOptions{}
	cmd := &cobra.Command{
		Use:   "register",
		Short: "Register a static instance (it stays until deregistered)",
		Args:  cobra.NoArgs,
		Example: `  meshctl registry register --service greeter --address 10.0.0.7:7000 --kind proxyless
  meshctl registry register --service web -n prod --address 10.0.0.8:15006 --kind envoy --id web-vm-1
  meshctl registry register --service legacy --address 10.0.0.9:8443 --kind envoy --policy timeout=2s --policy retries=0
  meshctl registry register --service reports --address 10.0.0.10:8443 --kind envoy --policy '/export/*:timeout=5m'`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			host, portStr, _ := net.SplitHostPort(o.address)
			port, _ := strconv.Atoi(portStr)
			id := o.id
			if id == "" {
				id = o.service + "-" + randomSuffix()
			}
			in := &registryv1.Instance{
				Id: id, Service: o.service, Namespace: o.namespace, Address: host, Port: uint32(port), QuicPort: uint32(o.quicPort),
				Protocol: o.protocol, Kind: o.kind, Version: o.version,
			}
			in.Metadata = policymeta.Metadata(o.policy)
			if o.ttl != 0 {
				in.Ttl = durationpb.New(o.ttl)
			}
			err := withAdmin(cmd.Context(), g, o.controlPlane, func(ctx context.Context, conn *grpc.ClientConn) error {
				_, err := registryv1.NewRegistryServiceClient(conn).Register(ctx, &registryv1.RegisterRequest{Instance: in})
				return err
			})
			if err != nil {
				return err
			}
			out := map[string]string{"id": id, "service": o.service, "namespace": o.namespace, "address": o.address}
			return render(s.Out, g.output, out, func() string {
				return fmt.Sprintf("registered %s: %s.%s at %s\n", id, o.service, o.namespace, o.address)
			})
		},
	}
	o.serviceFlags.add(cmd)
	f := cmd.Flags()
	f.StringVar(&o.id, "id", "", "instance ID (default: <service>-<random>)")
	f.StringVar(&o.address, "address", "", "HOST:PORT where the instance serves mTLS")
	f.Uint16Var(&o.quicPort, "quic-port", 0, "UDP port serving HTTP/3 (built-in sidecars)")
	f.StringVar(&o.protocol, "protocol", registry.ProtocolGRPC, "grpc, http or tcp (its callers reach it through their --upstream ports; needs a builtin or envoy kind)")
	f.StringVar(&o.kind, "kind", registry.KindProxyless, "builtin, envoy or proxyless")
	f.StringVar(&o.version, "version", "", "version label")
	f.DurationVar(&o.ttl, "ttl", 0, "heartbeat deadline (default: static)")
	f.StringToStringVar(&o.policy, "policy", nil, "traffic policy — what the service's callers apply (fault_* injects faults into their calls), and rate_limit (requests/s) each instance enforces —, key=value, repeatable (keys: "+strings.Join(policyKeys(), ", ")+"); PATH:key=value for the requests of one path, PATH* for a prefix ("+strings.Join(xds.PathPolicyKeys(), ", ")+")")
	f.StringVar(&o.controlPlane, "controlplane", "", "control plane address (default: the local server)")
	return cmd
}

func randomSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func newRegistryDeregisterCommand(g *globalOptions, s Streams) *cobra.Command {
	var id, controlPlane string
	cmd := &cobra.Command{
		Use:     "deregister",
		Short:   "Remove an instance",
		Args:    cobra.NoArgs,
		Example: "  meshctl registry deregister --id greeter-1",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" {
				return errors.New("--id is required (meshctl services lists instance IDs)")
			}
			err := withAdmin(cmd.Context(), g, controlPlane, func(ctx context.Context, conn *grpc.ClientConn) error {
				_, err := registryv1.NewRegistryServiceClient(conn).Deregister(ctx, &registryv1.DeregisterRequest{Id: id})
				return err
			})
			if err != nil {
				return err
			}
			return render(s.Out, g.output, map[string]string{"id": id}, func() string { return "deregistered " + id + "\n" })
		},
	}
	cmd.Flags().StringVar(&id, "id", "", "instance ID")
	cmd.Flags().StringVar(&controlPlane, "controlplane", "", "control plane address (default: the local server)")
	return cmd
}

func newServicesCommand(g *globalOptions, s Streams) *cobra.Command {
	var namespace, controlPlane string
	cmd := &cobra.Command{
		Use:   "services",
		Short: "List services and their instances: addresses, kind, health",
		Args:  cobra.NoArgs,
		Long: `List services and their instances: addresses, kind, health, the traffic
policy each service set, and splits. In a remote environment: the services
of your account's namespace (any with the scope admin).`,
		Example: "  meshctl services\n  meshctl services -n prod -o json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if namespace != "" {
				if err := identity.ValidateName("namespace", namespace); err != nil {
					return err
				}
			}
			var resp *registryv1.ListServicesResponse
			list := func(ctx context.Context, conn *grpc.ClientConn) (err error) {
				resp, err = registryv1.NewRegistryServiceClient(conn).ListServices(ctx, &registryv1.ListServicesRequest{Namespace: namespace})
				return err
			}
			env, err := g.environment()
			if err != nil {
				return err
			}
			if env != nil { // through the remote proxy, the account's namespace
				ctx, cancel := context.WithTimeout(cmd.Context(), adminCallTimeout)
				defer cancel()
				conn, derr := dialRemote(ctx, g, env, remote.RegistryAuthority, true)
				if derr != nil {
					return derr
				}
				defer conn.Close()
				err = list(ctx, conn)
			} else {
				err = withAdmin(cmd.Context(), g, controlPlane, list)
			}
			if err != nil {
				return err
			}
			return render(s.Out, g.output, servicesJSON(resp), func() string { return renderServices(resp) })
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "only this namespace")
	cmd.Flags().StringVar(&controlPlane, "controlplane", "", "control plane address (default: the local server)")
	return remoteOK(cmd)
}

type serviceJSON struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Policy is what the service's callers apply beyond xds.DefaultPolicy:
	// the policy of its first instance by ID that sets one, as the control
	// plane takes it.
	Policy map[string]string `json:"policy,omitempty"`
	// OperatorPolicy is what an operator set over it (meshctl policy set),
	// key by key.
	OperatorPolicy map[string]string `json:"operator_policy,omitempty"`
	// Split is how its callers spread its requests over its versions;
	// SplitHeader the header that picks a version whatever the shares.
	Split       []registry.VersionWeight `json:"split,omitempty"`
	SplitHeader string                   `json:"split_header,omitempty"`
	// Rollout is the rollout that sets the split, if any (meshctl rollout).
	Rollout   *rolloutOutput  `json:"rollout,omitempty"`
	Instances []*instanceJSON `json:"instances"`
}

type instanceJSON struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	QUICPort uint32 `json:"quic_port,omitempty"`
	Protocol string `json:"protocol"`
	Kind     string `json:"kind"`
	Version  string `json:"version,omitempty"`
	Health   string `json:"health"`
	TTL      string `json:"ttl,omitempty"`
	// Policy is the traffic policy this instance registered (keys without
	// the policy_ prefix).
	Policy map[string]string `json:"policy,omitempty"`
}

func servicesJSON(resp *registryv1.ListServicesResponse) []serviceJSON {
	out := []serviceJSON{}
	for _, svc := range resp.GetServices() {
		sj := serviceJSON{Name: svc.GetName(), Namespace: svc.GetNamespace()}
		for _, in := range svc.GetInstances() {
			ij := &instanceJSON{ID: in.GetId(), Address: net.JoinHostPort(in.GetAddress(), strconv.Itoa(int(in.GetPort()))),
				QUICPort: in.GetQuicPort(), Protocol: in.GetProtocol(), Kind: in.GetKind(), Version: in.GetVersion(), Health: in.GetHealth()}
			if in.GetTtl() != nil {
				ij.TTL = in.GetTtl().AsDuration().String()
			}
			ij.Policy = policymeta.Flags(in.GetMetadata())
			sj.Instances = append(sj.Instances, ij)
		}
		slices.SortFunc(sj.Instances, func(a, b *instanceJSON) int { return strings.Compare(a.ID, b.ID) })
		for _, in := range sj.Instances {
			if in.Policy != nil {
				sj.Policy = in.Policy
				break
			}
		}
		out = append(out, sj)
	}
	// Splits, also of services with no instance yet.
	for _, sp := range resp.GetSplits() {
		i := slices.IndexFunc(out, func(sj serviceJSON) bool { return sj.Name == sp.GetService() && sj.Namespace == sp.GetNamespace() })
		if i < 0 {
			out = append(out, serviceJSON{Name: sp.GetService(), Namespace: sp.GetNamespace(), Instances: []*instanceJSON{}})
			i = len(out) - 1
		}
		out[i].Split = append(out[i].Split, registry.WeightsOf(sp.GetVersions())...)
		out[i].SplitHeader = sp.GetHeader()
		if sp.GetRollout() != nil {
			r := rolloutOf(sp)
			out[i].Rollout = &r
		}
	}
	for _, p := range resp.GetPolicies() {
		if i := slices.IndexFunc(out, func(sj serviceJSON) bool { return sj.Name == p.GetService() && sj.Namespace == p.GetNamespace() }); i >= 0 {
			out[i].OperatorPolicy = p.GetKeys()
		} else {
			out = append(out, serviceJSON{Name: p.GetService(), Namespace: p.GetNamespace(), OperatorPolicy: p.GetKeys(), Instances: []*instanceJSON{}})
		}
	}
	slices.SortStableFunc(out, func(a, b serviceJSON) int { return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name) })
	return out
}

func renderServices(resp *registryv1.ListServicesResponse) string {
	services := servicesJSON(resp)
	outside := ""
	if es := externalsOf(resp); len(es) > 0 {
		outside = "outside the mesh (reached over TLS by their callers' sidecars):\n" + renderExternals(es)
	}
	if len(services) == 0 {
		if outside != "" {
			return "no services registered\n\n" + outside
		}
		return "no services registered\n"
	}
	var rows [][]string
	for _, svc := range services {
		for _, in := range svc.Instances {
			transport := "tls"
			if in.QUICPort != 0 {
				transport = "tls+quic"
			}
			rows = append(rows, []string{svc.Namespace, svc.Name, in.ID, in.Address, in.Protocol, in.Kind, transport, in.Version, strings.ToUpper(in.Health)})
		}
	}
	slices.SortStableFunc(rows, func(a, b []string) int { return strings.Compare(a[0]+"/"+a[1], b[0]+"/"+b[1]) })
	out := table([]string{"NAMESPACE", "SERVICE", "INSTANCE", "ADDRESS", "PROTOCOL", "KIND", "TRANSPORT", "VERSION", "HEALTH"}, rows)
	if policies := renderPolicies(services); policies != "" {
		out += "\n" + policies
	}
	if splits := renderSplits(services); splits != "" {
		out += "\n" + splits
	}
	if outside != "" {
		out += "\n" + outside
	}
	return out
}

// renderSplits lists the services whose traffic is split between
// versions, naming versions with a share and no instance (their share of
// requests fails).
func renderSplits(services []serviceJSON) string {
	var rows [][]string
	for _, svc := range services {
		if svc.Split == nil {
			continue
		}
		have := map[string]bool{}
		for _, in := range svc.Instances {
			have[in.Version] = true
		}
		split := registry.Shares(svc.Split) + headerNote(svc.SplitHeader)
		if missing := registry.Unserved(svc.Split, have); len(missing) > 0 {
			split += "  (no instance of " + strings.Join(missing, ", ") + ": its share fails)"
		}
		if r := svc.Rollout; r != nil {
			split += "  rollout " + r.From + " → " + r.To + ": " + r.State
			if r.State == registry.RolloutProgressing {
				split += fmt.Sprintf(", step %d of %d", r.Step+1, len(r.Steps))
			}
		}
		rows = append(rows, []string{svc.Namespace + "/" + svc.Name, split})
	}
	if len(rows) == 0 {
		return ""
	}
	return table([]string{"SERVICE", "SPLIT (percent of requests by version)"}, rows)
}

// renderPolicies lists the services that set a traffic policy: what their
// instances registered (keys not listed are xds.DefaultPolicy's), the
// keys an operator set over it, and the instances that registered another
// one, which the control plane ignores while they are not the first by ID
// that sets one.
func renderPolicies(services []serviceJSON) string {
	var rows [][]string
	for _, svc := range services {
		if svc.Policy == nil && svc.OperatorPolicy == nil {
			continue
		}
		policy := policymeta.String(svc.Policy)
		if svc.OperatorPolicy != nil {
			policy = strings.TrimSpace(policy + "  operator: " + policymeta.String(svc.OperatorPolicy))
		}
		var differ []string
		for _, in := range svc.Instances {
			if in.Policy != nil && !maps.Equal(in.Policy, svc.Policy) {
				differ = append(differ, in.ID)
			}
		}
		if len(differ) > 0 {
			policy += "  (" + strings.Join(differ, ", ") + " registered another, ignored: the first instance by ID applies)"
		}
		rows = append(rows, []string{svc.Namespace + "/" + svc.Name, policy})
	}
	if len(rows) == 0 {
		return ""
	}
	slices.SortFunc(rows, func(a, b []string) int { return strings.Compare(a[0], b[0]) })
	return table([]string{"SERVICE", "POLICY (keys not listed: the defaults)"}, rows)
}
