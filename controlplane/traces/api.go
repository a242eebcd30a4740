package traces

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/identity"
	tracev1 "github.com/micromesh/micromesh/proto/trace/v1"
)

// maxList is the most traces one ListTraces returns.
const maxList = 1000

// API serves micromesh.trace.v1.TraceService to identities of the
// micromesh namespace (the CLI's admin identity, the dashboard).
type API struct {
	tracev1.UnimplementedTraceServiceServer
	store  *Store
	caller Caller
}

// NewAPI returns the query API over store.
func NewAPI(store *Store, caller Caller) *API { return &API{store: store, caller: caller} }

func (a *API) authorize(ctx context.Context) error {
	id, err := a.caller(ctx)
	if err != nil {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	if id.Namespace != identity.SystemNamespace {
		return status.Errorf(codes.PermissionDenied, "the trace API is for identities of namespace %s; %s is not one", identity.SystemNamespace, id)
	}
	return nil
}

// ListTraces lists the newest traces that match the request.
func (a *API) ListTraces(ctx context.Context, req *tracev1.ListTracesRequest) (*tracev1.ListTracesResponse, error) {
	if err := a.authorize(ctx); err != nil {
		return nil, err
	}
	if req.Limit > maxList {
		return nil, status.Errorf(codes.InvalidArgument, "limit %d: at most %d", req.Limit, maxList)
	}
	if s := req.Service; s != "" {
		name, ns, _ := strings.Cut(s, ".")
		if err := identity.ValidateName("service name", name); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "service %q: %v", s, err)
		}
		if ns != "" {
			if err := identity.ValidateName("namespace", ns); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "service %q: %v", s, err)
			}
		}
	}
	if d := req.MinDuration; d != nil && (d.CheckValid() != nil || d.AsDuration() < 0) {
		return nil, status.Errorf(codes.InvalidArgument, "min_duration %v: must be a duration of zero or more", d)
	}
	l, err := a.store.List(Query{Service: req.Service, Limit: int(req.Limit), ErrorsOnly: req.ErrorsOnly, MinDuration: req.MinDuration.AsDuration()})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "listing traces: %v", err)
	}
	return &tracev1.ListTracesResponse{Traces: l}, nil
}

// GetTrace returns one trace's spans.
func (a *API) GetTrace(ctx context.Context, req *tracev1.GetTraceRequest) (*tracev1.GetTraceResponse, error) {
	if err := a.authorize(ctx); err != nil {
		return nil, err
	}
	id := strings.ToLower(req.TraceId)
	if len(id) != 32 || !isLowerHex(id) {
		return nil, status.Errorf(codes.InvalidArgument, "trace ID %q: want 32 hex digits (meshctl traces lists them)", req.TraceId)
	}
	spans, err := a.store.Get(id)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "reading trace %s: %v", id, err)
	}
	if len(spans) == 0 {
		return nil, status.Error(codes.NotFound, notKept(id, a.store.o))
	}
	return &tracev1.GetTraceResponse{Spans: spans}, nil
}

func notKept(id string, o Options) string {
	return fmt.Sprintf("no span of trace %s is kept: the control plane keeps spans for %v (the newest %d), and records only sampled traces (meshctl call --trace records one)",
		id, o.MaxAge, o.MaxSpans)
}
