package service

import (
	"log/slog"
	"time"

	"google.golang.org/grpc"
)

type options struct {
	name, version string
	address       string
	logger        *slog.Logger
	grace         time.Duration
	serverOptions []grpc.ServerOption
	noTracing     bool
}

// Option configures New.
type Option func(*options)

// Name is the service's name when the runtime does not give one.
func Name(name string) Option { return func(o *options) { o.name = name } }

// Version is the service's version (default $MESH_VERSION, which the
// runtime sets).
func Version(v string) Option { return func(o *options) { o.version = v } }

// Address overrides $MESH_ADDRESS.
func Address(addr string) Option { return func(o *options) { o.address = addr } }

// Logger sets the logger (default: text on stderr at $MESH_LOG_LEVEL).
func Logger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// GracePeriod bounds how long calls in flight may run on after a stop
// signal (default 10 s).
func GracePeriod(d time.Duration) Option { return func(o *options) { o.grace = d } }

// ServerOptions adds options to the gRPC server (interceptors, limits).
func ServerOptions(opts ...grpc.ServerOption) Option {
	return func(o *options) { o.serverOptions = append(o.serverOptions, opts...) }
}

// NoTracing leaves OpenTelemetry to the app: New installs no tracer
// provider even when the environment names an OTLP endpoint (the
// runtime's points at the service's sidecar). The served call's trace
// context is still in the handler's ctx.
func NoTracing() Option { return func(o *options) { o.noTracing = true } }
