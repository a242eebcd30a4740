// Package meshclient connects the platform's own tools — the CLI, the
// end-to-end tests — to the control plane and to services, as the CLI's
// admin identity (spiffe://<td>/ns/micromesh/svc/meshctl): a mesh client
// of its own that dials an instance's mTLS port and checks that the peer
// holds the service's SPIFFE ID.
package meshclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/identity/ca"
	"github.com/micromesh/micromesh/internal/home"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
)

// AdminService is the CLI's identity toward the control plane: a service of
// the micromesh namespace, which the registry and admin APIs let act on
// every namespace.
const AdminService = "meshctl"

// AdminCredentials returns the CLI's admin certificate, kept under
// $MESH_HOME/cli/admin and renewed when it has less than minLife left. Getting
// one needs the local CA's token key: admin rights are the server machine's.
func AdminCredentials(ctx context.Context, h home.Dir, addr string) (*identity.Credentials, error) {
	const minLife = 10 * time.Minute
	dir := h.CLICredentials()
	if c, err := identity.LoadCredentials(dir); err == nil && time.Until(c.Leaf().NotAfter) > minLife {
		return c, nil
	}
	creds, err := JoinAs(ctx, h, addr, identity.SystemNamespace, AdminService)
	if errors.Is(err, errNoLocalCA) {
		return nil, fmt.Errorf("admin commands run where the server's state is: %w", err)
	}
	if err != nil {
		return nil, err
	}
	if err := creds.WriteDir(dir); err != nil {
		return nil, err
	}
	return creds, nil
}

// errNoLocalCA marks a CLI without the server's CA at hand.
var errNoLocalCA = errors.New("no local CA")

// JoinAs gets a certificate for service name of namespace ns through the
// control plane at addr, with a join token minted from the local CA (the
// server's, in h): only where the server's state is — the CLI, and what
// the server runs itself (the platform services, the API gateway).
func JoinAs(ctx context.Context, h home.Dir, addr, ns, name string) (*identity.Credentials, error) {
	signer, err := ca.LoadTokenSigner(h.CA())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoLocalCA, err)
	}
	id, err := identity.ServiceID(signer.TrustDomain(), ns, name)
	if err != nil {
		return nil, err
	}
	token, err := signer.Mint(id, time.Minute)
	if err != nil {
		return nil, err
	}
	roots, err := identity.ReadCertificates(h.RootCert())
	if err != nil {
		return nil, err
	}
	creds, err := identity.Join(ctx, addr, identity.NewBundle(signer.TrustDomain(), roots), id, token)
	if err != nil {
		return nil, fmt.Errorf("joining as %s: %w", id, err)
	}
	return creds, nil
}

// ControlPlane connects to the control plane at addr as the admin
// identity.
func ControlPlane(ctx context.Context, h home.Dir, addr string) (*grpc.ClientConn, error) {
	creds, err := AdminCredentials(ctx, h, addr)
	if err != nil {
		return nil, err
	}
	cert := creds.TLSCertificate()
	cfg := identity.ClientTLSConfig(func() *identity.Bundle { return creds.Bundle }, func() *tls.Certificate { return cert },
		identity.AuthorizeID(identity.ControlPlaneID(creds.ID.TrustDomain)))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, fmt.Errorf("control plane %s: %w", addr, err)
	}
	return conn, nil
}

// DialService connects to a ready instance of service ns/name as the
// admin identity, straight to its mTLS port (its sidecar's inbound).
func DialService(ctx context.Context, h home.Dir, addr, ns, name string) (*grpc.ClientConn, error) {
	if err := identity.ValidateName("service", name); err != nil {
		return nil, err
	}
	if err := identity.ValidateName("namespace", ns); err != nil {
		return nil, err
	}
	creds, err := AdminCredentials(ctx, h, addr)
	if err != nil {
		return nil, err
	}
	cp, err := ControlPlane(ctx, h, addr)
	if err != nil {
		return nil, err
	}
	list, err := registryv1.NewRegistryServiceClient(cp).ListServices(ctx, &registryv1.ListServicesRequest{Namespace: ns})
	cp.Close()
	if err != nil {
		return nil, err
	}
	inst, err := pickInstance(list, ns, name, rand.IntN)
	if err != nil {
		return nil, err
	}
	id, err := identity.ServiceID(creds.ID.TrustDomain, ns, name)
	if err != nil {
		return nil, err
	}
	cert := creds.TLSCertificate()
	cfg := identity.ClientTLSConfig(func() *identity.Bundle { return creds.Bundle }, func() *tls.Certificate { return cert }, identity.AuthorizeID(id))
	target := net.JoinHostPort(inst.GetAddress(), strconv.Itoa(int(inst.GetPort())))
	conn, err := grpc.NewClient("passthrough:///"+target, grpc.WithTransportCredentials(credentials.NewTLS(cfg)), grpc.WithAuthority(name))
	if err != nil {
		return nil, fmt.Errorf("service %s at %s: %w", name, target, err)
	}
	return conn, nil
}

// pickInstance chooses a healthy instance of name as the mesh's callers
// would, at random: under a split, of a version drawn by its shares
// (versions the split does not name get nothing); the error says what
// exists when name does not. intn is rand.IntN.
func pickInstance(list *registryv1.ListServicesResponse, ns, name string, intn func(int) int) (*registryv1.Instance, error) {
	var names []string
	for _, s := range list.GetServices() {
		if s.GetNamespace() != ns {
			continue
		}
		names = append(names, s.GetName())
		if s.GetName() != name {
			continue
		}
		byVersion := map[string][]*registryv1.Instance{}
		var healthy []*registryv1.Instance
		for _, in := range s.GetInstances() {
			if in.GetHealth() == "passing" && in.GetPort() != 0 {
				healthy = append(healthy, in)
				byVersion[in.GetVersion()] = append(byVersion[in.GetVersion()], in)
			}
		}
		if len(healthy) == 0 {
			return nil, fmt.Errorf("service %q has no healthy instance (see `meshctl services -n %s`)", name, ns)
		}
		i := slices.IndexFunc(list.GetSplits(), func(sp *registryv1.Split) bool { return sp.GetNamespace() == ns && sp.GetService() == name })
		if i < 0 {
			return healthy[intn(len(healthy))], nil
		}
		// The split's shares, over the versions with a healthy instance.
		var total uint32
		for _, v := range list.GetSplits()[i].GetVersions() {
			if len(byVersion[v.GetVersion()]) > 0 {
				total += v.GetWeight()
			}
		}
		if total == 0 {
			return nil, fmt.Errorf("service %q's split sends its calls to versions with no healthy instance (see `meshctl services -n %s`)", name, ns)
		}
		n := uint32(intn(int(total)))
		for _, v := range list.GetSplits()[i].GetVersions() {
			ins := byVersion[v.GetVersion()]
			if len(ins) == 0 {
				continue
			}
			if n < v.GetWeight() {
				return ins[intn(len(ins))], nil
			}
			n -= v.GetWeight()
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	if len(names) == 0 {
		return nil, fmt.Errorf("service %q is not running: namespace %q has no services (start one with `meshctl run`)", name, ns)
	}
	return nil, fmt.Errorf("service %q is not running in namespace %q; it has: %s", name, ns, strings.Join(names, ", "))
}
