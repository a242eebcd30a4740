// Package edge runs the in-process sidecar of a platform workload that
// calls into the mesh from outside it — the API gateway, the remote
// proxy: the workload joins the mesh as <name>.micromesh with a
// certificate from the server's CA, and its calls leave through a
// built-in sidecar of its own (outbound only: nothing calls it through
// the mesh), HTTP/3 over QUIC with mTLS to each service's sidecar.
package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/micromesh/micromesh/dataplane"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/home"
	"github.com/micromesh/micromesh/internal/meshclient"
)

// Options configure an edge sidecar.
type Options struct {
	// Name is the workload's service name in the platform's namespace.
	Name string
	// Home is the server's state: the certificate is minted from its CA
	// and kept under its sidecars/<name>/certs (0700).
	Home         home.Dir
	ControlPlane string
	Logger       *slog.Logger
}

// Sidecar is a running edge sidecar.
type Sidecar struct {
	*dataplane.Sidecar
	// Outbound is its loopback listener: h2c and HTTP/1.1, the service
	// named by the authority.
	Outbound string
	// ID is the workload's identity.
	ID identity.ID
	// ControlPlane is a connection to the control plane's APIs as the
	// workload (mTLS with the sidecar's certificate, renewed by it).
	ControlPlane *grpc.ClientConn

	stop context.CancelFunc
	ran  chan error
	log  *slog.Logger
}

// Start joins the mesh as o.Name and starts its sidecar; it returns once
// the sidecar has its configuration.
func Start(ctx context.Context, o Options) (*Sidecar, error) {
	creds, err := meshclient.JoinAs(ctx, o.Home, o.ControlPlane, identity.SystemNamespace, o.Name)
	if err != nil {
		return nil, err
	}
	// Replaced at every start, renewed in place; under the server's state
	// rather than a temporary directory, which a killed server would leave
	// a key in.
	dir := filepath.Join(o.Home.Sidecar(o.Name), "certs")
	if err := creds.WriteDir(dir); err != nil {
		return nil, err
	}
	ready := make(chan dataplane.Info, 1)
	sc, err := dataplane.New(dataplane.Options{
		Credentials: creds, CertDir: dir, ControlPlane: o.ControlPlane, Outbound: "127.0.0.1:0",
		Drain: time.Second, Logger: o.Logger.With("sidecar", o.Name),
		Ready: func(i dataplane.Info) { ready <- i },
	})
	if err != nil {
		return nil, err
	}
	runCtx, stop := context.WithCancel(context.Background())
	s := &Sidecar{Sidecar: sc, ID: creds.ID, stop: stop, ran: make(chan error, 1), log: o.Logger}
	go func() { s.ran <- sc.Run(runCtx) }()
	select {
	case info := <-ready:
		s.Outbound = info.Outbound
	case err := <-s.ran:
		stop()
		if err == nil {
			err = errors.New("the sidecar stopped")
		}
		return nil, fmt.Errorf("its sidecar: %w", err)
	case <-ctx.Done():
		stop()
		<-s.ran
		return nil, fmt.Errorf("its sidecar got no configuration from the control plane at %s: %w", o.ControlPlane, ctx.Err())
	}
	cfg := identity.ClientTLSConfig(
		func() *identity.Bundle { return sc.Certificate().Bundle },
		func() *tls.Certificate { return sc.Certificate().TLSCertificate() },
		identity.AuthorizeID(identity.ControlPlaneID(creds.ID.TrustDomain)))
	s.ControlPlane, err = grpc.NewClient(o.ControlPlane, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// TLSCertificate is the workload's current certificate (renewed by the
// sidecar), for a server of its own.
func (s *Sidecar) TLSCertificate() *tls.Certificate { return s.Certificate().TLSCertificate() }

// Stop closes the control plane connection and stops the sidecar.
func (s *Sidecar) Stop() {
	if s.ControlPlane != nil {
		_ = s.ControlPlane.Close()
	}
	s.stop()
	if err := <-s.ran; err != nil {
		s.log.Warn("sidecar", "err", err)
	}
}

// Listen binds addr for the workload's own server (before its sidecar
// starts, so that a port in use is reported first, naming the flag that
// moves it) and starts the sidecar; what names the server in errors.
func Listen(ctx context.Context, o Options, addr, what, flag string) (net.Listener, *Sidecar, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("%s address %s: %w (pick another with %s, or turn it off with %s off)", what, addr, err, flag, flag)
	}
	sc, err := Start(ctx, o)
	if err != nil {
		_ = lis.Close()
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	return lis, sc, nil
}

// Metrics count and time the requests an edge server answers, by the
// service's namespace and name and the answer's code.
type Metrics struct {
	Requests *prometheus.CounterVec
	Duration *prometheus.HistogramVec
}

// NewMetrics makes prefix_requests_total{namespace,service,codeLabel} and
// prefix_request_duration_seconds{namespace,service}, registered with reg
// if it is set; what says what they count.
func NewMetrics(reg prometheus.Registerer, prefix, what, codeLabel string) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_requests_total",
			Help: what + ", by the service's namespace and name and the " + codeLabel + ".",
		}, []string{"namespace", "service", codeLabel}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    prefix + "_request_duration_seconds",
			Help:    "Time from a request's arrival to its answer's end, by the service's namespace and name.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"namespace", "service"}),
	}
	if reg != nil {
		reg.MustRegister(m.Requests, m.Duration)
	}
	return m
}

// Record counts one request of service ns/name answered with code, begun
// at start.
func (m *Metrics) Record(ns, name, code string, start time.Time) {
	m.Requests.WithLabelValues(ns, name, code).Inc()
	m.Duration.WithLabelValues(ns, name).Observe(time.Since(start).Seconds())
}
