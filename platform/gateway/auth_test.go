package gateway_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/micromesh/micromesh/dataplane"
	"github.com/micromesh/micromesh/examples/helloworld/handler"
	pb "github.com/micromesh/micromesh/examples/helloworld/proto"
	"github.com/micromesh/micromesh/internal/envconfig"
	"github.com/micromesh/micromesh/internal/meshclient"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/poll"
	"github.com/micromesh/micromesh/internal/testsvc"
	"github.com/micromesh/micromesh/platform/gateway"
	authv1 "github.com/micromesh/micromesh/proto/auth/v1"
	"github.com/micromesh/micromesh/service"
)

// With --gateway-auth required, a request needs an access token of an
// account, which keeps it to the account's namespace (an admin-scoped
// one's reaches all); the token comes from meshctl auth token or the
// gateway's own /_/token.
func TestGatewayAuth(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	cp.StartPlatform()
	hello := func(s *service.Service) { pb.RegisterHelloworldServer(s.Server(), handler.Helloworld{}) }
	cp.StartService("default", "helloworld", hello)
	cp.StartService("shop", "helloworld", hello)
	// whoami answers with the user its call is for (service/auth.User),
	// reaching the auth service through its own sidecar for the keys.
	outbound := "127.0.0.1:" + strconv.Itoa(meshtest.FreePort(t))
	t.Setenv(envconfig.Proxy, outbound)
	cp.StartService("default", "whoami", func(s *service.Service) { pb.RegisterHelloworldServer(s.Server(), testsvc.Whoami{}) },
		meshtest.WithOptions(func(o *dataplane.Options) { o.Outbound = outbound }))
	reg := prometheus.NewRegistry()
	gw, err := gateway.Start(t.Context(), gateway.Options{Addr: "127.0.0.1:0", Home: cp.Home(), ControlPlane: cp.Info.Address, Auth: gateway.AuthRequired, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Stop)
	m := &mesh{cp: cp, base: gw.URL(), client: http.DefaultClient, metrics: reg}

	conn, err := meshclient.DialService(t.Context(), cp.Home(), cp.Info.Address, "micromesh", "auth")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	accounts := authv1.NewAuthServiceClient(conn)
	for _, a := range []*authv1.CreateAccountRequest{
		{Account: &authv1.Account{Name: "alice"}, Secret: "alice's secret"},
		{Account: &authv1.Account{Name: "ops", Namespace: "shop", Scopes: []string{gateway.AdminScope}}, Secret: "ops's own secret"},
	} {
		if _, err := accounts.CreateAccount(t.Context(), a); err != nil {
			t.Fatal(err)
		}
	}

	// The token, from the gateway.
	token := func(body string) (int, string) {
		code, out := m.do(t, "POST", gateway.TokenPath, "application/json", body)
		var resp struct {
			AccessToken string `json:"access_token"`
		}
		_ = json.Unmarshal([]byte(out), &resp)
		if resp.AccessToken != "" {
			return code, resp.AccessToken
		}
		return code, out
	}
	code, alice := token(`{"name":"alice","secret":"alice's secret","ttl":"10m"}`)
	if code != 200 {
		t.Fatalf("POST %s: %d %s", gateway.TokenPath, code, alice)
	}
	_, ops := token(`{"name":"ops","namespace":"shop","secret":"ops's own secret"}`)
	if code, body := token(`{"name":"alice","secret":"a wrong secret"}`); code != 401 || !strings.Contains(body, "wrong account name or secret") {
		t.Errorf("a wrong secret: %d %s", code, body)
	}
	if code, body := token(`{"name":"alice","password":"x"}`); code != 400 || !strings.Contains(body, `unknown field \"password\"`) {
		t.Errorf("a malformed body: %d %s", code, body)
	}

	// A session: refresh and revoke through the gateway too.
	code, body := m.do(t, "POST", gateway.TokenPath, "application/json", `{"name":"alice","secret":"alice's secret","refresh":true}`)
	var sess struct {
		AccessToken    string `json:"access_token"`
		RefreshToken   string `json:"refresh_token"`
		RefreshExpires string `json:"refresh_expires"`
	}
	if err := json.Unmarshal([]byte(body), &sess); code != 200 || err != nil || sess.RefreshToken == "" || sess.RefreshExpires == "" {
		t.Fatalf("a login with a session: %d %s", code, body)
	}
	code, body = m.do(t, "POST", gateway.RefreshPath, "application/json", `{"refresh_token":"`+sess.RefreshToken+`","ttl":"5m"}`)
	var renewed struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.Unmarshal([]byte(body), &renewed); code != 200 || err != nil || renewed.AccessToken == "" || renewed.RefreshToken == sess.RefreshToken {
		t.Fatalf("refresh: %d %s", code, body)
	}
	if code, body := m.do(t, "POST", gateway.RefreshPath, "application/json", `{"refresh_token":"`+sess.RefreshToken+`"}`); code != 401 || !strings.Contains(body, "already used") {
		t.Errorf("a traded refresh token again: %d %s", code, body)
	}
	if code, body := m.do(t, "POST", gateway.RevokePath, "application/json", `{"refresh_token":"`+renewed.RefreshToken+`"}`); code != 200 || !strings.Contains(body, `"revoked":true`) {
		t.Errorf("revoke: %d %s", code, body)
	}
	if code, body := m.do(t, "GET", gateway.RefreshPath, "", ""); code != 405 || !strings.Contains(body, "refresh_token") {
		t.Errorf("GET %s: %d %s", gateway.RefreshPath, code, body)
	}

	poll.Until(t, "the gateway routes to both helloworlds", 10*time.Second, 20*time.Millisecond, func() bool {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", m.base+"/", nil)
		req.Header.Set("Authorization", "Bearer "+ops)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var idx struct{ Services []struct{ Path string } }
		_ = json.NewDecoder(resp.Body).Decode(&idx)
		return len(idx.Services) == 3
	})

	tampered := alice[:len(alice)-6] + "AAAAAA"
	if strings.HasSuffix(alice, "AAAAAA") {
		tampered = alice[:len(alice)-6] + "BBBBBB"
	}
	for _, tc := range []struct {
		name, path, authorization string
		code                      int
		want                      string
	}{
		{"no token", "/helloworld/call", "", 401, "this gateway needs an access token"},
		{"alice in her namespace", "/helloworld/call", "Bearer " + alice, 200, `{"msg":"Hello Ada"}`},
		{"alice in another", "/helloworld.shop/call", "Bearer " + alice, 403, "spiffe://micromesh.local/ns/default/user/alice may call services of namespace default, not shop"},
		{"an admin anywhere", "/helloworld/call", "Bearer " + ops, 200, `{"msg":"Hello Ada"}`},
		{"a tampered token", "/helloworld/call", "Bearer " + tampered, 401, "the signature does not verify"},
		{"not a bearer token", "/helloworld/call", "Basic YWxpY2U6c2VjcmV0", 401, "invalid access token"},
		{"alice's index", "/", "Bearer " + alice, 200, `{"services":[{"name":"helloworld","namespace":"default","path":"/helloworld"},{"name":"whoami","namespace":"default","path":"/whoami"}]}`},
		{"the service knows the user", "/whoami/call", "Bearer " + alice, 200, `{"msg":"spiffe://micromesh.local/ns/default/user/alice"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := "POST"
			if tc.path == "/" {
				method = "GET"
			}
			var header map[string]string
			if tc.authorization != "" {
				header = map[string]string{"Authorization": tc.authorization}
			}
			resp, body := m.send(t, method, tc.path, `{"name":"Ada"}`, header)
			if resp.StatusCode != tc.code || !strings.Contains(body, tc.want) {
				t.Errorf("%d %s, want %d with %s", resp.StatusCode, body, tc.code, tc.want)
			}
			if tc.code == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), `Bearer realm="micromesh"`) {
				t.Errorf("401 without a Bearer challenge: %q", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	// The platform's store (config, broker, events) for accounts: in the
	// account's namespace, the token passed on binding the store to it.
	as := func(token, path, body string) (int, string) {
		resp, b := m.send(t, "POST", path, body, map[string]string{"Authorization": "Bearer " + token})
		return resp.StatusCode, b
	}
	if code, body := as(alice, "/store.micromesh/write", `{"record":{"key":"greeting","value":"aGk="}}`); code != 200 {
		t.Errorf("alice writes the store: %d %s", code, body)
	}
	if code, body := as(alice, "/store.micromesh/read", `{"key":"greeting"}`); code != 200 || !strings.Contains(body, `"aGk="`) {
		t.Errorf("alice reads the store: %d %s", code, body)
	}
	if code, body := as(ops, "/store.micromesh/read", `{"scope":{"database":"default","table":"default"},"key":"greeting"}`); code != 200 || !strings.Contains(body, `"aGk="`) {
		t.Errorf("ops (admin) reads alice's record in database default, table default: %d %s", code, body)
	}
	if code, body := as(alice, "/store.micromesh/read", `{"scope":{"database":"shop"},"key":"greeting"}`); code != 403 || !strings.Contains(body, "not shop") {
		t.Errorf("alice reads shop's database: %d %s; want 403", code, body)
	}
	if code, body := as(alice, "/auth.micromesh/accounts", `{}`); code != 403 || !strings.Contains(body, "not micromesh") {
		t.Errorf("alice calls the auth service's account management: %d %s; want 403", code, body)
	}

	// Refusals of the token check are counted too (with no service label:
	// an unauthenticated request names none that counts).
	if got := m.count(t, "micromesh_gateway_requests_total", `namespace="",response_code="401",service=""`); got < 3 {
		t.Errorf("401s counted: %v, want at least 3", got)
	}
}
