package cli

import (
	"strings"
	"testing"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	hellohandler "github.com/micromesh/micromesh/examples/helloworld/handler"
	hellopb "github.com/micromesh/micromesh/examples/helloworld/proto"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/testsvc"
	"github.com/micromesh/micromesh/service"
)

// Every running service is a command: its endpoints subcommands, their
// request's fields flags, as in Micro's CLI.
func TestEveryServiceIsACommand(t *testing.T) {
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	home := string(env.Home)
	hello := func(s *service.Service) { hellopb.RegisterHelloworldServer(s.Server(), hellohandler.Helloworld{}) }
	cp.StartService("default", "helloworld", hello)
	cp.StartService("prod", "helloworld", hello)
	cp.StartService("default", "tester", func(s *service.Service) { testgrpc.RegisterTestServiceServer(s.Server(), testsvc.Service{}) })
	run := func(args ...string) (string, error) { return runCLI(t, append([]string{"--home", home}, args...)...) }

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"helloworld", "call", "--name", "Alice"}, `{"msg":"Hello Alice"}` + "\n"},
		{[]string{"helloworld", "call", "--name=Bo", "--timeout", "5s", "--metadata", "tenant=acme"}, `{"msg":"Hello Bo"}` + "\n"},
		{[]string{"helloworld", "Helloworld", "Call", `{"name":"Cy"}`}, `{"msg":"Hello Cy"}` + "\n"},
		{[]string{"helloworld.prod", "call", "--name", "Di"}, `{"msg":"Hello Di"}` + "\n"},
		{[]string{"helloworld", "-n", "prod", "call", "--name", "Ed"}, `{"msg":"Hello Ed"}` + "\n"},
		{[]string{"tester", "unarycall", "--responseSize", "3", "--fillUsername"}, `{"username":"size 3"}` + "\n"},
		{[]string{"tester", "streamingoutputcall", "--responseParameters", `{"size":1}`, "--response_parameters", `{"size":2}`},
			`{"payload":{"body":"AA=="}}` + "\n" + `{"payload":{"body":"AAA="}}` + "\n"},
		{[]string{"tester", "streaminginputcall", `[{"payload":{"body":"AAAA"}},{"payload":{}}]`}, `{"aggregatedPayloadSize":3}` + "\n"},
	} {
		out, err := run(tc.args...)
		if err != nil || out != tc.want {
			t.Errorf("meshctl %s: %q %v, want %q", strings.Join(tc.args, " "), out, err, tc.want)
		}
	}

	// Help: the service's endpoints as commands, an endpoint's fields as flags.
	for _, tc := range []struct {
		args    []string
		mention []string
	}{
		{[]string{"helloworld"}, []string{"Usage: meshctl helloworld ENDPOINT", "call  Helloworld.Call  --name string"}},
		{[]string{"tester", "--help"}, []string{"unarycall", "--responseSize int32", "--responseParameters grpc.testing.ResponseParameters...", "streaminginputcall", "[JSON ...]"}},
		{[]string{"helloworld", "call", "--help"}, []string{"Usage: meshctl helloworld call", "--name  string", "Response examples.helloworld.v1.CallResponse: {msg string}"}},
	} {
		out, err := run(tc.args...)
		for _, m := range tc.mention {
			if err != nil || !strings.Contains(out, m) {
				t.Errorf("meshctl %s: %v\n%s\nwant it to mention %q", strings.Join(tc.args, " "), err, out, m)
			}
		}
	}

	// Bad input: each says what is wrong and what would be right.
	for _, tc := range []struct {
		args    []string
		mention []string
	}{
		{[]string{"helloworld", "shout"}, []string{`"shout" names no endpoint of helloworld`, "meshctl helloworld lists them"}},
		{[]string{"tester", "call"}, []string{`"call" names no endpoint`}},
		{[]string{"helloworld", "call", "--nom", "x"}, []string{`"nom" is not a field (fields: name)`}},
		{[]string{"tester", "unarycall", "--responseSize", "big"}, []string{`field responseSize: "big" is not a number`}},
		{[]string{"helloworld", "call", "--name", "A", `{"name":"B"}`}, []string{"not both"}},
		{[]string{"helloworld", "call", "-x"}, []string{"unknown flag -x"}},
		{[]string{"helloworld", "call", "--timeout"}, []string{"--timeout needs a value"}},
		{[]string{"helloworld", "call"}, []string{"InvalidArgument", "name is required"}},
		{[]string{"tester", "streaminginputcall", "--payload", "{}"}, []string{"takes a stream of requests"}},
		{[]string{"nosuch", "call"}, []string{`service "nosuch" is not running`, "helloworld"}},
		{[]string{"sevrices"}, []string{`unknown command "sevrices" (did you mean services?)`}},
		{[]string{"Hello"}, []string{`unknown command "Hello"`}},
	} {
		_, err := run(tc.args...)
		for _, m := range tc.mention {
			if err == nil || !strings.Contains(describe(err), m) {
				t.Errorf("meshctl %s: %v; want an error mentioning %q", strings.Join(tc.args, " "), err, m)
			}
		}
	}
}
