package meshclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/micromesh/micromesh/dataplane"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/home"
	"github.com/micromesh/micromesh/internal/upstreams"
)

// Caller is a built-in sidecar run in this process as a service of the
// mesh: outbound only and not registered, so no one calls it and nothing
// lists it. Calls through it meet what that service's own calls meet —
// its view of the mesh, the callee's faults, splits, retries and mirrors,
// and the callee's RBAC rules toward it — which is what a user asks when
// a call from the CLI should behave like one from the service.
type Caller struct {
	ID       identity.ID
	outbound string
	stop     context.CancelFunc
	done     chan error
	dir      string
}

// StartCaller joins the mesh as service caller of namespace ns (a
// certificate minted from the local CA: only where the server's state is)
// and starts its sidecar, returning once it has its configuration. Close
// stops it and removes the certificate. With ups, the sidecar also takes
// connections for those TCP services on their loopback ports (as
// `meshctl sidecar --upstream`).
func StartCaller(ctx context.Context, h home.Dir, addr, ns, caller string, log *slog.Logger, ups ...upstreams.Upstream) (*Caller, error) {
	if err := identity.ValidateName("service", caller); err != nil {
		return nil, err
	}
	if err := identity.ValidateName("namespace", ns); err != nil {
		return nil, err
	}
	creds, err := JoinAs(ctx, h, addr, ns, caller)
	if errors.Is(err, errNoLocalCA) {
		return nil, fmt.Errorf("calling as a service needs the server's state (its CA mints the certificate): %w", err)
	}
	if err != nil {
		return nil, err
	}
	id := creds.ID
	dir, err := os.MkdirTemp("", "meshctl-as-") // 0700
	if err != nil {
		return nil, err
	}
	if err := creds.WriteDir(dir); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	ready := make(chan dataplane.Info, 1)
	sc, err := dataplane.New(dataplane.Options{
		Credentials: creds, CertDir: dir, ControlPlane: addr, Outbound: "127.0.0.1:0", Upstreams: ups,
		Drain: 100 * time.Millisecond, Logger: log,
		Ready: func(i dataplane.Info) { ready <- i },
		// A diagnostic, not an instance of the service: its calls are
		// not the service's figures (meshctl stat).
		StatsInterval: -1,
	})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	runCtx, stop := context.WithCancel(context.Background())
	c := &Caller{ID: id, stop: stop, done: make(chan error, 1), dir: dir}
	go func() { c.done <- sc.Run(runCtx) }()
	select {
	case info := <-ready:
		c.outbound = info.Outbound
		return c, nil
	case err := <-c.done:
		_ = os.RemoveAll(dir)
		stop()
		if err == nil {
			err = errors.New("the sidecar stopped")
		}
		return nil, fmt.Errorf("a sidecar as %s: %w", id, err)
	case <-ctx.Done():
		_ = c.Close()
		return nil, fmt.Errorf("a sidecar as %s got no configuration from the control plane at %s: %w", id, addr, ctx.Err())
	}
}

// Dial connects to service name of namespace ns through the caller's
// sidecar (gRPC over h2c to its outbound listener, which routes by
// authority: "name" in the caller's namespace, "name.ns" beyond it).
func (c *Caller) Dial(ns, name string) (*grpc.ClientConn, error) {
	if err := identity.ValidateName("service", name); err != nil {
		return nil, err
	}
	authority := name
	if ns != c.ID.Namespace {
		authority = name + "." + ns
	}
	return grpc.NewClient("passthrough:///"+c.outbound, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(authority))
}

// Wait returns when ctx ends (nil) or the sidecar stops on its own (why).
func (c *Caller) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-c.done:
		c.done <- err // for Close
		if err == nil {
			err = errors.New("the sidecar stopped")
		}
		return err
	}
}

// Close stops the sidecar and removes its certificate.
func (c *Caller) Close() error {
	c.stop()
	err := <-c.done
	if rerr := os.RemoveAll(c.dir); err == nil {
		err = rerr
	}
	return err
}
