package dataplane

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// appProbe tells whether the app behind the sidecar answers: gRPC health
// for grpc apps (an app without the health service counts as up once it
// answers at all), a TCP connection for http ones.
type appProbe struct {
	addr   string
	log    *slog.Logger
	conn   *grpc.ClientConn // grpc apps
	health healthpb.HealthClient
}

func newAppProbe(addr, protocol string, log *slog.Logger) (*appProbe, error) {
	p := &appProbe{addr: addr, log: log}
	if protocol == "grpc" {
		// A short reconnect backoff: the app is expected to come up within
		// moments of the sidecar, and gRPC's default (1 s and growing)
		// would delay its registration by as much.
		conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
				MinConnectTimeout: time.Second,
			}))
		if err != nil {
			return nil, fmt.Errorf("app probe: %w", err)
		}
		p.conn, p.health = conn, healthpb.NewHealthClient(conn)
	}
	return p, nil
}

func (p *appProbe) close() {
	if p.conn != nil {
		_ = p.conn.Close()
	}
}

func (p *appProbe) healthy(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if p.health == nil {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", p.addr)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	}
	// Not listening yet: say so without waiting on gRPC's reconnect.
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return false
	}
	_ = c.Close()
	resp, err := p.health.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if status.Code(err) == codes.Unimplemented {
		return true
	}
	return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
}

// wait returns once the app answers, or when ctx ends.
func (p *appProbe) wait(ctx context.Context) error {
	logged := false
	delay := 20 * time.Millisecond
	for !p.healthy(ctx) {
		if !logged {
			p.log.Info("waiting for the app before registering", "app", p.addr)
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
	if logged {
		p.log.Info("the app answers", "app", p.addr)
	}
	return nil
}
