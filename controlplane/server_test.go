package controlplane

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/home"
	identityv1 "github.com/micromesh/micromesh/proto/identity/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Started at init by glog, which the smallstep authority imports.
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
	)
}

// running is a control plane started for a test.
type running struct {
	info home.ServerInfo
	home home.Dir
	stop func() error // cancels and waits for Run
}

func startServer(t *testing.T, dir home.Dir) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := New(ctx, Config{Home: dir, Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0"})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ready := make(chan home.ServerInfo, 1)
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, func(i home.ServerInfo) { ready <- i }) }()
	r := &running{home: dir}
	var stopped bool
	var stopErr error
	r.stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			stopErr = <-done
		}
		return stopErr
	}
	t.Cleanup(func() { _ = r.stop() })
	select {
	case r.info = <-ready:
	case err := <-done:
		t.Fatalf("server exited before ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("server not ready after 30s")
	}
	return r
}

// client dials the control plane verifying it against the local root,
// presenting cert if not nil.
func (r *running) client(t *testing.T, cert *tls.Certificate) identityv1.IdentityServiceClient {
	t.Helper()
	roots, err := identity.ReadCertificates(r.home.RootCert())
	if err != nil {
		t.Fatal(err)
	}
	bundle := identity.NewBundle(r.info.TrustDomain, roots)
	var get func() *tls.Certificate
	if cert != nil {
		get = func() *tls.Certificate { return cert }
	}
	cfg := identity.ClientTLSConfig(func() *identity.Bundle { return bundle }, get, identity.AuthorizeID(identity.ControlPlaneID(r.info.TrustDomain)))
	conn, err := grpc.NewClient(r.info.Address, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return identityv1.NewIdentityServiceClient(conn)
}

func (r *running) mint(t *testing.T, name string) (identity.ID, string) {
	t.Helper()
	signer, err := identity.LoadTokenSigner(r.home.CA())
	if err != nil {
		t.Fatal(err)
	}
	id, err := identity.ServiceID(r.info.TrustDomain, identity.DefaultNamespace, name)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := signer.Mint(id, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return id, tok
}

func csrFor(t *testing.T, id identity.ID) []byte {
	t.Helper()
	key, err := identity.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := identity.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestJoinRenewAndBundleOverGRPC(t *testing.T) {
	r := startServer(t, home.Dir(t.TempDir()))
	id, tok := r.mint(t, "hello")

	// Join: the client package's flow, bootstrapping trust from the token.
	creds, err := identity.Join(ctxT(t), r.info.Address, nil, id, tok)
	if err != nil {
		t.Fatalf("Join: %v", err)
	}
	if creds.ID != id || len(creds.Chain) != 2 {
		t.Fatalf("joined as %v with %d certificates", creds.ID, len(creds.Chain))
	}

	// Renew over mTLS with the certificate just issued.
	src := identity.NewSource(creds, identity.RemoteRenewer(r.info.Address))
	if err := src.Rotate(ctxT(t)); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if src.Current().ID != id || src.Current().Leaf().SerialNumber.Cmp(creds.Leaf().SerialNumber) == 0 {
		t.Fatal("renewal did not produce a new certificate for the same ID")
	}

	resp, err := r.client(t, nil).TrustBundle(ctxT(t), &identityv1.TrustBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetTrustDomain() != identity.DefaultTrustDomain || len(resp.GetRoots()) != 1 {
		t.Fatalf("TrustBundle = %v", resp)
	}
}

func TestSignRefusalsAreStatuses(t *testing.T) {
	r := startServer(t, home.Dir(t.TempDir()))
	c := r.client(t, nil)
	hello, tok := r.mint(t, "hello")
	used := func() string {
		_, tok := r.mint(t, "hello")
		if _, err := c.Sign(ctxT(t), &identityv1.SignRequest{Csr: csrFor(t, hello), Token: tok}); err != nil {
			t.Fatal(err)
		}
		return tok
	}()
	other, _ := identity.ServiceID(r.info.TrustDomain, "default", "other")

	tests := []struct {
		name string
		req  *identityv1.SignRequest
		code codes.Code
	}{
		{"malformed CSR", &identityv1.SignRequest{Csr: []byte("junk"), Token: tok}, codes.InvalidArgument},
		{"CSR for another ID", &identityv1.SignRequest{Csr: csrFor(t, other), Token: tok}, codes.PermissionDenied},
		{"no token", &identityv1.SignRequest{Csr: csrFor(t, hello)}, codes.Unauthenticated},
		{"reused token", &identityv1.SignRequest{Csr: csrFor(t, hello), Token: used}, codes.Unauthenticated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Sign(ctxT(t), tc.req)
			if status.Code(err) != tc.code {
				t.Fatalf("code = %v (%v), want %v", status.Code(err), err, tc.code)
			}
			if msg := status.Convert(err).Message(); len(msg) < 20 {
				t.Errorf("message %q is too thin to act on", msg)
			}
		})
	}
	// None of the refusals used up the token.
	if _, err := c.Sign(ctxT(t), &identityv1.SignRequest{Csr: csrFor(t, hello), Token: tok}); err != nil {
		t.Fatalf("the token was used up by refused requests: %v", err)
	}
}

func TestRenewRefusals(t *testing.T) {
	r := startServer(t, home.Dir(t.TempDir()))
	id, tok := r.mint(t, "hello")
	creds, err := identity.Join(ctxT(t), r.info.Address, nil, id, tok)
	if err != nil {
		t.Fatal(err)
	}
	// Without a client certificate.
	_, err = r.client(t, nil).Renew(ctxT(t), &identityv1.RenewRequest{Csr: csrFor(t, id)})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), "present a certificate") {
		t.Errorf("renew without a certificate: %v", err)
	}
	// With a certificate of another trust domain.
	foreignCA, err := identity.OpenCA(context.Background(), filepath.Join(t.TempDir(), "ca"), identity.WithTrustDomain("other.example"))
	if err != nil {
		t.Fatal(err)
	}
	defer foreignCA.Close()
	fid, _ := identity.ServiceID("other.example", "default", "hello")
	ftok, _ := foreignCA.Tokens().Mint(fid, time.Minute)
	fkey, _ := identity.NewKey()
	fcsr, _ := identity.NewCSR(fkey, fid)
	fchain, err := foreignCA.Sign(context.Background(), fcsr, ftok)
	if err != nil {
		t.Fatal(err)
	}
	foreign := (&identity.Credentials{ID: fid, Chain: fchain, Key: fkey, Bundle: foreignCA.Bundle()}).TLSCertificate()
	_, err = r.client(t, foreign).Renew(ctxT(t), &identityv1.RenewRequest{Csr: csrFor(t, fid)})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), "other.example") {
		t.Errorf("renew with a foreign certificate: %v", err)
	}
	// For another identity than the certificate's.
	other, _ := identity.ServiceID(r.info.TrustDomain, "default", "other")
	_, err = r.client(t, creds.TLSCertificate()).Renew(ctxT(t), &identityv1.RenewRequest{Csr: csrFor(t, other)})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("renew for another ID: %v", err)
	}
}

func TestHealthMetricsAndRestart(t *testing.T) {
	dir := home.Dir(t.TempDir())
	r := startServer(t, dir)

	conn, err := grpc.NewClient(r.info.Address, grpc.WithTransportCredentials(credentials.NewTLS(identity.ClientTLSConfig(
		func() *identity.Bundle {
			roots, _ := identity.ReadCertificates(dir.RootCert())
			return identity.NewBundle(r.info.TrustDomain, roots)
		}, nil, identity.AuthorizeID(identity.ControlPlaneID(r.info.TrustDomain))))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc, err := healthpb.NewHealthClient(conn).Check(ctxT(t), &healthpb.HealthCheckRequest{Service: identityv1.IdentityService_ServiceDesc.ServiceName})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", hc, err)
	}

	id, tok := r.mint(t, "hello")
	if _, err := identity.Join(ctxT(t), r.info.Address, nil, id, tok); err != nil {
		t.Fatal(err)
	}
	body := get(t, "http://"+r.info.AdminAddress+"/metrics")
	for _, want := range []string{
		`micromesh_identity_certificates_issued_total{method="sign"} 1`,
		`micromesh_grpc_server_handled_total{grpc_code="OK",grpc_method="Sign",grpc_service="micromesh.identity.v1.IdentityService"} 1`,
		"micromesh_ca_intermediate_expiry_timestamp_seconds",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if got := get(t, "http://"+r.info.AdminAddress+"/ready"); got != "ready\n" {
		t.Errorf("/ready = %q", got)
	}
	if info, err := dir.ReadServerInfo(); err != nil || info.Address != r.info.Address {
		t.Errorf("published server info = %+v, %v", info, err)
	}

	root, _ := identity.ReadCertificates(dir.RootCert())
	if err := r.stop(); err != nil {
		t.Fatalf("Run returned %v on a clean stop", err)
	}
	if _, err := dir.ReadServerInfo(); !errors.Is(err, home.ErrNoServer) {
		t.Errorf("server info still published after stop: %v", err)
	}
	r2 := startServer(t, dir)
	root2, _ := identity.ReadCertificates(dir.RootCert())
	if identity.Fingerprint(root[0]) != identity.Fingerprint(root2[0]) {
		t.Error("the root changed across a restart")
	}
	// A client holding the old bundle still trusts the restarted server.
	if _, err := r2.client(t, nil).TrustBundle(ctxT(t), &identityv1.TrustBundleRequest{}); err != nil {
		t.Fatal(err)
	}
}

func TestPortConflictIsReported(t *testing.T) {
	r := startServer(t, home.Dir(t.TempDir()))
	_, err := New(context.Background(), Config{Home: home.Dir(t.TempDir()), Addr: r.info.Address, AdminAddr: "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "--addr") {
		t.Fatalf("second server on the same port: %v; want an error naming --addr", err)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
