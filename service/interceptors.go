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
	return incoming(ctx, CallerHeader)
}

// incoming returns the one value of metadata key in ctx's incoming
// metadata, "" when there is none or more than one. It reads the key
// alone (metadata.FromIncomingContext would copy the whole map per call).
func incoming(ctx context.Context, key string) string {
	if v := metadata.ValueFromIncomingContext(ctx, key); len(v) == 1 {
		return v[0]
	}
	return ""
}

// RequestIDHeader is the metadata key of a request's ID: set by the
// first sidecar a request passes when the caller sent none (a random
// UUID, as Envoy's x-request-id), kept by every sidecar after it.
const RequestIDHeader = "x-request-id"

// RequestID returns the ID of the request being served in ctx ("" when it
// did not come through the mesh). Calls made with ctx through
// connections from Dial carry it on, so one ID ties together the log
// lines of every service a request reaches.
func RequestID(ctx context.Context) string {
	return incoming(ctx, RequestIDHeader)
}

// TraceHeader and TraceStateHeader are W3C trace context: the sidecars
// record a span of each request of a sampled trace and name theirs in
// traceparent, so a call made while serving one continues its trace.
const (
	TraceHeader      = "traceparent"
	TraceStateHeader = "tracestate"
)

// TraceID returns the trace the request being served in ctx belongs to
// (32 hex digits; "" when it came with none): what `meshctl trace` shows.
func TraceID(ctx context.Context) string {
	v := incoming(ctx, TraceHeader)
	if len(v) < 55 || v[2] != '-' || v[35] != '-' {
		return ""
	}
	return v[3:35]
}

// propagated are the request's metadata a call made while serving it
// carries on: its ID and its trace context.
var propagated = [...]string{RequestIDHeader, TraceHeader, TraceStateHeader}

// propagatedFrom returns, as key/value pairs, the served request's ID and
// trace context that a call made with ctx carries on — the trace context
// of the span the app started in ctx, if any (OpenTelemetry's) — each
// unless there is none or set(k) says the caller set one already.
func propagatedFrom(ctx context.Context, set func(k string) bool) []string {
	var kv []string
	local := localTrace(ctx)
	for _, k := range propagated {
		v := incoming(ctx, k)
		if local != nil && k != RequestIDHeader {
			// A span the app started: the call's parent.
			v = local[k]
		}
		if v == "" || set(k) {
			continue
		}
		kv = append(kv, k, v)
	}
	return kv
}

// withPropagated returns ctx with the served request's ID and trace
// context in its outgoing metadata (propagatedFrom).
func withPropagated(ctx context.Context) context.Context {
	var out metadata.MD
	read := false
	kv := propagatedFrom(ctx, func(k string) bool {
		if !read {
			out, _ = metadata.FromOutgoingContext(ctx)
			read = true
		}
		return len(out.Get(k)) > 0
	})
	if len(kv) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

func propagateUnary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return invoker(withPropagated(ctx), method, req, reply, cc, opts...)
}

func propagateStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(withPropagated(ctx), desc, cc, method, opts...)
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
	return h(withServedTrace(ctx), req)
}

func (s *Service) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			err = s.panicked(info.FullMethod, p)
		}
		s.logCall(ss.Context(), info.FullMethod, start, err)
	}()
	if ctx := withServedTrace(ss.Context()); ctx != ss.Context() {
		ss = tracedStream{ss, ctx}
	}
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
	if id := RequestID(ctx); id != "" {
		attrs = append(attrs, slog.String("request_id", id))
	}
	if id := TraceID(ctx); id != "" {
		attrs = append(attrs, slog.String("trace_id", id))
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", st.Message()))
	}
	s.log.LogAttrs(ctx, level, "call", attrs...)
}
