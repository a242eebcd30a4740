package auth_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/examples/helloworld/handler"
	pb "github.com/micromesh/micromesh/examples/helloworld/proto"
	"github.com/micromesh/micromesh/internal/meshclient"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/poll"
	"github.com/micromesh/micromesh/internal/tokentest"
	authv1 "github.com/micromesh/micromesh/proto/auth/v1"
	"github.com/micromesh/micromesh/service"
	"github.com/micromesh/micromesh/xds"
)

// A service's policy asks its callers for accounts' access tokens
// (`meshctl policy set billing scopes='*' '/refund/*:scopes=finance'`):
// billing's own sidecar verifies the token a request carries with the auth
// service's keys (which the control plane put in its config) and admits
// the request by the account's namespace and scopes — whichever workload
// sends it. Tokens come from the real auth service; every call crosses
// two real sidecars over QUIC.
func TestAServicesScopesAskForAccountsTokens(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	cp.StartPlatform()
	seen := make(chan string, 100) // the Authorization billing's app got
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("Authorization")
		_, _ = io.WriteString(w, "billing "+r.URL.Path)
	}))
	t.Cleanup(app.Close)
	cp.StartSidecar("default", "billing", meshtest.WithApp(strings.TrimPrefix(app.URL, "http://"), "http"))
	web := cp.StartSidecar("default", "web", meshtest.WithApp(strings.TrimPrefix(app.URL, "http://"), "http"))

	conn, err := meshclient.DialService(t.Context(), cp.Home(), cp.Info.Address, "micromesh", "auth")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	accounts := authv1.NewAuthServiceClient(conn)
	tokens := map[string]string{}
	for _, a := range []*authv1.Account{
		{Name: "alice"}, // default, no scopes
		{Name: "fin", Scopes: []string{"finance"}},                          // default, finance
		{Name: "bob", Namespace: "shop", Scopes: []string{"finance"}},       // another namespace
		{Name: "root", Namespace: "shop", Scopes: []string{xds.AdminScope}}, // admin: everywhere
	} {
		secret := a.Name + "'s long secret"
		if _, err := accounts.CreateAccount(t.Context(), &authv1.CreateAccountRequest{Account: a, Secret: secret}); err != nil {
			t.Fatal(err)
		}
		resp, err := accounts.Token(t.Context(), &authv1.TokenRequest{Name: a.Name, Namespace: a.Namespace, Secret: secret, Ttl: durationpb.New(10 * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		tokens[a.Name] = resp.GetAccessToken()
	}
	good := tokens["fin"]
	tokens["tampered"] = good[:len(good)-4] + flip(good[len(good)-4:])
	tokens["foreign"] = foreignToken(t, "fin", "default", "finance")

	call := func(token, path string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+web.Info.Outbound+path, nil)
		req.Host = "billing"
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	poll.Until(t, "web to reach billing", 15*time.Second, 20*time.Millisecond, func() bool { c, _ := call("", "/"); return c == 200 })
	drain(seen)

	setPolicy := func(keys map[string]string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := cp.Registry().SetPolicy(ctx, registry.Policy{Service: "billing", Keys: keys}); err != nil {
			t.Fatal(err)
		}
	}
	setPolicy(map[string]string{"scopes": "*", "/refund/*:scopes": "finance"})
	poll.Until(t, "billing's sidecar to ask for a token", 15*time.Second, 20*time.Millisecond, func() bool { c, _ := call("", "/charge"); return c == 403 })
	drain(seen)

	for _, c := range []struct {
		who, path string
		code      int
		says      string
	}{
		{"", "/charge", 403, "needs an account's access token"},
		{"alice", "/charge", 200, "billing /charge"},
		{"alice", "/refund/7", 403, "account alice of namespace default (scopes: none) may not call GET /refund/7"},
		{"fin", "/refund/7", 200, "billing /refund/7"},
		{"bob", "/charge", 403, "account bob of namespace shop"},
		{"root", "/refund/7", 200, "billing /refund/7"},
		{"tampered", "/charge", 401, "bad signature"},
		{"foreign", "/charge", 401, "signed with a key the mesh does not know"},
		{"not-a-jwt", "/charge", 401, "is not a JWT"},
	} {
		token := tokens[c.who]
		if c.who == "not-a-jwt" {
			token = "abc"
		}
		code, body := call(token, c.path)
		if code != c.code || !strings.Contains(body, c.says) {
			t.Errorf("%s %s: %d %q; want %d saying %q", c.who, c.path, code, body, c.code, c.says)
		}
		if code == 200 {
			if got := <-seen; got != "Bearer "+token {
				t.Errorf("%s: billing's app got Authorization %q; want the token passed on", c.who, got)
			}
		}
	}

	// A gRPC service: the same refusals as gRPC statuses.
	cp.StartService("default", "helloworld", func(s *service.Service) { pb.RegisterHelloworldServer(s.Server(), handler.Helloworld{}) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cp.Registry().SetPolicy(ctx, registry.Policy{Service: "helloworld", Keys: map[string]string{"scopes": "finance"}}); err != nil {
		t.Fatal(err)
	}
	hello := pb.NewHelloworldClient(meshtest.DialThrough(t, web.Info.Outbound, "helloworld"))
	poll.Until(t, "helloworld's sidecar to ask for a token", 15*time.Second, 20*time.Millisecond, func() bool {
		_, err := hello.Call(ctx, &pb.CallRequest{Name: "x"})
		return status.Code(err) == codes.PermissionDenied
	})
	// What describes the service needs no token: health, and reflection
	// (which meshctl call and the gateway read to encode a call).
	if _, err := healthpb.NewHealthClient(meshtest.DialThrough(t, web.Info.Outbound, "helloworld")).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("helloworld's health without a token: %v", err)
	}
	for who, want := range map[string]codes.Code{"": codes.PermissionDenied, "alice": codes.PermissionDenied, "fin": codes.OK, "tampered": codes.Unauthenticated} {
		cctx := ctx
		if who != "" {
			cctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tokens[who])
		}
		if _, err := hello.Call(cctx, &pb.CallRequest{Name: "x"}); status.Code(err) != want {
			t.Errorf("helloworld as %q: %v; want %v", who, err, want)
		}
	}

	// Cleared, billing takes any call again.
	if err := cp.Registry().DeletePolicy(ctx, "default", "billing"); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, "billing to take calls without a token", 15*time.Second, 20*time.Millisecond, func() bool { c, _ := call("", "/refund/1"); return c == 200 })
}

// flip changes a base64url string's characters, so a signature no longer
// matches.
func flip(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
	}
	return string(b)
}

// foreignToken is a well-formed token with the claims the auth service
// would give, signed with a key the mesh does not know.
func foreignToken(t *testing.T, name, ns string, scopes ...string) string {
	t.Helper()
	return tokentest.New(t, "someone-elses").Sign(t, tokentest.Account(time.Now(), "micromesh.local", ns, name, scopes...))
}

func drain(ch chan string) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}
