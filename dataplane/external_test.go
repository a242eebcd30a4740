package dataplane_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/envconfig"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/outsidetest"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
	"github.com/micromesh/micromesh/service"
)

// callOutside sends a request for host to a sidecar's outbound listener
// and reads what the server outside the mesh saw (on a 200).
func callOutside(t *testing.T, outbound, host, path string) (int, outsidetest.Seen, string) {
	t.Helper()
	req, err := http.NewRequest("POST", "http://"+outbound+path, strings.NewReader("charge"))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	req.Header.Set("Authorization", "Bearer app-secret") // the app's own credentials for the outside
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var seen outsidetest.Seen
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &seen); err != nil {
			t.Fatalf("reply %q: %v", b, err)
		}
	}
	return resp.StatusCode, seen, string(b)
}

// An operator declares a service outside the mesh; an app calls it by
// name in plain HTTP through its sidecar, which opens TLS to the server
// (SNI, its certificate checked against the roots given), shows no mesh
// certificate there, and sends the request with the server's authority.
// A server whose certificate names another host, or chains to other
// roots, gets nothing: the app gets a 503 saying why. Another namespace's
// apps cannot reach it; removed, it is gone.
func TestAServiceOutsideTheMesh(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
	c := cp.StartSidecar("prod", "c", meshtest.WithApp(startEcho(t, "c"), "http"))
	ca := outsidetest.NewCA(t)
	good := outsidetest.Start(t, ca, "localhost")
	misnamed := outsidetest.Start(t, ca, "other.example")
	stranger := outsidetest.Start(t, outsidetest.NewCA(t), "localhost")

	admin := cp.RegistryClient(cp.Join(identity.SystemNamespace, "meshctl"))
	set := func(name string, port uint16, roots []byte) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := admin.SetExternal(ctx, &registryv1.SetExternalRequest{External: &registryv1.External{
			Name: name, Host: "localhost", Port: uint32(port), Ca: string(roots)}}); err != nil {
			t.Fatal(err)
		}
	}
	set("pay", good.Port, ca.PEM())
	set("misnamed", misnamed.Port, ca.PEM())
	set("stranger", stranger.Port, ca.PEM())

	var code int
	var seen outsidetest.Seen
	waitFor(t, "a reaches pay", func() bool {
		code, seen, _ = callOutside(t, a.Info.Outbound, "pay", "/v1/charges?amount=5")
		return code == http.StatusOK
	})
	want := fmt.Sprintf("localhost:%d", good.Port)
	switch {
	case seen.Host != want || seen.SNI != "localhost":
		t.Errorf("the server saw authority %q and SNI %q, want %q and localhost", seen.Host, seen.SNI, want)
	case seen.ClientCert:
		t.Error("the sidecar showed a certificate outside the mesh")
	case seen.TLSVersion != tls.VersionTLS13:
		t.Errorf("TLS version %x, want 1.3", seen.TLSVersion)
	case seen.Method != "POST" || seen.URI != "/v1/charges?amount=5" || seen.Body != "charge":
		t.Errorf("the server saw %s %s %q", seen.Method, seen.URI, seen.Body)
	case seen.Header.Get("Authorization") != "Bearer app-secret":
		t.Errorf("the app's own credentials did not reach the server: %v", seen.Header)
	case seen.Header.Get("X-Mesh-Caller") != "" || seen.Header.Get("X-Forwarded-Client-Cert") != "":
		t.Errorf("mesh identity headers left the mesh: %v", seen.Header)
	}
	if code, seen, _ := callOutside(t, a.Info.Outbound, "pay.default", "/"); code != http.StatusOK || seen.Host != want {
		t.Errorf("a → pay.default: %d, host %q", code, seen.Host)
	}
	// A Go app of the framework: service.HTTPClient sends http://pay/…
	// through its sidecar.
	t.Setenv(envconfig.Proxy, a.Info.Outbound)
	client, err := service.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Post("http://pay/v1/refunds?id=7", "text/plain", strings.NewReader("refund"))
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&seen)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || seen.Host != want || seen.URI != "/v1/refunds?id=7" || seen.Body != "refund" {
		t.Errorf("service.HTTPClient → pay: %d %+v (%v)", resp.StatusCode, seen, err)
	}
	if _, err := client.Get(fmt.Sprintf("https://localhost:%d/", good.Port)); err == nil || !strings.Contains(err.Error(), "use http://NAME") {
		t.Errorf("service.HTTPClient with an https:// URL: %v, want an error saying the sidecar opens TLS", err)
	}

	for name, reason := range map[string]string{"misnamed": "other.example, not localhost", "stranger": "certificate signed by unknown authority"} {
		code, _, body := callOutside(t, a.Info.Outbound, name, "/")
		if code != http.StatusServiceUnavailable || !strings.Contains(body, reason) {
			t.Errorf("a → %s: %d %q, want 503 saying %q", name, code, body, reason)
		}
	}
	if code, _, body := callOutside(t, c.Info.Outbound, "pay.default", "/"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not a service in the mesh") {
		t.Errorf("prod's c → pay.default: %d %q, want 503: another namespace's way out is not c's", code, body)
	}

	// Declaring is an operator's act; a mesh service's name is taken.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	workload := cp.RegistryClient(cp.Join("default", "a"))
	_, err = workload.SetExternal(ctx, &registryv1.SetExternalRequest{External: &registryv1.External{Name: "exfil", Host: "localhost", Port: uint32(good.Port)}})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("a workload declaring an external service: %v, want PermissionDenied", err)
	}
	_, err = admin.SetExternal(ctx, &registryv1.SetExternalRequest{External: &registryv1.External{Name: "a", Host: "localhost", Port: uint32(good.Port)}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "is a service in the mesh") {
		t.Errorf("an external service named as a mesh service: %v, want FailedPrecondition", err)
	}
	_, err = admin.SetExternal(ctx, &registryv1.SetExternalRequest{External: &registryv1.External{Name: "pay", Host: "127.0.0.1"}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "is an IP address") {
		t.Errorf("an external service at an IP address: %v, want InvalidArgument", err)
	}

	if _, err := admin.DeleteExternal(ctx, &registryv1.DeleteExternalRequest{Name: "pay"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "pay to be gone", func() bool {
		code, _, body := callOutside(t, a.Info.Outbound, "pay", "/")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "not a service in the mesh")
	})
	if _, err := admin.DeleteExternal(ctx, &registryv1.DeleteExternalRequest{Name: "pay"}); status.Code(err) != codes.NotFound {
		t.Errorf("removing it twice: %v, want NotFound", err)
	}
}

// A gRPC service outside the mesh (--protocol grpc): an app dials it by
// name through its sidecar (what service.Dial does), unary and streaming
// calls alike; the sidecar speaks HTTP/2 over TLS to it, with its
// authority, and no mesh certificate.
func TestAGRPCServiceOutsideTheMesh(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
	ca := outsidetest.NewCA(t)
	ln, port := outsidetest.Listen(t)
	type seen struct {
		authority  string
		clientCert bool
	}
	calls := make(chan seen, 16)
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(outsidetest.ServerTLS(t, ca, "localhost"))),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			s := seen{}
			if md, ok := metadata.FromIncomingContext(ctx); ok && len(md[":authority"]) > 0 {
				s.authority = md[":authority"][0]
			}
			if p, ok := peer.FromContext(ctx); ok {
				if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
					s.clientCert = len(ti.State.PeerCertificates) > 0
				}
			}
			calls <- s
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)

	admin := cp.RegistryClient(cp.Join(identity.SystemNamespace, "meshctl"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := admin.SetExternal(ctx, &registryv1.SetExternalRequest{External: &registryv1.External{
		Name: "rates", Host: "localhost", Port: uint32(port), Ca: string(ca.PEM()), Protocol: "grpc"}}); err != nil {
		t.Fatal(err)
	}
	client := healthpb.NewHealthClient(meshtest.DialThrough(t, a.Info.Outbound, "rates"))
	var resp *healthpb.HealthCheckResponse
	waitFor(t, "a reaches rates", func() bool {
		var err error
		resp, err = client.Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil
	})
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("Check: %v", resp.GetStatus())
	}
	if s := <-calls; s.authority != fmt.Sprintf("localhost:%d", port) || s.clientCert {
		t.Errorf("the server saw authority %q, a client certificate: %v; want localhost:%d and none", s.authority, s.clientCert, port)
	}
	watch, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := watch.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("Watch (server streaming): %v, %v", m, err)
	}
}
