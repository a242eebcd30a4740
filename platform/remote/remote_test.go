package remote_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/dataplane"
	"github.com/micromesh/micromesh/examples/helloworld/handler"
	pb "github.com/micromesh/micromesh/examples/helloworld/proto"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/envconfig"
	"github.com/micromesh/micromesh/internal/meshclient"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/promtest"
	"github.com/micromesh/micromesh/internal/syncbuf"
	"github.com/micromesh/micromesh/internal/testsvc"
	"github.com/micromesh/micromesh/platform/remote"
	authv1 "github.com/micromesh/micromesh/proto/auth/v1"
	configv1 "github.com/micromesh/micromesh/proto/config/v1"
	identityv1 "github.com/micromesh/micromesh/proto/identity/v1"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
	storev1 "github.com/micromesh/micromesh/proto/store/v1"
	"github.com/micromesh/micromesh/service"
)

type mesh struct {
	t      *testing.T
	cp     *meshtest.ControlPlane
	proxy  *remote.Proxy
	bundle *identity.Bundle
}

// dial connects to the remote proxy as meshctl does: TLS checked against
// the mesh's root and the proxy's SPIFFE ID, the service as the
// authority, the token (if any) with every call.
func (m *mesh) dial(authority, token string) *grpc.ClientConn {
	m.t.Helper()
	proxyID := identity.ID{TrustDomain: m.bundle.TrustDomain(), Namespace: identity.SystemNamespace, Kind: identity.KindService, Name: remote.Service}
	cfg := identity.ClientTLSConfig(func() *identity.Bundle { return m.bundle }, nil, identity.AuthorizeID(proxyID))
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg)), grpc.WithAuthority(authority)}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(token)))
	}
	conn, err := grpc.NewClient(m.proxy.Addr(), opts...)
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// login trades a secret for a token through the proxy, with no token.
func (m *mesh) login(name, ns, secret string) (string, error) {
	resp, err := authv1.NewAuthServiceClient(m.dial(remote.LoginAuthority, "")).Token(m.t.Context(), &authv1.TokenRequest{Name: name, Namespace: ns, Secret: secret})
	return resp.GetAccessToken(), err
}

// platform connects to a platform service as the server's own CLI does
// (a platform identity, through the mesh).
func (m *mesh) platform(t *testing.T, name string) *grpc.ClientConn {
	t.Helper()
	conn, err := meshclient.DialService(t.Context(), m.cp.Home(), m.cp.Info.Address, identity.SystemNamespace, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func (m *mesh) hello(authority, token string) (string, error) {
	resp, err := pb.NewHelloworldClient(m.dial(authority, token)).Call(m.t.Context(), &pb.CallRequest{Name: "Remote"})
	return resp.GetMsg(), err
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return true }

// meshctl in a remote environment: it logs in through the remote proxy
// (the one call it forwards without a token) and calls services with the
// token, kept to the account's namespace (all with the scope admin); the
// service learns the user; streams pass both ways; bad and missing
// tokens, other namespaces, platform services and unknown services each
// get a status that says what to do.
func TestRemoteProxy(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	cp.StartPlatform()
	hello := func(s *service.Service) { pb.RegisterHelloworldServer(s.Server(), handler.Helloworld{}) }
	cp.StartService("default", "helloworld", hello)
	cp.StartService("shop", "helloworld", hello)
	cp.StartService("default", "tester", func(s *service.Service) { testgrpc.RegisterTestServiceServer(s.Server(), testsvc.Service{}) })
	outbound := "127.0.0.1:" + strconv.Itoa(meshtest.FreePort(t))
	t.Setenv(envconfig.Proxy, outbound)
	cp.StartService("default", "whoami", func(s *service.Service) { pb.RegisterHelloworldServer(s.Server(), testsvc.Whoami{}) },
		meshtest.WithOptions(func(o *dataplane.Options) { o.Outbound = outbound }))
	reg := prometheus.NewRegistry()
	logs := &syncbuf.Buffer{}
	p, err := remote.Start(t.Context(), remote.Options{Addr: "127.0.0.1:0", Home: cp.Home(), ControlPlane: cp.Info.Address, Metrics: reg,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	m := &mesh{t: t, cp: cp, proxy: p, bundle: cp.Bundle()}

	conn, err := meshclient.DialService(t.Context(), cp.Home(), cp.Info.Address, "micromesh", "auth")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, a := range []*authv1.CreateAccountRequest{
		{Account: &authv1.Account{Name: "alice"}, Secret: "alice's secret"},
		{Account: &authv1.Account{Name: "ops", Namespace: "shop", Scopes: []string{remote.AdminScope}}, Secret: "ops's own secret"},
	} {
		if _, err := authv1.NewAuthServiceClient(conn).CreateAccount(t.Context(), a); err != nil {
			t.Fatal(err)
		}
	}

	// Logging in: the one call without a token.
	if _, err := m.login("alice", "default", "not alice's secret"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("login with a wrong secret: %v, want Unauthenticated", err)
	}
	alice, err := m.login("alice", "default", "alice's secret")
	if err != nil {
		t.Fatal(err)
	}
	ops, err := m.login("ops", "shop", "ops's own secret")
	if err != nil {
		t.Fatal(err)
	}

	// A session: refreshed and ended through the proxy, with no access
	// token (the refresh token is the credential).
	login := authv1.NewAuthServiceClient(m.dial(remote.LoginAuthority, ""))
	sess, err := login.Token(t.Context(), &authv1.TokenRequest{Name: "alice", Secret: "alice's secret", Refreshable: true})
	if err != nil || sess.GetRefreshToken() == "" {
		t.Fatalf("a login with a session: %v %v", sess, err)
	}
	renewed, err := login.Refresh(t.Context(), &authv1.RefreshRequest{RefreshToken: sess.GetRefreshToken()})
	if err != nil {
		t.Fatalf("refresh through the proxy: %v", err)
	}
	if msg, err := m.hello("helloworld", renewed.GetAccessToken()); err != nil || msg != "Hello Remote" {
		t.Errorf("a call with the refreshed token: %q, %v", msg, err)
	}
	if _, err := login.Revoke(t.Context(), &authv1.RevokeRequest{RefreshToken: renewed.GetRefreshToken()}); err != nil {
		t.Errorf("revoke through the proxy: %v", err)
	}
	if _, err := login.Refresh(t.Context(), &authv1.RefreshRequest{RefreshToken: renewed.GetRefreshToken()}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("refresh after revoke: %v", err)
	}

	// Calls with the token: the account's namespace when the authority
	// names none.
	for _, authority := range []string{"helloworld", "helloworld.default"} {
		if msg, err := m.hello(authority, alice); err != nil || msg != "Hello Remote" {
			t.Errorf("alice → %s: %q, %v", authority, msg, err)
		}
	}
	// The service learns the user from the token, and gets the call's
	// metadata.
	ctx := metadata.AppendToOutgoingContext(t.Context(), "tenant", "acme", "x-mesh-caller", "spiffe://micromesh.local/ns/default/svc/forged")
	who, err := pb.NewHelloworldClient(m.dial("whoami", alice)).Call(ctx, &pb.CallRequest{})
	if err != nil || who.GetMsg() != "spiffe://micromesh.local/ns/default/user/alice tenant=acme" {
		t.Errorf("whoami as alice: %q, %v", who.GetMsg(), err)
	}
	// An admin-scoped account reaches other namespaces; its own is shop.
	if msg, err := m.hello("helloworld.default", ops); err != nil || msg != "Hello Remote" {
		t.Errorf("ops → helloworld.default: %q, %v", msg, err)
	}
	if msg, err := m.hello("helloworld", ops); err != nil || msg != "Hello Remote" {
		t.Errorf("ops → helloworld (its namespace, shop): %q, %v", msg, err)
	}

	// The registry's listing, kept to the account's namespace.
	list := func(token, ns string) ([]string, error) {
		resp, err := registryv1.NewRegistryServiceClient(m.dial(remote.RegistryAuthority, token)).ListServices(t.Context(), &registryv1.ListServicesRequest{Namespace: ns})
		var names []string
		for _, s := range resp.GetServices() {
			names = append(names, s.GetName()+"."+s.GetNamespace())
		}
		return names, err
	}
	if names, err := list(alice, ""); err != nil || !slices.Equal(names, []string{"helloworld.default", "tester.default", "whoami.default"}) {
		t.Errorf("alice's listing: %v, %v", names, err)
	}
	if _, err := list(alice, "shop"); status.Code(err) != codes.PermissionDenied {
		t.Errorf("alice listing shop: %v", err)
	}
	if names, err := list(ops, ""); err != nil || !slices.Contains(names, "helloworld.shop") || !slices.Contains(names, "auth.micromesh") {
		t.Errorf("an admin's listing: %v, %v", names, err)
	}
	if _, err := list("", ""); status.Code(err) != codes.Unauthenticated {
		t.Errorf("a listing without a token: %v", err)
	}

	// The control plane's APIs, for admin accounts: a policy set through
	// the proxy reaches the registry, and the call is logged with the
	// account; the identity API stays on the server's machine.
	cpAdmin := registryv1.NewRegistryServiceClient(m.dial(remote.ControlPlaneAuthority, ops))
	if _, err := cpAdmin.SetPolicy(t.Context(), &registryv1.SetPolicyRequest{Policy: &registryv1.Policy{Service: "helloworld", Namespace: "default", Keys: map[string]string{"timeout": "3s"}}}); err != nil {
		t.Fatalf("SetPolicy as ops: %v", err)
	}
	if snap, err := registry.List(t.Context(), cp.Registry()); err != nil || len(snap.Policies) != 1 || snap.Policies[0].Keys["timeout"] != "3s" {
		t.Errorf("the registry's policies after ops's SetPolicy: %+v, %v", snap.Policies, err)
	}
	if l := logs.String(); !strings.Contains(l, "remote administration") || !strings.Contains(l, "ns/shop/user/ops") {
		t.Error("the proxy did not log ops's SetPolicy with the account")
	} else if strings.Contains(l, "eyJ") {
		t.Error("the proxy logged an access token")
	}
	if _, err := registryv1.NewRegistryServiceClient(m.dial(remote.ControlPlaneAuthority, alice)).DeletePolicy(t.Context(),
		&registryv1.DeletePolicyRequest{Service: "helloworld", Namespace: "default"}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "scope admin") {
		t.Errorf("DeletePolicy as alice: %v; want PermissionDenied, for the scope admin", err)
	}
	// Of the identity API, revocation alone: for admin accounts.
	victim := cp.Join("shop", "victim")
	ids := identityv1.NewIdentityServiceClient(m.dial(remote.ControlPlaneAuthority, ops))
	if resp, err := ids.Revoke(t.Context(), &identityv1.RevokeRequest{Target: &identityv1.RevokeRequest_Service{Service: &identityv1.ServiceName{Name: "victim", Namespace: "shop"}}}); err != nil ||
		len(resp.GetRevoked()) != 1 || resp.GetRevoked()[0].GetSerial() != victim.Chain[0].SerialNumber.String() {
		t.Errorf("Revoke as ops: %v, %v", resp, err)
	}
	if list, err := ids.ListRevoked(t.Context(), &identityv1.ListRevokedRequest{}); err != nil || len(list.GetRevoked()) != 1 {
		t.Errorf("ListRevoked as ops: %v, %v", list, err)
	}
	if _, err := identityv1.NewIdentityServiceClient(m.dial(remote.ControlPlaneAuthority, alice)).ListRevoked(t.Context(), &identityv1.ListRevokedRequest{}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "scope admin") {
		t.Errorf("ListRevoked as alice: %v; want PermissionDenied, for the scope admin", err)
	}
	if _, err := ids.TrustBundle(t.Context(), &identityv1.TrustBundleRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("the identity API through the proxy: %v; want PermissionDenied", err)
	}

	// Every account reaches the store, config, broker and events — in its
	// own namespace: the services bind the call to the token passed on.
	ctxT := t.Context()
	platformStore := storev1.NewStoreServiceClient(m.platform(t, "store"))
	if _, err := storev1.NewStoreServiceClient(m.dial("store.micromesh", alice)).Write(ctxT, &storev1.WriteRequest{Record: &storev1.Record{Key: "k", Value: []byte("alice's")}}); err != nil {
		t.Fatalf("alice writes the store: %v", err)
	}
	if r, err := platformStore.Read(ctxT, &storev1.ReadRequest{Scope: &storev1.Scope{Database: "default", Table: "default"}, Key: "k"}); err != nil || len(r.GetRecords()) != 1 || string(r.GetRecords()[0].GetValue()) != "alice's" {
		t.Errorf("alice's record, in database default, table default: %v, %v", r, err)
	}
	if _, err := storev1.NewStoreServiceClient(m.dial("store.micromesh", alice)).Write(ctxT, &storev1.WriteRequest{Scope: &storev1.Scope{Database: "shop"},
		Record: &storev1.Record{Key: "k", Value: []byte("x")}}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "not shop") {
		t.Errorf("alice writing shop's database: %v; want PermissionDenied", err)
	}
	if _, err := storev1.NewStoreServiceClient(m.dial("store.micromesh", ops)).Write(ctxT, &storev1.WriteRequest{Scope: &storev1.Scope{Database: "default"},
		Record: &storev1.Record{Key: "by-ops", Value: []byte("x")}}); err != nil {
		t.Errorf("ops (admin) writing default's database: %v", err)
	}
	// A secret whose readers name a service "alice": the account alice is
	// not that service.
	if _, err := configv1.NewConfigServiceClient(m.platform(t, "config")).Set(ctxT, &configv1.SetRequest{Namespace: "default", Path: "db.password",
		Value: []byte(`"s3cret"`), Secret: true, Readers: []string{"alice"}}); err != nil {
		t.Fatal(err)
	}
	aliceConfig := configv1.NewConfigServiceClient(m.dial("config.micromesh", alice))
	if v, err := aliceConfig.Get(ctxT, &configv1.GetRequest{Path: "db.password"}); err != nil || strings.Contains(string(v.GetValue()), "s3cret") {
		t.Errorf("alice reads the config, secrets masked: %s, %v", v.GetValue(), err)
	}
	if _, err := aliceConfig.Get(ctxT, &configv1.GetRequest{Path: "db.password", Secret: true}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("alice decrypting a secret for the service alice: %v; want PermissionDenied", err)
	}

	// Streams, both ways, message by message.
	tc := testgrpc.NewTestServiceClient(m.dial("tester", alice))
	out, err := tc.StreamingOutputCall(t.Context(), &testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{Size: 3}, {Size: 70000}, {Size: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for {
		r, err := out.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("server stream: %v", err)
		}
		sizes = append(sizes, len(r.GetPayload().GetBody()))
	}
	if len(sizes) != 3 || sizes[0] != 3 || sizes[1] != 70000 || sizes[2] != 1 {
		t.Errorf("server stream sizes %v, want [3 70000 1]", sizes)
	}
	bidi, err := tc.FullDuplexCall(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ { // each answer before the next request: full duplex
		if err := bidi.Send(&testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{Size: int32(i)}}}); err != nil {
			t.Fatal(err)
		}
		r, err := bidi.Recv()
		if err != nil || len(r.GetPayload().GetBody()) != i {
			t.Fatalf("bidi answer %d: %v, %v", i, r, err)
		}
	}
	if err := bidi.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := bidi.Recv(); err != io.EOF {
		t.Errorf("bidi end: %v, want EOF", err)
	}

	// Refusals.
	for _, tc := range []struct {
		what, authority, token string
		code                   codes.Code
		want                   string
	}{
		{"no token", "helloworld", "", codes.Unauthenticated, "meshctl login"},
		{"a tampered token", "helloworld", alice[:len(alice)-4] + "AAAA", codes.Unauthenticated, "meshctl login"},
		{"not a JWT", "helloworld", "opaque", codes.Unauthenticated, ""},
		{"another namespace", "helloworld.shop", alice, codes.PermissionDenied, "may call services of namespace default, not shop"},
		{"a platform service every account reaches", "store.micromesh", alice, codes.Unimplemented, "Helloworld"}, // reached the store
		{"a platform service, as an admin", "store.micromesh", ops, codes.Unimplemented, "Helloworld"},            // reached the store
		{"the auth service beyond Token", "auth.micromesh", alice, codes.PermissionDenied, "platform service"},
		{"an unknown service", "nosuch", alice, codes.NotFound, "no service nosuch in namespace default"},
		{"an authority that is no service", "Hello..World", alice, codes.InvalidArgument, "is not a service"},
	} {
		_, err := m.hello(tc.authority, tc.token)
		if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.want) {
			t.Errorf("%s: %v, want %v with %q", tc.what, err, tc.code, tc.want)
		}
		// An unknown service is named alone: the proxy reaches every
		// namespace, which its sidecar's own answer would list.
		if strings.Contains(status.Convert(err).Message(), "helloworld.shop") && tc.code == codes.NotFound {
			t.Errorf("%s: the answer lists other namespaces' services: %v", tc.what, err)
		}
	}

	// Counted by the service reached; refusals before one was named, and
	// names that exist nowhere, unlabelled.
	for labels, atLeast := range map[string]float64{
		`grpc_code="OK",namespace="default",service="helloworld"`:          4,
		`grpc_code="OK",namespace="micromesh",service="auth"`:              4, // logins, refresh, revoke
		`grpc_code="Unauthenticated",namespace="",service=""`:              3,
		`grpc_code="NotFound",namespace="",service=""`:                     1,
		`grpc_code="PermissionDenied",namespace="",service=""`:             2,
		`grpc_code="OK",namespace="micromesh",service="registry"`:          2,
		`grpc_code="Unauthenticated",namespace="micromesh",service="auth"`: 2, // a wrong secret, a revoked session
	} {
		if got := promtest.Count(t, reg, "micromesh_remote_proxy_requests_total", labels); got < atLeast {
			t.Errorf("micromesh_remote_proxy_requests_total{%s} = %v, want at least %v", labels, got, atLeast)
		}
	}

	// The proxy is proxy.micromesh: a client expecting another identity
	// refuses it.
	cfg := identity.ClientTLSConfig(func() *identity.Bundle { return m.bundle }, nil, identity.AuthorizeID(identity.ControlPlaneID(m.bundle.TrustDomain())))
	wrong, err := grpc.NewClient(p.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)), grpc.WithAuthority("helloworld"), grpc.WithPerRPCCredentials(bearer(alice)))
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	_, err = pb.NewHelloworldClient(wrong).Call(t.Context(), &pb.CallRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "proxy") {
		t.Errorf("a client expecting the control plane's identity: %v, want a handshake failure naming the proxy", err)
	}
	if errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}
