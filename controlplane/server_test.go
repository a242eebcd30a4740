package controlplane_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/jose"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/controlplane"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/identity/ca"
	"github.com/micromesh/micromesh/internal/home"
	"github.com/micromesh/micromesh/internal/meshtest"
	identityv1 "github.com/micromesh/micromesh/proto/identity/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Started at init by glog, which the smallstep authority imports.
		goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		// grpc-go's xDS client never closes the file watcher behind the
		// bootstrap's "tls" channel credentials (internal/xds/bootstrap/tlscreds).
		goleak.IgnoreTopFunction("google.golang.org/grpc/credentials/tls/certprovider/pemfile.(*watcher).run"),
	)
}

// client dials the control plane, verifying it against the local root and
// presenting cert if not nil.
func client(t *testing.T, cp *meshtest.ControlPlane, cert *tls.Certificate) identityv1.IdentityServiceClient {
	t.Helper()
	bundle := cp.Bundle()
	var get func() *tls.Certificate
	if cert != nil {
		get = func() *tls.Certificate { return cert }
	}
	cfg := identity.ClientTLSConfig(func() *identity.Bundle { return bundle }, get, identity.AuthorizeID(identity.ControlPlaneID(cp.Info.TrustDomain)))
	conn, err := grpc.NewClient(cp.Info.Address, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return identityv1.NewIdentityServiceClient(conn)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestJoinRenewAndBundleOverGRPC(t *testing.T) {
	r := meshtest.NewEnv(t).StartControlPlane()
	id, tok := r.Token("default", "hello")

	// Join: the client package's flow, bootstrapping trust from the token.
	creds, err := identity.Join(ctxT(t), r.Info.Address, nil, id, tok)
	if err != nil {
		t.Fatalf("Join: %v", err)
	}
	if creds.ID != id || len(creds.Chain) != 2 {
		t.Fatalf("joined as %v with %d certificates", creds.ID, len(creds.Chain))
	}

	// Renew over mTLS with the certificate just issued.
	src := identity.NewSource(creds, identity.RemoteRenewer(r.Info.Address))
	if err := src.Rotate(ctxT(t)); err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	if src.Current().ID != id || src.Current().Leaf().SerialNumber.Cmp(creds.Leaf().SerialNumber) == 0 {
		t.Fatal("renewal did not produce a new certificate for the same ID")
	}

	resp, err := client(t, r, nil).TrustBundle(ctxT(t), &identityv1.TrustBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetTrustDomain() != identity.DefaultTrustDomain || len(resp.GetRoots()) != 1 {
		t.Fatalf("TrustBundle = %v", resp)
	}
}

func TestSignRefusalsAreStatuses(t *testing.T) {
	env := meshtest.NewEnv(t)
	r := env.StartControlPlane()
	c := client(t, r, nil)
	hello, tok := r.Token("default", "hello")
	_, used := r.Token("default", "hello")
	if _, err := c.Sign(ctxT(t), &identityv1.SignRequest{Csr: meshtest.CSR(t, hello), Token: used}); err != nil {
		t.Fatal(err)
	}
	other, _ := identity.ServiceID(r.Info.TrustDomain, "default", "other")
	badName := csrWithURI(t, "spiffe://micromesh.local/ns/default/svc/Bad_Name")
	foreignCA, err := ca.Open(context.Background(), filepath.Join(t.TempDir(), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	defer foreignCA.Close()
	forged, _ := foreignCA.Tokens().Mint(hello, time.Minute) // same ID, another CA's key
	expired := expiredToken(t, r, hello)

	tests := []struct {
		name string
		req  *identityv1.SignRequest
		code codes.Code
	}{
		{"malformed CSR", &identityv1.SignRequest{Csr: []byte("junk"), Token: tok}, codes.InvalidArgument},
		{"invalid service name", &identityv1.SignRequest{Csr: badName, Token: tok}, codes.InvalidArgument},
		{"CSR for another ID", &identityv1.SignRequest{Csr: meshtest.CSR(t, other), Token: tok}, codes.PermissionDenied},
		{"no token", &identityv1.SignRequest{Csr: meshtest.CSR(t, hello)}, codes.Unauthenticated},
		{"forged token", &identityv1.SignRequest{Csr: meshtest.CSR(t, hello), Token: forged}, codes.Unauthenticated},
		{"expired token", &identityv1.SignRequest{Csr: meshtest.CSR(t, hello), Token: expired}, codes.Unauthenticated},
		{"reused token", &identityv1.SignRequest{Csr: meshtest.CSR(t, hello), Token: used}, codes.Unauthenticated},
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
	if _, err := c.Sign(ctxT(t), &identityv1.SignRequest{Csr: meshtest.CSR(t, hello), Token: tok}); err != nil {
		t.Fatalf("the token was used up by refused requests: %v", err)
	}
	// Each refusal is logged, and no token is.
	logs := env.Logs()
	if n := strings.Count(logs, "msg=refused"); n != len(tests) {
		t.Errorf("%d refusals logged, want %d", n, len(tests))
	}
	for _, secret := range []string{tok, used, forged, expired} {
		if strings.Contains(logs, secret) {
			t.Fatal("a token appears in the logs")
		}
	}
}

// expiredToken signs, with the CA's own key, a token that expired ten minutes ago.
func expiredToken(t *testing.T, r *meshtest.ControlPlane, id identity.ID) string {
	t.Helper()
	key, err := jose.ReadKey(filepath.Join(r.Home().CA(), "provisioner.jwk"))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key.Key}, new(jose.SignerOptions).WithType("JWT").WithHeader("kid", key.KeyID))
	if err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-20 * time.Minute)
	tok, err := jose.Signed(signer).Claims(map[string]any{
		"iss": "micromesh", "sub": id.String(), "aud": "https://" + id.TrustDomain + "/1.0/sign", "jti": "expired-test-token",
		"iat": past.Unix(), "nbf": past.Unix(), "exp": past.Add(10 * time.Minute).Unix(), "sans": []string{id.String()},
	}).CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func csrWithURI(t *testing.T, uri string) []byte {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	key, err := identity.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestRenewRefusals(t *testing.T) {
	r := meshtest.NewEnv(t).StartControlPlane()
	id, tok := r.Token("default", "hello")
	creds, err := identity.Join(ctxT(t), r.Info.Address, nil, id, tok)
	if err != nil {
		t.Fatal(err)
	}
	// Without a client certificate.
	_, err = client(t, r, nil).Renew(ctxT(t), &identityv1.RenewRequest{Csr: meshtest.CSR(t, id)})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), "present a certificate") {
		t.Errorf("renew without a certificate: %v", err)
	}
	// With a certificate of another trust domain.
	foreignCA, err := ca.Open(context.Background(), filepath.Join(t.TempDir(), "ca"), ca.WithTrustDomain("other.example"))
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
	_, err = client(t, r, foreign).Renew(ctxT(t), &identityv1.RenewRequest{Csr: meshtest.CSR(t, fid)})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), "other.example") {
		t.Errorf("renew with a foreign certificate: %v", err)
	}
	// For another identity than the certificate's.
	other, _ := identity.ServiceID(r.Info.TrustDomain, "default", "other")
	_, err = client(t, r, creds.TLSCertificate()).Renew(ctxT(t), &identityv1.RenewRequest{Csr: meshtest.CSR(t, other)})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("renew for another ID: %v", err)
	}
}

func TestHealthMetricsAndRestart(t *testing.T) {
	env := meshtest.NewEnv(t)
	dir := env.Home
	r := env.StartControlPlane()

	conn, err := grpc.NewClient(r.Info.Address, grpc.WithTransportCredentials(credentials.NewTLS(identity.ClientTLSConfig(
		func() *identity.Bundle {
			roots, _ := identity.ReadCertificates(dir.RootCert())
			return identity.NewBundle(r.Info.TrustDomain, roots)
		}, nil, identity.AuthorizeID(identity.ControlPlaneID(r.Info.TrustDomain))))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc, err := healthpb.NewHealthClient(conn).Check(ctxT(t), &healthpb.HealthCheckRequest{Service: identityv1.IdentityService_ServiceDesc.ServiceName})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", hc, err)
	}

	id, tok := r.Token("default", "hello")
	if _, err := identity.Join(ctxT(t), r.Info.Address, nil, id, tok); err != nil {
		t.Fatal(err)
	}
	body := get(t, "http://"+r.Info.AdminAddress+"/metrics")
	for _, want := range []string{
		`micromesh_identity_certificates_issued_total{method="sign"} 1`,
		`micromesh_grpc_server_handled_total{grpc_code="OK",grpc_method="Sign",grpc_service="micromesh.identity.v1.IdentityService"} 1`,
		"micromesh_ca_intermediate_expiry_timestamp_seconds",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if got := get(t, "http://"+r.Info.AdminAddress+"/ready"); got != "ready\n" {
		t.Errorf("/ready = %q", got)
	}
	if info, err := dir.ReadServerInfo(); err != nil || info.Address != r.Info.Address {
		t.Errorf("published server info = %+v, %v", info, err)
	}

	root, _ := identity.ReadCertificates(dir.RootCert())
	if err := r.Stop(); err != nil {
		t.Fatalf("Run returned %v on a clean stop", err)
	}
	if _, err := dir.ReadServerInfo(); !errors.Is(err, home.ErrNoServer) {
		t.Errorf("server info still published after stop: %v", err)
	}
	r2 := env.StartControlPlane()
	root2, _ := identity.ReadCertificates(dir.RootCert())
	if identity.Fingerprint(root[0]) != identity.Fingerprint(root2[0]) {
		t.Error("the root changed across a restart")
	}
	// A client holding the old bundle still trusts the restarted server.
	if _, err := client(t, r2, nil).TrustBundle(ctxT(t), &identityv1.TrustBundleRequest{}); err != nil {
		t.Fatal(err)
	}
}

func TestPortConflictIsReported(t *testing.T) {
	r := meshtest.NewEnv(t).StartControlPlane()
	_, err := controlplane.New(context.Background(), controlplane.Config{Home: home.Dir(t.TempDir()), Addr: r.Info.Address, AdminAddr: "127.0.0.1:0"})
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
