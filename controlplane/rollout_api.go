package controlplane

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/micromesh/micromesh/controlplane/registry"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
)

// Rollout defaults (`meshctl rollout start` without flags).
const (
	defaultRolloutInterval    = time.Minute
	defaultRolloutMinSuccess  = 0.99
	defaultRolloutMinRequests = 20
)

// StartRollout sets a service's split to the first step of a rollout from
// one version to another; the rollout runner (controlplane/rollout) takes
// it on from there.
func (a *registryAPI) StartRollout(ctx context.Context, req *registryv1.StartRolloutRequest) (*registryv1.StartRolloutResponse, error) {
	caller, ns, err := a.callerOn(ctx, req.GetNamespace(), req.GetService())
	if err != nil {
		return nil, err
	}
	p := req.GetRollout()
	if p == nil {
		return nil, status.Error(codes.InvalidArgument, "the request has no rollout: name the versions it goes from and to")
	}
	r := registry.Rollout{From: p.GetFrom(), To: p.GetTo(), Steps: p.GetSteps(), Interval: p.GetInterval().AsDuration(),
		MinSuccess: p.GetMinSuccessRate(), MaxP99: p.GetMaxP99().AsDuration(), MinRequests: p.GetMinRequests(),
		Deadline: p.GetDeadline().AsDuration(), State: registry.RolloutProgressing, Since: time.Now().UTC(), Retire: p.GetRetire()}
	if len(r.Steps) == 0 {
		r.Steps = registry.DefaultRolloutSteps
	}
	if p.GetInterval() == nil {
		r.Interval = defaultRolloutInterval
	}
	if p.MinSuccessRate == nil {
		r.MinSuccess = defaultRolloutMinSuccess
	}
	if p.MinRequests == nil {
		r.MinRequests = defaultRolloutMinRequests
	}
	if err := r.Validate(req.GetService(), ns); err != nil {
		return nil, registryStatus(err)
	}
	sp := registry.Split{Service: req.GetService(), Namespace: ns, Rollout: &r, Versions: r.Shares()}
	if cur := a.split(ns, sp.Service); cur != nil {
		sp.Header = cur.Header // testers' header stays
	}
	if err := sp.Validate(); err != nil {
		return nil, registryStatus(err)
	}
	if a.isTCP(ns, sp.Service) {
		return nil, status.Errorf(codes.FailedPrecondition, "%s.%s is a TCP service: a rollout judges requests, which its tunnels are not; move its connections with meshctl split set %s %s=90 %s=10, and so on",
			sp.Service, ns, sp.Service, r.From, r.To)
	}
	for _, v := range []string{r.From, r.To} {
		if !a.hasVersion(ns, sp.Service, v) {
			return nil, status.Errorf(codes.FailedPrecondition, "%s.%s has no instance of version %s registered: start it first (meshctl run --version %s)", sp.Service, ns, v, v)
		}
	}
	if err := a.reg.SetSplit(ctx, sp); err != nil {
		return nil, registryStatus(err)
	}
	a.log.Info("rollout started", "service", sp.Service, "namespace", ns, "from", r.From, "to", r.To,
		"steps", fmt.Sprint(r.Steps), "interval", r.Interval.String(), "shares", registry.Shares(sp.Versions), "retire", r.Retire, "by", caller.String())
	return &registryv1.StartRolloutResponse{Split: SplitToProto(sp)}, nil
}

// AbortRollout ends a service's rollout in progress, all traffic back to
// the version it came from.
func (a *registryAPI) AbortRollout(ctx context.Context, req *registryv1.AbortRolloutRequest) (*registryv1.AbortRolloutResponse, error) {
	caller, ns, err := a.callerOn(ctx, req.GetNamespace(), req.GetService())
	if err != nil {
		return nil, err
	}
	cur := a.split(ns, req.GetService())
	if cur == nil || cur.Rollout == nil || cur.Rollout.State != registry.RolloutProgressing {
		return nil, status.Errorf(codes.NotFound, "%s.%s has no rollout in progress", req.GetService(), ns)
	}
	sp := *cur
	r := *cur.Rollout
	r.Clamp()
	r.State, r.Since, r.Message = registry.RolloutAborted, time.Now().UTC(), "aborted by "+caller.String()+"; all traffic back to "+r.From
	sp.Rollout = &r
	sp.Versions = r.Shares()
	if err := a.reg.SetSplitIf(ctx, sp, cur); err != nil {
		return nil, registryStatus(err)
	}
	a.log.Info("rollout aborted", "service", sp.Service, "namespace", ns, "shares", registry.Shares(sp.Versions), "by", caller.String())
	return &registryv1.AbortRolloutResponse{Split: SplitToProto(sp)}, nil
}

// split is service ns/name's split in the latest snapshot, nil if none.
func (a *registryAPI) split(ns, name string) *registry.Split {
	snap := a.snap.Load()
	if snap == nil {
		return nil
	}
	for _, sp := range snap.Splits {
		if sp.Namespace == ns && sp.Service == name {
			return &sp
		}
	}
	return nil
}

// hasVersion reports whether an instance of version v of service ns/name
// is registered.
func (a *registryAPI) hasVersion(ns, name, v string) bool {
	snap := a.snap.Load()
	if snap == nil {
		return false
	}
	for _, in := range snap.Instances {
		if in.Namespace == ns && in.Service == name && in.Version == v {
			return true
		}
	}
	return false
}

// isTCP reports whether service name of namespace ns has instances of
// protocol tcp.
func (a *registryAPI) isTCP(ns, name string) bool {
	snap := a.snap.Load()
	if snap == nil {
		return false
	}
	for _, in := range snap.Instances {
		if in.Namespace == ns && in.Service == name && in.Protocol == registry.ProtocolTCP {
			return true
		}
	}
	return false
}

// rolloutToProto converts a rollout for the wire.
func rolloutToProto(r *registry.Rollout) *registryv1.Rollout {
	p := &registryv1.Rollout{From: r.From, To: r.To, Steps: r.Steps, Interval: durationpb.New(r.Interval),
		MinSuccessRate: proto.Float64(r.MinSuccess), MinRequests: proto.Uint32(r.MinRequests), Step: uint32(r.Step), Since: timestamppb.New(r.Since),
		State: r.State, Message: r.Message, Retire: r.Retire}
	if r.MaxP99 > 0 {
		p.MaxP99 = durationpb.New(r.MaxP99)
	}
	if r.Deadline > 0 {
		p.Deadline = durationpb.New(r.Deadline)
	}
	if !r.Retired.IsZero() {
		p.Retired = timestamppb.New(r.Retired)
	}
	return p
}
