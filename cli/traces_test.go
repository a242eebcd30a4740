package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/internal/meshtest"
)

// runCLIErr is runCLI that also returns what the command wrote on
// standard error.
func runCLIErr(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	return runCLIWithin(t, 30*time.Second, args...)
}

// runCLIWithin is runCLIErr for a command given up to d (one that
// follows something, say).
func runCLIWithin(t *testing.T, d time.Duration, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := NewCommand(Streams{In: strings.NewReader(""), Out: &out, Err: &errOut}, args)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// A user traces one call: meshctl → pingpong → helloworld. The trace has
// the CLI's span, each sidecar's, in one tree — the framework carried the
// trace from pingpong's request to its call of helloworld — although the
// mesh samples no other request.
func TestCallTraceAndShowIt(t *testing.T) {
	env := meshtest.NewEnv(t)
	startExamples(t, env.StartControlPlane(meshtest.WithTracing(0)))
	home := string(env.Home)
	cli := func(args ...string) (string, string, error) {
		return runCLIErr(t, append([]string{"--home", home}, args...)...)
	}

	// An untraced call records nothing.
	if _, _, err := cli("call", "pingpong", "Pingpong.Ping", `{"name":"Ann"}`); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := cli("call", "pingpong", "Pingpong.Ping", `{"name":"Bob"}`, "--trace")
	if err != nil || !strings.Contains(out, "Hello Bob") {
		t.Fatalf("call --trace: %q %v", out, err)
	}
	m := regexp.MustCompile(`trace ([0-9a-f]{32}) \(meshctl trace ([0-9a-f]{32})\)`).FindStringSubmatch(stderr)
	if m == nil || m[1] != m[2] {
		t.Fatalf("call --trace said %q; want its trace ID", stderr)
	}
	id := m[1]

	var spans []spanJSON
	for deadline := time.Now().Add(15 * time.Second); ; {
		out, _, err = cli("trace", id, "-o", "json")
		if err == nil {
			if err := json.Unmarshal([]byte(out), &spans); err != nil {
				t.Fatalf("%q: %v", out, err)
			}
			if len(spans) == 4 || time.Now().After(deadline) {
				break
			}
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	want := []struct{ service, kind, name string }{
		{"meshctl.micromesh", "CLIENT", "meshctl call pingpong Pingpong.Ping"},
		{"pingpong.default", "SERVER", "examples.pingpong.v1.Pingpong/Ping"},
		{"pingpong.default", "CLIENT", "examples.helloworld.v1.Helloworld/Call"},
		{"helloworld.default", "SERVER", "examples.helloworld.v1.Helloworld/Call"},
	}
	if len(spans) != len(want) {
		t.Fatalf("trace %s has %d spans, want %d: %+v", id, len(spans), len(want), spans)
	}
	for i, w := range want {
		s := spans[i]
		if s.Service != w.service || s.Kind != w.kind || s.Name != w.name {
			t.Errorf("span %d: %s %s %q; want %s %s %q", i, s.Service, s.Kind, s.Name, w.service, w.kind, w.name)
		}
		if i > 0 && s.ParentID != spans[i-1].SpanID {
			t.Errorf("span %d (%s %s) has parent %s, want the span before it, %s: the chain is broken", i, s.Service, s.Kind, s.ParentID, spans[i-1].SpanID)
		}
		if s.Error {
			t.Errorf("span %d failed: %s", i, s.Message)
		}
	}
	if spans[3].Attributes["rpc.grpc.status_code"] != "0" {
		t.Errorf("helloworld's span: attributes %v", spans[3].Attributes)
	}

	// The text form: a tree in time.
	out, _, err = cli("trace", id)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"trace " + id + ": 4 spans", "meshctl.micromesh", "      examples.helloworld.v1.Helloworld/Call", "200 grpc OK"} {
		if !strings.Contains(out, line) {
			t.Errorf("meshctl trace does not show %q:\n%s", line, out)
		}
	}
	// Listed, by any service it crossed; the untraced call is not.
	out, _, err = cli("traces", "--service", "helloworld")
	if err != nil || !strings.Contains(out, id) || strings.Count(out, "\n") != 2 {
		t.Errorf("traces --service helloworld: %q %v; want one trace, %s", out, err, id)
	}
	if out, _, _ := cli("traces", "--errors"); !strings.Contains(out, "no traces recorded") {
		t.Errorf("traces --errors: %q; want none", out)
	}

	// Bad input says what is wrong.
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"trace", "xyz"}, "32 hex digits"},
		{[]string{"trace", strings.Repeat("0", 31) + "1", "--wait", "0s"}, "NotFound"},
		{[]string{"traces", "--limit", "0"}, "from 1 to 1000"},
		{[]string{"traces", "--service", "Bad_Name"}, "DNS label"},
		{[]string{"call", "pingpong", "Pingpong.Ping", "{}", "--trace", "--metadata", "traceparent=x"}, "reserved"},
		{[]string{"server", "--traces-forward", "jaeger:4317"}, "http://HOST:PORT"},
		{[]string{"server", "--trace-sampling", "150"}, "0 to 100"},
		{[]string{"server", "--traces-max-spans", "0"}, "must be positive"},
	} {
		_, _, err := cli(tc.args...)
		if err == nil || !strings.Contains(describe(err), tc.says) {
			t.Errorf("%v: %v; want an error saying %q", tc.args, err, tc.says)
		}
	}
}
