// Package service is the Go framework for a service on the mesh. A service
// is a gRPC server the runtime (`meshctl run`) starts behind its own
// sidecar:
//
//	srv := service.New(service.Name("helloworld"), service.Version("v1"))
//	pb.RegisterHelloworldServer(srv.Server(), new(handler))
//	if err := srv.Run(); err != nil { ... }
//
// Run listens on $MESH_ADDRESS (loopback; the sidecar forwards callers to
// it) and serves the registered handlers as gRPC and as gRPC with JSON
// bodies (content type application/grpc+json), gRPC health and server
// reflection (which `meshctl describe` and `meshctl call` read). SIGTERM or
// Ctrl-C drains: health turns NOT_SERVING, calls in flight finish within
// the grace period. Every call is logged (slog, component=service).
//
// Started without the runtime's environment, Run fails and says how to
// start it; setting MESH_ADDRESS=127.0.0.1:PORT by hand serves without a
// sidecar. Dial reaches other services through the sidecar ($MESH_PROXY).
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/micromesh/micromesh/internal/envconfig"
)

// Service is one service: its gRPC server and how it runs.
type Service struct {
	opts   options
	server *grpc.Server
	health *health.Server
	log    *slog.Logger
	// stopTracing flushes and ends the tracer provider New installed
	// (nil: none).
	stopTracing func(context.Context) error
}

// New makes a service. Its name is $MESH_SERVICE when the runtime runs it
// (the identity its sidecar holds), else the Name option.
func New(opts ...Option) *Service {
	o := options{grace: 10 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if n := os.Getenv(envconfig.Service); n != "" {
		o.name = n
	}
	if o.version == "" {
		o.version = os.Getenv(envconfig.Version)
	}
	if o.logger == nil {
		o.logger = defaultLogger()
	}
	s := &Service{opts: o, health: health.NewServer()}
	s.log = o.logger.With("component", "service", "service", o.name)
	if !o.noTracing && tracingEnabled() {
		stop, err := startTracing(context.Background(), s.traceName())
		if err != nil {
			s.log.Warn("the service's own spans are off", "err", err)
		} else {
			s.stopTracing = stop
		}
	}
	so := append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
	}, o.serverOptions...)
	s.server = grpc.NewServer(so...)
	healthpb.RegisterHealthServer(s.server, s.health)
	reflection.Register(s.server)
	return s
}

// defaultLogger writes text lines to stderr (the runtime time-stamps and
// files them) at $MESH_LOG_LEVEL (default info).
func defaultLogger() *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(envconfig.Get(envconfig.LogLevel, "info"))); err != nil {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// Name is the service's name.
func (s *Service) Name() string { return s.opts.name }

// Version is the service's version (the Version option).
func (s *Service) Version() string { return s.opts.version }

// Server is the gRPC server to register handlers on, before Run.
func (s *Service) Server() *grpc.Server { return s.server }

// Logger is the service's logger.
func (s *Service) Logger() *slog.Logger { return s.log }

// ErrNoAddress is Run's error when nothing says where to listen.
var ErrNoAddress = errors.New("service: " + envconfig.Address + " is not set")

// Run serves on $MESH_ADDRESS (or the Address option) until SIGTERM or
// Ctrl-C, then drains.
func (s *Service) Run() error {
	addr := s.opts.address
	if addr == "" {
		addr = os.Getenv(envconfig.Address)
	}
	if addr == "" {
		return fmt.Errorf("%w: %s runs inside the mesh; start it with `meshctl run .` from its directory "+
			"(or set %s=127.0.0.1:PORT to serve it alone, without a sidecar)", ErrNoAddress, s.displayName(), envconfig.Address)
	}
	if s.opts.name == "" {
		return errors.New("service: no name: pass service.Name(\"...\") to service.New, or run it with `meshctl run`")
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("service %s: listening on %s: %w", s.opts.name, addr, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return s.Serve(ctx, lis)
}

func (s *Service) displayName() string {
	if s.opts.name == "" {
		return "this service"
	}
	return s.opts.name
}

// Serve serves on lis until ctx ends, then drains: health turns
// NOT_SERVING, new calls are refused, calls in flight get the grace period
// (the GracePeriod option, default 10 s) before they are cut.
func (s *Service) Serve(ctx context.Context, lis net.Listener) error {
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(s.opts.name, healthpb.HealthCheckResponse_SERVING)
	s.log.Info("serving", "address", lis.Addr().String(), "version", s.opts.version)
	errc := make(chan error, 1)
	go func() { errc <- s.server.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("service %s: %w", s.opts.name, err)
	case <-ctx.Done():
	}
	s.log.Info("draining", "grace", s.opts.grace.String())
	s.health.Shutdown()
	done := make(chan struct{})
	go func() {
		s.server.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(s.opts.grace):
		s.log.Warn("grace period over: cutting the calls still in flight")
		s.server.Stop()
		<-done
	}
	if s.stopTracing != nil {
		tctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.stopTracing(tctx); err != nil {
			s.log.Warn("sending the last spans", "err", err)
		}
		cancel()
	}
	s.log.Info("stopped")
	return nil
}

// traceName is the service.name of its spans: name.namespace in the
// mesh (the sidecar names them so anyway), else the name.
func (s *Service) traceName() string {
	if ns := os.Getenv(envconfig.Namespace); ns != "" && s.opts.name != "" {
		return s.opts.name + "." + ns
	}
	return s.opts.name
}
