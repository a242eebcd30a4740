package service

import (
	"context"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// CallerHeader is the metadata key the sidecar sets to the verified SPIFFE
// ID of whoever called (any copy the caller sent is removed on the way in).
const CallerHeader = "x-mesh-caller"

// Caller returns the SPIFFE ID of the service that made the call in ctx, as
// its sidecar verified it, or "" when the call did not come through the
// mesh.
func Caller(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(CallerHeader); len(v) == 1 {
		return v[0]
	}
	return ""
}

// quiet reports whether calls to method are left out of the log (health
// checks and reflection: the platform's, not the service's).
func quiet(method string) bool {
	return strings.HasPrefix(method, "/grpc.health.v1.") || strings.HasPrefix(method, "/grpc.reflection.")
}

func (s *Service) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			err = s.panicked(info.FullMethod, p)
		}
		s.logCall(ctx, info.FullMethod, start, err)
	}()
	return h(ctx, req)
}

func (s *Service) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			err = s.panicked(info.FullMethod, p)
		}
		s.logCall(ss.Context(), info.FullMethod, start, err)
	}()
	return h(srv, ss)
}

// panicked turns a handler's panic into INTERNAL for the caller and a
// logged stack for the owner, so one bad request does not stop the
// service.
func (s *Service) panicked(method string, p any) error {
	s.log.Error("handler panicked", "method", method, "panic", p, "stack", string(debug.Stack()))
	return status.Errorf(codes.Internal, "%s: internal error", method)
}

func (s *Service) logCall(ctx context.Context, method string, start time.Time, err error) {
	if quiet(method) {
		return
	}
	st := status.Convert(err)
	level := slog.LevelInfo
	if st.Code() == codes.Internal || st.Code() == codes.Unknown || st.Code() == codes.DataLoss {
		level = slog.LevelError
	}
	attrs := []slog.Attr{
		slog.String("method", method),
		slog.String("code", st.Code().String()),
		slog.Duration("duration", time.Since(start)),
	}
	if c := Caller(ctx); c != "" {
		attrs = append(attrs, slog.String("caller", c))
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", st.Message()))
	}
	s.log.LogAttrs(ctx, level, "call", attrs...)
}
