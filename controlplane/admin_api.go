package controlplane

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/version"
	adminv1 "github.com/micromesh/micromesh/proto/admin/v1"
)

// adminAPI tells operators what the control plane serves to whom.
type adminAPI struct {
	adminv1.UnimplementedAdminServiceServer
	ads     *ads
	bundle  *identity.Bundle
	reg     registry.Registry
	started time.Time
}

var _ adminv1.AdminServiceServer = (*adminAPI)(nil)

func (a *adminAPI) authorize(ctx context.Context) error {
	id, err := verifiedPeer(ctx, a.bundle)
	if err != nil {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	if !isAdmin(id) {
		return status.Errorf(codes.PermissionDenied, "the admin API is for identities of namespace %s; %s is not one", identity.SystemNamespace, id)
	}
	return nil
}

// Status says how the control plane is; the registry's state when its
// backend tells it.
func (a *adminAPI) Status(ctx context.Context, _ *adminv1.StatusRequest) (*adminv1.StatusResponse, error) {
	if err := a.authorize(ctx); err != nil {
		return nil, err
	}
	resp := &adminv1.StatusResponse{Version: version.Version, Started: timestamppb.New(a.started), TrustDomain: a.bundle.TrustDomain(),
		Registry: &adminv1.Registry{}}
	if st, ok := a.reg.(registry.Stater); ok {
		s := st.State()
		resp.Registry = &adminv1.Registry{Backend: s.Backend, Address: s.Address, Unreachable: s.Unreachable, Error: s.Error}
		if s.Unreachable {
			resp.Registry.Since = timestamppb.New(s.Since)
		}
	}
	return resp, nil
}

func (a *adminAPI) ProxyStatus(ctx context.Context, _ *adminv1.ProxyStatusRequest) (*adminv1.ProxyStatusResponse, error) {
	if err := a.authorize(ctx); err != nil {
		return nil, err
	}
	a.ads.mu.Lock()
	defer a.ads.mu.Unlock()
	resp := &adminv1.ProxyStatusResponse{Generation: a.ads.gen.version}
	for id, n := range a.ads.nodes {
		p := &adminv1.Proxy{
			NodeId: id, Kind: n.proxy.Kind, Namespace: n.proxy.Namespace, Service: n.proxy.Service,
			Delta: n.delta, ConnectedAt: timestamppb.New(n.connected),
		}
		for _, typ := range allTypes {
			ts := &adminv1.TypeStatus{Type: shortType(typ), ServedVersion: n.versions[typ]}
			if ack, ok := n.acked[typ]; ok {
				ts.AckedVersion, ts.AckedAt = ack.Version, timestamppb.New(ack.At)
			}
			if nack, ok := n.nacked[typ]; ok {
				ts.NackedVersion, ts.NackedAt, ts.NackError = nack.Version, timestamppb.New(nack.At), nack.Error
			}
			p.Types = append(p.Types, ts)
		}
		resp.Proxies = append(resp.Proxies, p)
	}
	sort.Slice(resp.Proxies, func(i, j int) bool { return resp.Proxies[i].NodeId < resp.Proxies[j].NodeId })
	return resp, nil
}

// configTypes maps the names `meshctl proxy-config` takes to type URLs.
var configTypes = map[string]string{
	"listeners": resource.ListenerType,
	"routes":    resource.RouteType,
	"clusters":  resource.ClusterType,
	"endpoints": resource.EndpointType,
	"secrets":   resource.SecretType,
}

func (a *adminAPI) ProxyConfig(ctx context.Context, req *adminv1.ProxyConfigRequest) (*adminv1.ProxyConfigResponse, error) {
	if err := a.authorize(ctx); err != nil {
		return nil, err
	}
	names := []string{"listeners", "routes", "clusters", "endpoints", "secrets"}
	if t := req.GetType(); t != "" {
		if _, ok := configTypes[t]; !ok {
			return nil, status.Errorf(codes.InvalidArgument, "type %q: choose one of %v", t, names)
		}
		names = []string{t}
	}
	a.ads.mu.Lock()
	n, ok := a.ads.nodes[req.GetNodeId()]
	var kind string
	if ok {
		kind = n.proxy.Kind
	}
	connected := make([]string, 0, len(a.ads.nodes))
	for id := range a.ads.nodes {
		connected = append(connected, id)
	}
	a.ads.mu.Unlock()
	if !ok {
		slices.Sort(connected)
		return nil, status.Errorf(codes.NotFound, "no connected proxy %q; connected: %v", req.GetNodeId(), connected)
	}
	snap, err := a.ads.cacheFor(kind).GetSnapshot(req.GetNodeId())
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "no config for %q yet: %v", req.GetNodeId(), err)
	}
	doc := map[string][]json.RawMessage{}
	for _, name := range names {
		res := snap.GetResources(configTypes[name])
		keys := make([]string, 0, len(res))
		for k := range res {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		doc[name] = []json.RawMessage{}
		for _, k := range keys {
			b, err := protojson.Marshal(redact(res[k]))
			if err != nil {
				return nil, status.Errorf(codes.Internal, "encode %s %s: %v", name, k, err)
			}
			doc[name] = append(doc[name], b)
		}
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode config: %v", err)
	}
	return &adminv1.ProxyConfigResponse{Json: string(out)}, nil
}

// redact removes private key material from a secret (the control plane
// serves keys only as file names, but what it shows must never hold one).
func redact(r types.Resource) types.Resource {
	s, ok := r.(*tlsv3.Secret)
	if !ok || s.GetTlsCertificate().GetPrivateKey() == nil {
		return r
	}
	c := proto.Clone(s).(*tlsv3.Secret)
	if _, isFile := c.GetTlsCertificate().GetPrivateKey().GetSpecifier().(*core.DataSource_Filename); !isFile {
		c.GetTlsCertificate().PrivateKey = &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: "[redacted]"}}
	}
	return c
}
