package stats

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/micromesh/micromesh/identity"
	statsv1 "github.com/micromesh/micromesh/proto/stats/v1"
)

// Windows a query may ask for.
const (
	DefaultWindow = time.Minute
	MinWindow     = 10 * time.Second
)

// Registered lists the services in the registry ("name.namespace") with
// their instances' IDs.
type Registered func(ctx context.Context) (map[string][]string, error)

// API serves micromesh.stats.v1.StatsService to identities of the
// micromesh namespace (the CLI's admin identity, the dashboard).
type API struct {
	statsv1.UnimplementedStatsServiceServer
	store      *Store
	caller     Caller
	registered Registered
}

// NewAPI returns the query API over store; registered, if set, adds the
// services registered but silent.
func NewAPI(store *Store, caller Caller, registered Registered) *API {
	return &API{store: store, caller: caller, registered: registered}
}

// GetStats answers with the figures of the services and calls asked for.
func (a *API) GetStats(ctx context.Context, req *statsv1.GetStatsRequest) (*statsv1.GetStatsResponse, error) {
	id, err := a.caller(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	if id.Namespace != identity.SystemNamespace {
		return nil, status.Errorf(codes.PermissionDenied, "the stats API is for identities of namespace %s; %s is not one", identity.SystemNamespace, id)
	}
	window := DefaultWindow
	if w := req.Window; w != nil {
		if w.CheckValid() != nil || w.AsDuration() < MinWindow || w.AsDuration() > MaxWindow {
			return nil, status.Errorf(codes.InvalidArgument, "window %v: want %v to %v", w.AsDuration(), MinWindow, MaxWindow)
		}
		window = w.AsDuration()
	}
	ns := req.Namespace
	if ns != "" {
		if err := identity.ValidateName("namespace", ns); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "namespace %q: %v", ns, err)
		}
	}
	only := ""
	if req.Service != "" {
		name, sns, dotted := strings.Cut(req.Service, ".")
		if err := identity.ValidateName("service name", name); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "service %q: %v", req.Service, err)
		}
		switch {
		case dotted:
			if err := identity.ValidateName("namespace", sns); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "service %q: %v", req.Service, err)
			}
			if ns != "" && sns != ns {
				return nil, status.Errorf(codes.InvalidArgument, "service %q is not in namespace %q", req.Service, ns)
			}
		case ns == "":
			sns = identity.DefaultNamespace
		default:
			sns = ns
		}
		only = name + "." + sns
	}
	var registered map[string][]string
	if a.registered != nil {
		if registered, err = a.registered(ctx); err != nil {
			return nil, status.Errorf(codes.Unavailable, "listing the registry's services: %v", err)
		}
	}
	keep := func(svc string) bool {
		if only != "" {
			return svc == only
		}
		return ns == "" || strings.HasSuffix(svc, "."+ns)
	}
	services, edges := a.store.Query(window)
	resp := &statsv1.GetStatsResponse{Window: durationpb.New(window)}
	seen := map[string]bool{}
	for _, s := range services {
		if !keep(s.Service) {
			continue
		}
		seen[s.Service] = true
		out := &statsv1.ServiceStats{Service: s.Service, Instances: uint32(len(registered[s.Service])),
			Reporting: reporting(s.Reporting, registered[s.Service]), Traffic: traffic(&s.Traffic)}
		if req.ByMethod {
			for _, name := range slices.Sorted(maps.Keys(s.Methods)) {
				out.Methods = append(out.Methods, &statsv1.MethodStats{Method: name, Traffic: traffic(s.Methods[name])})
			}
		}
		for _, v := range slices.Sorted(maps.Keys(s.Versions)) {
			out.Versions = append(out.Versions, &statsv1.VersionStats{Version: v, Traffic: traffic(s.Versions[v])})
		}
		resp.Services = append(resp.Services, out)
	}
	for svc, ids := range registered {
		if keep(svc) && !seen[svc] {
			resp.Services = append(resp.Services, &statsv1.ServiceStats{Service: svc, Instances: uint32(len(ids)), Traffic: &statsv1.Traffic{}})
		}
	}
	sortServices(resp.Services)
	for _, e := range edges {
		// A call is shown with either end kept (a version's cluster,
		// "name.ns|v2", is its service's).
		dest, _, _ := strings.Cut(e.Destination, "|")
		if keep(e.Source) || keep(dest) {
			resp.Edges = append(resp.Edges, &statsv1.EdgeStats{Source: e.Source, Destination: e.Destination, Traffic: traffic(&e.Traffic)})
		}
	}
	return resp, nil
}

// reporting counts the registered instances that reported; for a service
// with none registered (a platform's edge proxy: the gateway's, the remote
// proxy's), those that reported. An instance stopped within the window
// reported, but is no longer one of the service's: its requests count,
// itself not.
func reporting(reported, registered []string) uint32 {
	if len(registered) == 0 {
		return uint32(len(reported))
	}
	n := 0
	for _, id := range reported {
		if slices.Contains(registered, id) {
			n++
		}
	}
	return uint32(n)
}

func traffic(t *Traffic) *statsv1.Traffic {
	out := &statsv1.Traffic{Requests: t.Requests, Failures: t.Failures, RequestsPerSecond: t.PerSecond, SuccessRate: t.SuccessRate()}
	if t.hist != nil && t.hist.count > 0 {
		out.P50, out.P95, out.P99 = durationpb.New(t.P50), durationpb.New(t.P95), durationpb.New(t.P99)
	}
	return out
}

// sortServices orders by namespace, then name.
func sortServices(s []*statsv1.ServiceStats) {
	key := func(svc string) string {
		name, ns, _ := strings.Cut(svc, ".")
		return ns + "\x00" + name
	}
	slices.SortFunc(s, func(a, b *statsv1.ServiceStats) int { return cmp.Compare(key(a.Service), key(b.Service)) })
}
