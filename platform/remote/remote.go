// Package remote is the mesh's remote proxy: gRPC over TLS from outside
// the mesh — meshctl in a remote environment (docs/environments.md) — to
// its services. A call names its service by its authority (name or
// name.namespace) and carries an account's access token
// (authorization: Bearer, from the auth service); the proxy verifies the
// token, keeps it to the account's namespace (every namespace with the
// scope admin) and forwards the call unchanged — unary or streaming,
// message by message without decoding it — through its own sidecar, as
// the workload proxy.micromesh. The token travels on, so the service
// learns the user (service/auth.User). Three calls need no token: the
// auth service's Token, Refresh and Revoke, which is how a person logs in
// (with a secret), stays logged in and logs out (with a refresh token).
// The registry's ListServices (authority registry.micromesh) the proxy
// answers itself, kept to the account's namespace: meshctl services.
// The platform's store, config, broker and events every account reaches,
// acting in its own namespace (the services bind the call to the token's
// account: package tenancy); the auth service's account management only
// accounts with the scope admin. The control plane's APIs (authority
// controlplane.micromesh: policies, splits, the runtime, proxy status) it
// relays for accounts with the scope admin, logging each call with the
// account: meshctl's admin commands.
//
// The proxy presents its workload certificate (SPIFFE ID
// spiffe://<td>/ns/micromesh/svc/proxy, from the server's CA); clients
// check it against the mesh's root, as meshctl does with the root an
// environment was added with.
package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/grpcrelay"
	"github.com/micromesh/micromesh/internal/home"
	"github.com/micromesh/micromesh/internal/rawcodec"
	"github.com/micromesh/micromesh/platform/edge"
	"github.com/micromesh/micromesh/platform/tenancy"
	adminv1 "github.com/micromesh/micromesh/proto/admin/v1"
	authv1 "github.com/micromesh/micromesh/proto/auth/v1"
	identityv1 "github.com/micromesh/micromesh/proto/identity/v1"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
	runtimev1 "github.com/micromesh/micromesh/proto/runtime/v1"
	statsv1 "github.com/micromesh/micromesh/proto/stats/v1"
	tapv1 "github.com/micromesh/micromesh/proto/tap/v1"
	tracev1 "github.com/micromesh/micromesh/proto/trace/v1"
	"github.com/micromesh/micromesh/service/auth"
)

// Service is the remote proxy's service name, in the platform's
// namespace.
const Service = "proxy"

// AdminScope lets a token reach every namespace's services.
const AdminScope = "admin"

// loginMethods are the calls the proxy forwards without an access token,
// to the auth service (LoginAuthority): logging in (a secret), a session's
// refresh and its end (a refresh token).
var loginMethods = map[string]bool{
	authv1.AuthService_Token_FullMethodName:   true,
	authv1.AuthService_Refresh_FullMethodName: true,
	authv1.AuthService_Revoke_FullMethodName:  true,
}

// LoginAuthority is the auth service's authority.
const LoginAuthority = "auth." + identity.SystemNamespace

// maxMessage bounds one message either way (the services bound their own).
const maxMessage = 16 << 20

// Options configure a remote proxy.
type Options struct {
	// Addr is where it serves gRPC over TLS (host:port; port 0 picks one).
	Addr string
	// Home is the server's state: the proxy's certificate is minted from
	// its CA.
	Home         home.Dir
	ControlPlane string
	// Metrics, if set, gets the proxy's metrics (the server's /metrics).
	Metrics prometheus.Registerer
	Logger  *slog.Logger
}

// Proxy is a running remote proxy.
type Proxy struct {
	addr     string
	srv      *grpc.Server
	served   chan error
	sidecar  *edge.Sidecar
	conn     *grpc.ClientConn // to the sidecar's outbound
	verifier *auth.Verifier
	m        *edge.Metrics
	log      *slog.Logger
}

// Start joins the mesh as the proxy, starts its sidecar and serves on
// o.Addr.
func Start(ctx context.Context, o Options) (_ *Proxy, err error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	log := o.Logger.With("component", "remote-proxy")
	lis, sc, err := edge.Listen(ctx, edge.Options{Name: Service, Home: o.Home, ControlPlane: o.ControlPlane, Logger: o.Logger}, o.Addr, "remote proxy", "--proxy-addr")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = lis.Close()
		}
	}()
	p := &Proxy{addr: lis.Addr().String(), served: make(chan error, 1), sidecar: sc,
		m: edge.NewMetrics(o.Metrics, "micromesh_remote_proxy", "Calls the remote proxy answered", "grpc_code"), log: log}
	// One HTTP/2 connection to the sidecar carries every call; the
	// authority, per call, picks the service.
	p.conn, err = grpc.NewClient("passthrough:///"+sc.Outbound,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage)))
	if err != nil {
		sc.Stop()
		return nil, err
	}
	keys := authv1.NewAuthServiceClient(p.conn)
	p.verifier = auth.NewVerifier(func(ctx context.Context) (string, error) {
		resp, err := keys.PublicKeys(ctx, &authv1.PublicKeysRequest{}, grpc.CallAuthority(LoginAuthority))
		return resp.GetJwks(), err
	})
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return sc.TLSCertificate(), nil },
	}
	p.srv = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(cfg)),
		grpc.UnknownServiceHandler(p.forward),
		grpc.ForceServerCodecV2(rawcodec.Codec{}),
		grpc.MaxRecvMsgSize(maxMessage), grpc.MaxSendMsgSize(maxMessage),
		grpc.ConnectionTimeout(10*time.Second),
	)
	go func() { p.served <- p.srv.Serve(lis) }()
	log.Info("remote proxy ready", "addr", p.addr, "id", sc.ID.String())
	return p, nil
}

// Addr is where the proxy serves.
func (p *Proxy) Addr() string { return p.addr }

// Stop stops taking calls, lets those in flight finish (a few seconds at
// most: streams are cut), then stops the sidecar.
func (p *Proxy) Stop() {
	done := make(chan struct{})
	go func() { p.srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		p.srv.Stop()
		<-done
	}
	<-p.served
	_ = p.conn.Close()
	p.sidecar.Stop()
}

// forward serves a call, counted and timed by the service it reached.
func (p *Proxy) forward(_ any, ss grpc.ServerStream) error {
	start := time.Now()
	l := &labels{}
	err := p.serve(ss, l)
	code := status.Code(err)
	p.m.Record(l.ns, l.name, code.String(), start)
	if code != codes.OK {
		method, _ := grpc.MethodFromServerStream(ss)
		p.log.Debug("call refused or failed", "method", method, "service", l.name, "namespace", l.ns, "code", code, "err", status.Convert(err).Message())
	}
	return err
}

// labels name the service a call reached, once it is known to exist (no
// label per name a caller makes up).
type labels struct{ ns, name string }

// serve checks a call and relays it to the service its authority names.
func (p *Proxy) serve(ss grpc.ServerStream, l *labels) error {
	ctx := ss.Context()
	method, _ := grpc.MethodFromServerStream(ss)
	in, _ := metadata.FromIncomingContext(ctx)
	name, ns, err := ParseAuthority(first(in, ":authority"))
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	out := grpcrelay.Forwardable(in) // the token goes on only once verified
	login := loginMethods[method] && name == "auth" && ns == identity.SystemNamespace
	if login {
		l.ns, l.name = ns, name
	} else {
		claims, err := p.authenticate(ctx, in)
		if err != nil {
			return err
		}
		if ns == "" {
			ns = claims.Namespace
		}
		if name == "registry" && ns == identity.SystemNamespace && method == registryv1.RegistryService_ListServices_FullMethodName {
			l.ns, l.name = ns, name
			return p.listServices(ss, claims)
		}
		admin := slices.Contains(claims.Scopes, AdminScope)
		if name+"."+ns == ControlPlaneAuthority {
			l.ns, l.name = ns, name
			return p.administer(ctx, ss, method, claims, admin, grpcrelay.Forwardable(in))
		}
		tenanted := ns == identity.SystemNamespace && slices.Contains(tenancy.Services, name)
		if ns == identity.SystemNamespace && !admin && !tenanted {
			return status.Errorf(codes.PermissionDenied, "%s.%s is a platform service: through the remote proxy, for accounts with the scope %s only (others reach their namespace's services, %s in their namespace, and %s's Token, Refresh and Revoke, to log in and out)",
				name, ns, AdminScope, strings.Join(tenancy.Services, ", "), LoginAuthority)
		}
		if ns != claims.Namespace && !admin && !tenanted {
			return status.Errorf(codes.PermissionDenied, "%s may call services of namespace %s, not %s", claims.Subject, claims.Namespace, ns)
		}
		out.Set("authorization", in.Get("authorization")...) // the service reads the user from it
	}
	// Named here, not by the sidecar's 503, which lists every service
	// the proxy can reach, of every namespace.
	if !p.sidecar.Routes(name + "." + ns) {
		return status.Errorf(codes.NotFound, "no service %s in namespace %s (is it running? meshctl services lists them)", name, ns)
	}
	l.ns, l.name = ns, name
	if pr, ok := peer.FromContext(ctx); ok {
		if host, _, err := net.SplitHostPort(pr.Addr.String()); err == nil {
			out.Append("x-forwarded-for", host)
		}
	}
	return p.relay(ctx, ss, method, name+"."+ns, out)
}

// RegistryAuthority names the registry's listing, which the proxy answers
// itself (ListServices, kept to the account's namespace).
const RegistryAuthority = "registry." + identity.SystemNamespace

// listServices answers the registry's ListServices for the account: its
// namespace's services (any namespace's, or all, with the scope admin),
// as the proxy's identity lists them.
func (p *Proxy) listServices(ss grpc.ServerStream, claims *auth.Claims) error {
	var f []byte
	if err := ss.RecvMsg(&f); err != nil {
		return err
	}
	req := &registryv1.ListServicesRequest{}
	if err := proto.Unmarshal(f, req); err != nil {
		return status.Errorf(codes.InvalidArgument, "ListServices: %v", err)
	}
	ns := req.GetNamespace()
	if !slices.Contains(claims.Scopes, AdminScope) {
		if ns == "" {
			ns = claims.Namespace
		}
		if ns != claims.Namespace {
			return status.Errorf(codes.PermissionDenied, "%s may list services of namespace %s, not %s", claims.Subject, claims.Namespace, ns)
		}
	}
	resp, err := registryv1.NewRegistryServiceClient(p.sidecar.ControlPlane).ListServices(ss.Context(), &registryv1.ListServicesRequest{Namespace: ns})
	if err != nil {
		return err
	}
	b, err := proto.Marshal(resp)
	if err != nil {
		return err
	}
	return ss.SendMsg(&b)
}

// ControlPlaneAuthority names the control plane's own APIs — the registry's
// (policies, splits, instances), the admin API (proxy status and config),
// the runtime's (run from git, status, logs, update, kill), the trace
// API (traces, trace), the stats API (stat), the tap API (tap) and the
// identity API's revocation (cert revoke, cert revoked) —, which
// the proxy relays for accounts with the scope admin: meshctl's admin
// commands in a remote environment.
const ControlPlaneAuthority = "controlplane." + identity.SystemNamespace

// administered are the control plane's services an admin account reaches;
// not xDS, and of the identity API only revocation (certificates come from
// join tokens minted on the server's machine).
var administered = []string{registryv1.RegistryService_ServiceDesc.ServiceName, adminv1.AdminService_ServiceDesc.ServiceName,
	runtimev1.RuntimeService_ServiceDesc.ServiceName, tracev1.TraceService_ServiceDesc.ServiceName, statsv1.StatsService_ServiceDesc.ServiceName,
	tapv1.TapService_ServiceDesc.ServiceName}

// administeredMethods are single methods of other control-plane services
// an admin account reaches: meshctl cert revoke and cert revoked.
var administeredMethods = []string{identityv1.IdentityService_Revoke_FullMethodName, identityv1.IdentityService_ListRevoked_FullMethodName}

// administer relays a call to the control plane's APIs, as the proxy's
// platform identity, for an account with the scope admin; each call is
// logged with the account (an audit trail of remote administration).
func (p *Proxy) administer(ctx context.Context, ss grpc.ServerStream, method string, claims *auth.Claims, admin bool, md metadata.MD) error {
	if !admin {
		return status.Errorf(codes.PermissionDenied, "the control plane's API (meshctl policy, split, status, logs, run, …) is for accounts with the scope %s; %s has not got it", AdminScope, claims.Subject)
	}
	svc, _, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
	if !slices.Contains(administered, svc) && !slices.Contains(administeredMethods, method) {
		return status.Errorf(codes.PermissionDenied, "%s is not reachable through the remote proxy (the control plane's %s are, and %s)", method,
			strings.Join(administered, ", "), strings.Join(administeredMethods, ", "))
	}
	p.log.Info("remote administration", "account", claims.Subject, "method", method)
	return grpcrelay.Relay(ctx, ss, p.sidecar.ControlPlane, method, md)
}

// authenticate verifies the call's access token.
func (p *Proxy) authenticate(ctx context.Context, in metadata.MD) (*auth.Claims, error) {
	h := first(in, "authorization")
	scheme, raw, _ := strings.Cut(h, " ")
	if h == "" {
		return nil, status.Error(codes.Unauthenticated, "the remote proxy needs an access token (authorization: Bearer TOKEN): meshctl login ACCOUNT")
	}
	if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(raw) == "" {
		return nil, status.Error(codes.Unauthenticated, "authorization: want Bearer TOKEN")
	}
	claims, err := p.verifier.Verify(ctx, strings.TrimSpace(raw))
	if errors.Is(err, auth.ErrInvalidToken) {
		return nil, status.Errorf(codes.Unauthenticated, "%v (meshctl login ACCOUNT for a new one)", err)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "checking the access token: %v", err)
	}
	return claims, nil
}

// relay runs the call against the service at authority, message by
// message both ways, and answers with its status, headers and trailers.
func (p *Proxy) relay(ctx context.Context, ss grpc.ServerStream, method, authority string, md metadata.MD) error {
	return grpcrelay.Relay(ctx, ss, p.conn, method, md, grpc.CallAuthority(authority))
}

// ParseAuthority reads the service a call's authority names: NAME or
// NAME.NAMESPACE (a port, as a client may add one, is ignored). ns is
// "" when the authority names none.
func ParseAuthority(a string) (name, ns string, err error) {
	if h, _, err := net.SplitHostPort(a); err == nil {
		a = h
	}
	if a == "" {
		return "", "", errors.New("the call names no service: dial the remote proxy with the service as the authority (NAME or NAME.NAMESPACE), as meshctl does")
	}
	name, ns, err = identity.SplitService(a)
	if err != nil {
		return "", "", fmt.Errorf("the call's authority %q: %w", a, err)
	}
	return name, ns, nil
}

func first(md metadata.MD, k string) string {
	if v := md.Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}
