package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/dataplane"
	hellohandler "github.com/micromesh/micromesh/examples/helloworld/handler"
	hellopb "github.com/micromesh/micromesh/examples/helloworld/proto"
	pinghandler "github.com/micromesh/micromesh/examples/pingpong/handler"
	pingpb "github.com/micromesh/micromesh/examples/pingpong/proto"
	"github.com/micromesh/micromesh/internal/envconfig"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/testsvc"
	"github.com/micromesh/micromesh/service"
)

// startExamples runs helloworld and pingpong behind their sidecars on cp;
// pingpong calls helloworld through its sidecar's outbound address, which
// the runtime would hand it as MESH_PROXY.
func startExamples(t *testing.T, cp *meshtest.ControlPlane, opts ...meshtest.SidecarOption) {
	t.Helper()
	cp.StartService("default", "helloworld", func(s *service.Service) {
		hellopb.RegisterHelloworldServer(s.Server(), hellohandler.Helloworld{})
	}, opts...)
	outbound := "127.0.0.1:" + strconv.Itoa(meshtest.FreePort(t))
	t.Setenv(envconfig.Proxy, outbound)
	conn, err := service.Dial(t.Context(), "helloworld")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	cp.StartService("default", "pingpong", func(s *service.Service) {
		pingpb.RegisterPingpongServer(s.Server(), &pinghandler.Pingpong{Hello: hellopb.NewHelloworldClient(conn)})
	}, append(opts, meshtest.WithOptions(func(o *dataplane.Options) { o.Outbound = outbound }))...)
}

// The examples run behind their sidecars; the CLI describes and calls them
// through the mesh, and pingpong reaches helloworld through its own
// sidecar.
func TestCallAndDescribeThroughTheMesh(t *testing.T) {
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	startExamples(t, cp)
	home := string(env.Home)

	call := func(args ...string) (string, error) {
		return runCLI(t, append([]string{"--home", home, "call"}, args...)...)
	}
	out, err := call("helloworld", "Helloworld.Call", `{"name":"Alice"}`)
	if err != nil || out != `{"msg":"Hello Alice"}`+"\n" {
		t.Fatalf("call helloworld: %q %v", out, err)
	}
	out, err = call("pingpong", "Pingpong.Ping", `{"name":"Bob"}`)
	if err != nil || out != `{"msg":"Hello Bob"}`+"\n" {
		t.Fatalf("call pingpong: %q %v", out, err)
	}
	// Full names work too.
	if out, err := call("helloworld", "/examples.helloworld.v1.Helloworld/Call", `{"name":"Carol"}`, "--metadata", "tenant=acme"); err != nil || !strings.Contains(out, "Hello Carol") {
		t.Fatalf("full name: %q %v", out, err)
	}

	// Bad input: each says what is wrong and what would be right.
	for _, tc := range []struct {
		args    []string
		mention []string
	}{
		{[]string{"nosuch", "X.Y", "{}"}, []string{`service "nosuch" is not running`, "helloworld", "pingpong"}},
		{[]string{"helloworld", "Helloworld.Nope", "{}"}, []string{`unknown endpoint "Helloworld.Nope"`, "Helloworld.Call"}},
		{[]string{"helloworld", "Helloworld.Call", `{"name":}`}, []string{"request JSON", "line 1:9"}},
		{[]string{"helloworld", "Helloworld.Call", `{"nom":"x"}`}, []string{"request JSON", `unknown field "nom"`}},
		{[]string{"helloworld", "Helloworld.Call", `{}`}, []string{"InvalidArgument", "name is required"}},
		{[]string{"pingpong", "Pingpong.Ping", `{}`}, []string{"InvalidArgument", "name is required"}},
		{[]string{"helloworld", "Helloworld.Call", "--metadata", "novalue"}, []string{"key=value"}},
		{[]string{"Hello", "Helloworld.Call"}, []string{"service"}},
	} {
		_, err := call(tc.args...)
		for _, m := range tc.mention {
			if err == nil || !strings.Contains(describe(err), m) {
				t.Errorf("call %q: %v; want an error mentioning %q", tc.args, err, m)
			}
		}
	}

	// --as pingpong: the call goes through a sidecar of pingpong's and
	// meets what pingpong's calls meet — here an operator's fault on
	// helloworld —, where the direct call does not; from another
	// namespace helloworld is not reachable at all.
	if err := cp.Registry().SetPolicy(t.Context(), registry.Policy{Service: "helloworld", Keys: map[string]string{"fault_abort_grpc": "9"}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err = call("helloworld", "Helloworld.Call", `{"name":"Dan"}`, "--as", "pingpong")
		if err != nil && strings.Contains(describe(err), "FailedPrecondition") && strings.Contains(describe(err), "fault filter abort") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("call --as pingpong with helloworld's fault set: %v; want FailedPrecondition from the fault filter", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := call("helloworld", "Helloworld.Call", `{"name":"Dan"}`); err != nil || !strings.Contains(out, "Hello Dan") {
		t.Errorf("the direct call with helloworld's fault set: %q %v; want the answer (no caller's sidecar, no fault)", out, err)
	}
	if err := cp.Registry().DeletePolicy(t.Context(), "default", "helloworld"); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(15 * time.Second)
	for {
		out, err = call("helloworld", "Helloworld.Call", `{"name":"Eve"}`, "--as", "pingpong")
		if err == nil && out == `{"msg":"Hello Eve"}`+"\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("call --as pingpong with the fault cleared: %q %v", out, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, tc := range []struct {
		as      string
		mention []string
	}{
		{"pingpong.other", []string{"Unavailable", `"helloworld.default" is not a service in the mesh this workload can call`}},
		{"Ping", []string{`--as: "Ping" is not a service (write name or name.namespace)`}},
		{"pingpong.", []string{`--as: "pingpong." is not a service`, "namespace is empty"}},
	} {
		_, err := call("helloworld", "Helloworld.Call", `{"name":"Fay"}`, "--as", tc.as)
		for _, m := range tc.mention {
			if err == nil || !strings.Contains(describe(err), m) {
				t.Errorf("call --as %s: %v; want an error mentioning %q", tc.as, err, m)
			}
		}
	}

	out, err = runCLI(t, "--home", home, "describe", "helloworld")
	if err != nil || !strings.Contains(out, "Helloworld.Call") || !strings.Contains(out, "{name string}") || !strings.Contains(out, "{msg string}") {
		t.Fatalf("describe:\n%s%v", out, err)
	}
	if strings.Contains(out, "Health") || strings.Contains(out, "Reflection") {
		t.Errorf("describe lists the platform's endpoints:\n%s", out)
	}
	out, err = runCLI(t, "--home", home, "-o", "json", "describe", "pingpong")
	var eps []struct {
		Name    string `json:"name"`
		Request struct {
			Fields []struct{ Name, Type string } `json:"fields"`
		} `json:"request"`
	}
	if err != nil || json.Unmarshal([]byte(out), &eps) != nil || len(eps) != 1 || eps[0].Name != "Pingpong.Ping" || eps[0].Request.Fields[0].Name != "name" {
		t.Fatalf("describe -o json:\n%s%v", out, err)
	}
}

// shadowHello is a new version of helloworld that records what it is
// sent and by whom.
type shadowHello struct {
	hellopb.UnimplementedHelloworldServer
	got chan string
}

func (s shadowHello) Call(ctx context.Context, req *hellopb.CallRequest) (*hellopb.CallResponse, error) {
	s.got <- req.GetName() + " from " + service.Caller(ctx)
	return &hellopb.CallResponse{Msg: "Hi " + req.GetName()}, nil
}

// A user shadows a new version: `meshctl policy set helloworld
// mirror=helloworld-next`, then a call as pingpong gets helloworld's
// answer while helloworld-next gets a copy (gRPC: the body streams from
// the caller and is kept for the copy) from pingpong.
func TestShadowANewVersion(t *testing.T) {
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	home := string(env.Home)
	cp.StartService("default", "helloworld", func(s *service.Service) {
		hellopb.RegisterHelloworldServer(s.Server(), hellohandler.Helloworld{})
	})
	next := shadowHello{got: make(chan string, 16)}
	cp.StartService("default", "helloworld-next", func(s *service.Service) { hellopb.RegisterHelloworldServer(s.Server(), next) })
	if out, err := runCLI(t, "--home", home, "policy", "set", "helloworld", "mirror=helloworld-next"); err != nil {
		t.Fatalf("policy set: %q %v", out, err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for n := 0; ; n++ {
		out, err := runCLI(t, "--home", home, "call", "helloworld", "Helloworld.Call", fmt.Sprintf(`{"name":"Gus%d"}`, n), "--as", "pingpong")
		if err != nil || out != fmt.Sprintf(`{"msg":"Hello Gus%d"}`, n)+"\n" {
			t.Fatalf("call --as pingpong: %q %v; want helloworld's answer", out, err)
		}
		select {
		case got := <-next.got:
			if want := fmt.Sprintf("Gus%d from spiffe://micromesh.local/ns/default/svc/pingpong", n); got != want {
				t.Fatalf("helloworld-next got %q, want %q", got, want)
			}
			return
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("helloworld-next got no copy of pingpong's calls to helloworld")
		}
	}
}

// meshctl call sends a stream of requests: a JSON array, or one per line
// of standard input, straight to an instance or as another service.
func TestCallStreams(t *testing.T) {
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	home := string(env.Home)
	cp.StartService("default", "tester", func(s *service.Service) { testgrpc.RegisterTestServiceServer(s.Server(), testsvc.Service{}) })

	out, err := runCLI(t, "--home", home, "call", "tester", "TestService.StreamingInputCall", `[{"payload":{"body":"AAA="}},{},{"payload":{"body":"AAAAAA=="}}]`)
	if err != nil || out != `{"aggregatedPayloadSize":6}`+"\n" {
		t.Fatalf("client stream from an array: %q %v", out, err)
	}
	stdin := func(in string, args ...string) (string, error) {
		var o, e bytes.Buffer
		cmd := NewRootCommand(Streams{In: strings.NewReader(in), Out: &o, Err: &e})
		cmd.SetArgs(append([]string{"--home", home, "call"}, args...))
		err := cmd.ExecuteContext(t.Context())
		return o.String(), err
	}
	for _, as := range [][]string{nil, {"--as", "client"}} {
		out, err = stdin("{\"responseParameters\":[{\"size\":1}]}\n\n{\"responseParameters\":[{\"size\":2},{\"size\":0}]}\n",
			append([]string{"tester", "TestService.FullDuplexCall", "-"}, as...)...)
		if want := `{"payload":{"body":"AA=="}}` + "\n" + `{"payload":{"body":"AAA="}}` + "\n" + `{"payload":{}}` + "\n"; err != nil || out != want {
			t.Errorf("bidi stream from stdin %v: %q %v, want %q", as, out, err, want)
		}
	}
	for _, tc := range []struct {
		args    []string
		mention string
	}{
		{[]string{"tester", "TestService.StreamingInputCall", `{"payload":{}}`}, "give a JSON array of them"},
		{[]string{"tester", "TestService.StreamingInputCall", `[{},{"nope":1}]`}, `message 2: request JSON`},
	} {
		if _, err := runCLI(t, append([]string{"--home", home, "call"}, tc.args...)...); err == nil || !strings.Contains(describe(err), tc.mention) {
			t.Errorf("call %q: %v; want an error mentioning %q", tc.args, err, tc.mention)
		}
	}
}
