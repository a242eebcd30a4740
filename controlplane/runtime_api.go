package controlplane

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/micromesh/micromesh/identity"
	runtimev1 "github.com/micromesh/micromesh/proto/runtime/v1"
	"github.com/micromesh/micromesh/runtime"
)

// runtimeAPI serves the runtime to the platform's identities.
type runtimeAPI struct {
	runtimev1.UnimplementedRuntimeServiceServer
	rt     *runtime.Runtime
	bundle *identity.Bundle
}

var _ runtimev1.RuntimeServiceServer = (*runtimeAPI)(nil)

func (a *runtimeAPI) authorize(ctx context.Context) error {
	id, err := verifiedPeer(ctx, a.bundle)
	if err != nil {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	if !isAdmin(id) {
		return status.Errorf(codes.PermissionDenied, "the runtime API is for identities of namespace %s; %s is not one", identity.SystemNamespace, id)
	}
	return nil
}

// runtimeStatus maps the runtime's errors to gRPC codes.
func runtimeStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, runtime.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, runtime.ErrExists):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, runtime.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, runtime.ErrBuild), errors.Is(err, runtime.ErrStart):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	default:
		return status.Error(codes.Internal, err.Error())
	}
}

func (a *runtimeAPI) Run(ctx context.Context, req *runtimev1.RunRequest) (*runtimev1.RunResponse, error) {
	if err := a.authorize(ctx); err != nil {
		return nil, err
	}
	svc, err := a.rt.Run(ctx, runtime.Spec{
		Name: req.GetName(), Namespace: req.GetNamespace(), Source: req.GetSource(), Instances: int(req.GetInstances()),
		Env: req.GetEnv(), Args: req.GetArgs(), Version: req.GetVersion(), Policy: req.GetPolicy(), Upstreams: req.GetUpstreams(), AppProtocol: req.GetAppProtocol(),
	})
	if err != nil {
		return nil, runtimeStatus(err)
	}
	return &runtimev1.RunResponse{Service: svc}, nil
}

func (a *runtimeAPI) Update(ctx context.Context, req *runtimev1.UpdateRequest) (*runtimev1.UpdateResponse, error) {
	if err := a.authorize(ctx); err != nil {
		return nil, err
	}
	svc, err := a.rt.Update(ctx, req.GetNamespace(), req.GetName(), req.GetVersion())
	if err != nil {
		return nil, runtimeStatus(err)
	}
	return &runtimev1.UpdateResponse{Service: svc}, nil
}

func (a *runtimeAPI) Scale(ctx context.Context, req *runtimev1.ScaleRequest) (*runtimev1.ScaleResponse, error) {
	if err := a.authorize(ctx); err != nil {
		return nil, err
	}
	svc, err := a.rt.Scale(ctx, req.GetNamespace(), req.GetName(), req.GetVersion(), int(min(req.GetInstances(), runtime.MaxInstances+1)))
	if err != nil {
		return nil, runtimeStatus(err)
	}
	return &runtimev1.ScaleResponse{Service: svc}, nil
}

func (a *runtimeAPI) Kill(ctx context.Context, req *runtimev1.KillRequest) (*runtimev1.KillResponse, error) {
	if err := a.authorize(ctx); err != nil {
		return nil, err
	}
	if err := a.rt.Kill(ctx, req.GetNamespace(), req.GetName(), req.GetVersion()); err != nil {
		return nil, runtimeStatus(err)
	}
	return &runtimev1.KillResponse{}, nil
}

func (a *runtimeAPI) Status(ctx context.Context, req *runtimev1.StatusRequest) (*runtimev1.StatusResponse, error) {
	if err := a.authorize(ctx); err != nil {
		return nil, err
	}
	return &runtimev1.StatusResponse{Services: a.rt.Status(ctx, req.GetNamespace())}, nil
}

func (a *runtimeAPI) Logs(req *runtimev1.LogsRequest, stream runtimev1.RuntimeService_LogsServer) error {
	ctx := stream.Context()
	if err := a.authorize(ctx); err != nil {
		return err
	}
	n := int(req.GetLines())
	var since time.Time
	if req.GetSince() != nil {
		since = req.GetSince().AsTime()
	} else if n == 0 {
		n = 100
	}
	if v := req.GetVersion(); v != "" {
		if err := identity.ValidateVersion(v); err != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}
	}
	err := a.rt.Logs(ctx, req.GetNamespace(), req.GetName(), req.GetVersion(), n, since, req.GetFollow(), func(l runtime.Line) error {
		return stream.Send(&runtimev1.LogsResponse{Time: timestamppb.New(l.Time), Instance: l.Instance, Source: l.Source, Line: l.Text})
	})
	return runtimeStatus(err)
}
