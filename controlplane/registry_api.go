package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/identity"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
	"github.com/micromesh/micromesh/xds"
	"github.com/micromesh/micromesh/xds/policymeta"
)

// registryAPI serves the Registry API over the configured backend.
type registryAPI struct {
	registryv1.UnimplementedRegistryServiceServer
	reg    registry.Registry
	bundle *identity.Bundle
	log    *slog.Logger
	// latest is the registry's last snapshot, indexed by instance ID: who
	// owns an ID, for authorizing deregistrations and heartbeats.
	latest atomic.Pointer[map[string]registry.Instance]
	// snap is the registry's last snapshot (splits and versions, for
	// rollouts).
	snap atomic.Pointer[registry.Snapshot]
	// inMesh, if set, waits until the mesh's configuration satisfies ok
	// (ads.waitMesh).
	inMesh func(ctx context.Context, ok func(*xds.Mesh) bool) bool
}

// registerVisible bounds how long Register waits for its instance to be in
// the configuration the control plane serves.
const registerVisible = 2 * time.Second

var _ registryv1.RegistryServiceServer = (*registryAPI)(nil)

// observe records a registry snapshot.
func (a *registryAPI) observe(s registry.Snapshot) {
	m := make(map[string]registry.Instance, len(s.Instances))
	for _, in := range s.Instances {
		m[in.ID] = in
	}
	a.latest.Store(&m)
	a.snap.Store(&s)
}

func (a *registryAPI) lookup(id string) (registry.Instance, bool) {
	m := a.latest.Load()
	if m == nil {
		return registry.Instance{}, false
	}
	in, ok := (*m)[id]
	return in, ok
}

// hasInstance reports whether m has instance id of service ns/name.
func hasInstance(m *xds.Mesh, ns, name, id string) bool {
	for _, s := range m.Services {
		if s.Namespace == ns && s.Name == name {
			for _, e := range s.Endpoints {
				if e.ID == id {
					return true
				}
			}
		}
	}
	return false
}

// isAdmin reports whether id may act on any instance: the mesh's own identities.
func isAdmin(id identity.ID) bool { return id.Namespace == identity.SystemNamespace }

// authorize checks that caller may act on service ns/name: its instances,
// its split.
func authorize(caller identity.ID, ns, name string) error {
	if isAdmin(caller) || (caller.Namespace == ns && caller.Name == name) {
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "%s may act only on its own service (%s.%s), not on %s.%s",
		caller, caller.Name, caller.Namespace, name, ns)
}

func (a *registryAPI) caller(ctx context.Context) (identity.ID, error) {
	id, err := verifiedPeer(ctx, a.bundle)
	if err != nil {
		return identity.ID{}, status.Error(codes.Unauthenticated, err.Error())
	}
	return id, nil
}

func (a *registryAPI) Register(ctx context.Context, req *registryv1.RegisterRequest) (*registryv1.RegisterResponse, error) {
	caller, err := a.caller(ctx)
	if err != nil {
		return nil, err
	}
	in, err := instanceFromProto(req.GetInstance())
	if err != nil {
		return nil, registryStatus(err)
	}
	if err := in.Validate(); err != nil {
		return nil, registryStatus(err)
	}
	p, _, err := xds.PolicyFromMetadata(in.Metadata)
	if err != nil {
		return nil, registryStatus(fmt.Errorf("%w: %w", registry.ErrInvalid, err))
	}
	if p.RateLimit > 0 && in.Kind == xds.KindProxyless {
		return nil, registryStatus(fmt.Errorf("%w: policy key %srate_limit: an instance's sidecar enforces it, and a proxyless instance has none", registry.ErrInvalid, policymeta.Prefix))
	}
	if err := authorize(caller, in.Namespace, in.Service); err != nil {
		return nil, err
	}
	if old, ok := a.lookup(in.ID); ok && (old.Namespace != in.Namespace || old.Service != in.Service) {
		return nil, registryStatus(fmt.Errorf("%w: %s is %s.%s", registry.ErrConflict, in.ID, old.Service, old.Namespace))
	}
	if err := a.reg.Register(ctx, in); err != nil {
		return nil, registryStatus(err)
	}
	// Read your writes: once Register answers, a proxy that connects is
	// configured with the instance (the registry's change reaches the
	// mesh debounced, tens of milliseconds later; a caller started at
	// once — meshctl call --as after meshctl run — was told the service
	// was not in the mesh).
	if a.inMesh != nil {
		wctx, cancel := context.WithTimeout(ctx, registerVisible)
		if !a.inMesh(wctx, func(m *xds.Mesh) bool { return hasInstance(m, in.Namespace, in.Service, in.ID) }) && ctx.Err() == nil {
			a.log.Warn("the instance is registered but not yet in the mesh's configuration", "id", in.ID, "waited", registerVisible)
		}
		cancel()
	}
	a.log.Info("registered", "id", in.ID, "service", in.Service, "namespace", in.Namespace, "address", in.Address, "port", in.Port, "kind", in.Kind, "by", caller.String())
	return &registryv1.RegisterResponse{}, nil
}

func (a *registryAPI) Deregister(ctx context.Context, req *registryv1.DeregisterRequest) (*registryv1.DeregisterResponse, error) {
	caller, err := a.caller(ctx)
	if err != nil {
		return nil, err
	}
	if in, ok := a.lookup(req.GetId()); ok {
		if err := authorize(caller, in.Namespace, in.Service); err != nil {
			return nil, err
		}
	} else if !isAdmin(caller) {
		return nil, status.Errorf(codes.NotFound, "no instance %q", req.GetId())
	}
	if err := a.reg.Deregister(ctx, req.GetId()); err != nil {
		return nil, registryStatus(err)
	}
	a.log.Info("deregistered", "id", req.GetId(), "by", caller.String())
	return &registryv1.DeregisterResponse{}, nil
}

func (a *registryAPI) Heartbeat(ctx context.Context, req *registryv1.HeartbeatRequest) (*registryv1.HeartbeatResponse, error) {
	caller, err := a.caller(ctx)
	if err != nil {
		return nil, err
	}
	in, ok := a.lookup(req.GetId())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no instance %q: register it again", req.GetId())
	}
	if err := authorize(caller, in.Namespace, in.Service); err != nil {
		return nil, err
	}
	if err := a.reg.Heartbeat(ctx, req.GetId()); err != nil {
		return nil, registryStatus(err)
	}
	return &registryv1.HeartbeatResponse{}, nil
}

func (a *registryAPI) ListServices(ctx context.Context, req *registryv1.ListServicesRequest) (*registryv1.ListServicesResponse, error) {
	caller, err := a.caller(ctx)
	if err != nil {
		return nil, err
	}
	if ns := req.GetNamespace(); ns != "" {
		if err := identity.ValidateName("namespace", ns); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	visible := func(ns string) bool {
		if req.GetNamespace() != "" && ns != req.GetNamespace() {
			return false
		}
		return isAdmin(caller) || ns == caller.Namespace || ns == identity.SystemNamespace
	}
	snap, err := registry.List(ctx, a.reg)
	if err != nil {
		return nil, registryStatus(err)
	}
	resp := &registryv1.ListServicesResponse{}
	for _, in := range snap.Instances {
		if !visible(in.Namespace) {
			continue
		}
		n := len(resp.Services)
		if n == 0 || resp.Services[n-1].Name != in.Service || resp.Services[n-1].Namespace != in.Namespace {
			resp.Services = append(resp.Services, &registryv1.Service{Name: in.Service, Namespace: in.Namespace})
			n++
		}
		resp.Services[n-1].Instances = append(resp.Services[n-1].Instances, InstanceToProto(in))
	}
	for _, sp := range snap.Splits {
		if visible(sp.Namespace) {
			resp.Splits = append(resp.Splits, SplitToProto(sp))
		}
	}
	for _, p := range snap.Policies {
		if visible(p.Namespace) {
			resp.Policies = append(resp.Policies, &registryv1.Policy{Service: p.Service, Namespace: p.Namespace, Keys: p.Keys})
		}
	}
	for _, e := range snap.Externals {
		if visible(e.Namespace) {
			resp.Externals = append(resp.Externals, ExternalToProto(e))
		}
	}
	return resp, nil
}

func (a *registryAPI) SetPolicy(ctx context.Context, req *registryv1.SetPolicyRequest) (*registryv1.SetPolicyResponse, error) {
	caller, err := a.caller(ctx)
	if err != nil {
		return nil, err
	}
	rp := req.GetPolicy()
	if rp == nil {
		return nil, status.Error(codes.InvalidArgument, "the request has no policy")
	}
	p := registry.Policy{Service: rp.GetService(), Namespace: rp.GetNamespace(), Keys: rp.GetKeys()}
	if err := p.Validate(); err != nil {
		return nil, registryStatus(err)
	}
	// What the control plane will apply: the instances' policy with these
	// keys over it.
	snap, err := registry.List(ctx, a.reg)
	if err != nil {
		return nil, registryStatus(err)
	}
	if _, _, _, err := effectivePolicy(registeredPolicy(snap, p.Namespace, p.Service), p.Keys); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "the policy of %s.%s over what its instances registered: %v", p.Service, p.Namespace, err)
	}
	if err := authorize(caller, p.Namespace, p.Service); err != nil {
		return nil, err
	}
	if err := a.reg.SetPolicy(ctx, p); err != nil {
		return nil, registryStatus(err)
	}
	a.log.Info("policy set", "service", p.Service, "namespace", p.Namespace, "policy", policymeta.String(p.Keys), "by", caller.String())
	return &registryv1.SetPolicyResponse{}, nil
}

func (a *registryAPI) DeletePolicy(ctx context.Context, req *registryv1.DeletePolicyRequest) (*registryv1.DeletePolicyResponse, error) {
	if err := a.remove(ctx, "policy", req.GetNamespace(), req.GetService(), a.reg.DeletePolicy); err != nil {
		return nil, err
	}
	return &registryv1.DeletePolicyResponse{}, nil
}

// remove removes what the registry keeps for a service (what: "split",
// "policy") with del, for a caller that may act on the service.
func (a *registryAPI) remove(ctx context.Context, what, ns, service string, del func(ctx context.Context, ns, service string) error) error {
	caller, ns, err := a.callerOn(ctx, ns, service)
	if err != nil {
		return err
	}
	if err := del(ctx, ns, service); err != nil {
		return registryStatus(err)
	}
	a.log.Info(what+" removed", "service", service, "namespace", ns, "by", caller.String())
	return nil
}

// callerOn is the caller of a request on service ns/name, once checked
// that it may act on it, and the namespace (default when empty).
func (a *registryAPI) callerOn(ctx context.Context, ns, service string) (identity.ID, string, error) {
	caller, err := a.caller(ctx)
	if err != nil {
		return identity.ID{}, "", err
	}
	ns, err = serviceOf(caller, ns, service)
	return caller, ns, err
}

// serviceOf checks a request's service and namespace (default when empty)
// and that caller may act on it; it returns the namespace.
func serviceOf(caller identity.ID, ns, service string) (string, error) {
	if ns == "" {
		ns = identity.DefaultNamespace
	}
	if err := identity.ValidateName("service name", service); err != nil {
		return "", status.Error(codes.InvalidArgument, err.Error())
	}
	if err := identity.ValidateName("namespace", ns); err != nil {
		return "", status.Error(codes.InvalidArgument, err.Error())
	}
	return ns, authorize(caller, ns, service)
}

func (a *registryAPI) SetSplit(ctx context.Context, req *registryv1.SetSplitRequest) (*registryv1.SetSplitResponse, error) {
	caller, err := a.caller(ctx)
	if err != nil {
		return nil, err
	}
	p := req.GetSplit()
	if p == nil {
		return nil, status.Error(codes.InvalidArgument, "the request has no split")
	}
	sp := registry.Split{Service: p.GetService(), Namespace: p.GetNamespace(), Header: p.GetHeader(), Versions: registry.WeightsOf(p.GetVersions())}
	if err := sp.Validate(); err != nil {
		return nil, registryStatus(err)
	}
	if err := authorize(caller, sp.Namespace, sp.Service); err != nil {
		return nil, err
	}
	if err := a.reg.SetSplit(ctx, sp); err != nil {
		return nil, registryStatus(err)
	}
	a.log.Info("split set", "service", sp.Service, "namespace", sp.Namespace, "versions", registry.Shares(sp.Versions), "header", sp.Header, "by", caller.String())
	return &registryv1.SetSplitResponse{}, nil
}

func (a *registryAPI) DeleteSplit(ctx context.Context, req *registryv1.DeleteSplitRequest) (*registryv1.DeleteSplitResponse, error) {
	if err := a.remove(ctx, "split", req.GetNamespace(), req.GetService(), a.reg.DeleteSplit); err != nil {
		return nil, err
	}
	return &registryv1.DeleteSplitResponse{}, nil
}

// SplitToProto converts a split for the wire.
func SplitToProto(sp registry.Split) *registryv1.Split {
	p := &registryv1.Split{Service: sp.Service, Namespace: sp.Namespace, Header: sp.Header}
	for _, v := range sp.Versions {
		p.Versions = append(p.Versions, &registryv1.VersionWeight{Version: v.Version, Weight: v.Weight})
	}
	if sp.Rollout != nil {
		p.Rollout = rolloutToProto(sp.Rollout)
	}
	return p
}

// registryStatus maps registry errors to gRPC statuses.
func registryStatus(err error) error {
	switch {
	case errors.Is(err, registry.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, registry.ErrConflict):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, registry.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, registry.ErrChanged):
		return status.Error(codes.Aborted, err.Error()+"; try again")
	case errors.Is(err, registry.ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, err.Error())
}

func instanceFromProto(p *registryv1.Instance) (registry.Instance, error) {
	if p == nil {
		return registry.Instance{}, fmt.Errorf("%w: the request has no instance", registry.ErrInvalid)
	}
	for _, port := range []struct {
		name string
		v    uint32
	}{{"port", p.GetPort()}, {"quic_port", p.GetQuicPort()}} {
		if port.v > 65535 {
			return registry.Instance{}, fmt.Errorf("%w: %s %d is out of range (1-65535)", registry.ErrInvalid, port.name, port.v)
		}
	}
	return registry.Instance{
		ID: p.GetId(), Service: p.GetService(), Namespace: p.GetNamespace(), Address: p.GetAddress(),
		Port: uint16(p.GetPort()), QUICPort: uint16(p.GetQuicPort()),
		Protocol: p.GetProtocol(), Kind: p.GetKind(), Version: p.GetVersion(), Region: p.GetRegion(), Zone: p.GetZone(),
		Weight: p.GetWeight(), Metadata: p.GetMetadata(), TTL: p.GetTtl().AsDuration(),
	}, nil
}

// InstanceToProto converts an instance for the wire.
func InstanceToProto(in registry.Instance) *registryv1.Instance {
	p := &registryv1.Instance{
		Id: in.ID, Service: in.Service, Namespace: in.Namespace, Address: in.Address, Port: uint32(in.Port),
		QuicPort: uint32(in.QUICPort), Protocol: in.Protocol, Kind: in.Kind, Version: in.Version, Region: in.Region,
		Zone: in.Zone, Weight: in.Weight, Metadata: in.Metadata, Health: string(in.Health),
	}
	if in.TTL != 0 {
		p.Ttl = durationpb.New(in.TTL)
	}
	return p
}

// SetExternal declares a service outside the mesh: an operator's act,
// since it opens a way out for every app of the namespace.
func (a *registryAPI) SetExternal(ctx context.Context, req *registryv1.SetExternalRequest) (*registryv1.SetExternalResponse, error) {
	caller, err := a.caller(ctx)
	if err != nil {
		return nil, err
	}
	x := req.GetExternal()
	if x == nil {
		return nil, status.Error(codes.InvalidArgument, "the request has no external service")
	}
	if x.GetPort() > 65535 {
		return nil, status.Errorf(codes.InvalidArgument, "invalid external service: port %d is not a TCP port (1-65535; 0 for 443)", x.GetPort())
	}
	e := ExternalFromProto(x)
	if err := e.Validate(); err != nil {
		return nil, registryStatus(err)
	}
	if !isAdmin(caller) {
		return nil, status.Errorf(codes.PermissionDenied, "%s may not declare services outside the mesh: an operator does (an identity of the %s namespace, as meshctl's)", caller, identity.SystemNamespace)
	}
	snap, err := registry.List(ctx, a.reg)
	if err != nil {
		return nil, registryStatus(err)
	}
	for _, in := range snap.Instances {
		if in.Namespace == e.Namespace && in.Service == e.Name {
			return nil, status.Errorf(codes.FailedPrecondition, "%s.%s is a service in the mesh (instance %s); an external service of that name would be hidden by it — pick another name", e.Name, e.Namespace, in.ID)
		}
	}
	if err := a.reg.SetExternal(ctx, e); err != nil {
		return nil, registryStatus(err)
	}
	roots := "system"
	if e.CA != "" {
		roots = "own"
	}
	a.log.Info("external service set", "service", e.Name, "namespace", e.Namespace, "host", e.Host, "port", e.Port, "roots", roots, "by", caller.String())
	return &registryv1.SetExternalResponse{}, nil
}

// DeleteExternal removes a service outside the mesh (operators only).
func (a *registryAPI) DeleteExternal(ctx context.Context, req *registryv1.DeleteExternalRequest) (*registryv1.DeleteExternalResponse, error) {
	caller, err := a.caller(ctx)
	if err != nil {
		return nil, err
	}
	ns := req.GetNamespace()
	if ns == "" {
		ns = identity.DefaultNamespace
	}
	if err := identity.ValidateName("service name", req.GetName()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := identity.ValidateName("namespace", ns); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if !isAdmin(caller) {
		return nil, status.Errorf(codes.PermissionDenied, "%s may not remove services outside the mesh: an operator does (an identity of the %s namespace, as meshctl's)", caller, identity.SystemNamespace)
	}
	if err := a.reg.DeleteExternal(ctx, ns, req.GetName()); err != nil {
		return nil, registryStatus(err)
	}
	a.log.Info("external service removed", "service", req.GetName(), "namespace", ns, "by", caller.String())
	return &registryv1.DeleteExternalResponse{}, nil
}

// ExternalFromProto converts an external service from the wire (unchecked).
func ExternalFromProto(x *registryv1.External) registry.External {
	return registry.External{Name: x.GetName(), Namespace: x.GetNamespace(), Host: x.GetHost(), Port: uint16(x.GetPort()), CA: x.GetCa(), Protocol: x.GetProtocol()}
}

// ExternalToProto converts an external service for the wire.
func ExternalToProto(e registry.External) *registryv1.External {
	return &registryv1.External{Name: e.Name, Namespace: e.Namespace, Host: e.Host, Port: uint32(e.Port), Ca: e.CA, Protocol: e.Protocol}
}
