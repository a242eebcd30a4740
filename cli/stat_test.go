package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/dataplane"
	"github.com/micromesh/micromesh/internal/meshtest"
)

// A user calls pingpong (which calls helloworld) and asks how the
// services are doing. (pingpong counts more than three requests: meshctl
// call reads its endpoints by reflection first.) They see
// each one's success, rate and latency, and the call
// from pingpong to helloworld.
func TestStatShowsServicesAndCalls(t *testing.T) {
	env := meshtest.NewEnv(t)
	startExamples(t, env.StartControlPlane(), meshtest.WithOptions(func(o *dataplane.Options) { o.StatsInterval = 200 * time.Millisecond }))
	home := string(env.Home)
	cli := func(args ...string) (string, error) { return runCLI(t, append([]string{"--home", home}, args...)...) }
	for range 3 {
		if _, err := cli("call", "pingpong", "Pingpong.Ping", `{"name":"Ann"}`); err != nil {
			t.Fatal(err)
		}
	}

	var st statJSON
	find := func() (ping, hello *serviceStatJSON, call *callStatJSON) {
		for i, s := range st.Services {
			switch s.Service {
			case "pingpong.default":
				ping = &st.Services[i]
			case "helloworld.default":
				hello = &st.Services[i]
			}
		}
		for i, c := range st.Calls {
			if c.From == "pingpong.default" && c.To == "helloworld.default" {
				call = &st.Calls[i]
			}
		}
		return ping, hello, call
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, err := cli("stat", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("%q: %v", out, err)
		}
		if ping, hello, call := find(); ping != nil && ping.Requests >= 3 && hello != nil && hello.Requests == 3 && call != nil && call.Requests == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 15 s: %s", out)
		}
	}
	ping, _, call := find()
	if ping.Instances != 1 || ping.Reporting != 1 || ping.SuccessRate == nil || *ping.SuccessRate != 1 || ping.P50MS == nil || *ping.P50MS <= 0 {
		t.Errorf("pingpong: %+v", ping)
	}
	if call.SuccessRate == nil || *call.SuccessRate != 1 || call.P99MS == nil {
		t.Errorf("pingpong → helloworld: %+v", call)
	}
	if st.WindowSeconds != 60 {
		t.Errorf("window %v s, want the default minute", st.WindowSeconds)
	}

	out, err := cli("stat", "pingpong")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[0], "SERVICE") || !strings.HasPrefix(lines[1], "pingpong.default") || !strings.Contains(lines[1], "1/1") || !strings.Contains(lines[1], "100.00%") {
		t.Errorf("meshctl stat pingpong:\n%s", out)
	}
	if !strings.Contains(out, "METHOD (pingpong.default)") || !strings.Contains(out, "examples.pingpong.v1.Pingpong/Ping") {
		t.Errorf("meshctl stat pingpong shows no methods:\n%s", out)
	}
	if !strings.Contains(out, "FROM") || !strings.Contains(out, "pingpong.default  helloworld.default") {
		t.Errorf("meshctl stat pingpong shows no call to helloworld:\n%s", out)
	}
	// --watch looks again every --every until interrupted.
	var buf bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 2500*time.Millisecond)
	defer cancel()
	if err := NewCommand(Streams{In: strings.NewReader(""), Out: &buf, Err: io.Discard}, []string{"--home", home, "stat", "-w", "--every", "1s", "-o", "json"}).ExecuteContext(ctx); err != nil {
		t.Fatalf("stat --watch: %v", err)
	}
	looks := 0
	for dec := json.NewDecoder(&buf); ; looks++ {
		var st statJSON
		if err := dec.Decode(&st); err != nil {
			break
		}
	}
	if looks < 2 || looks > 4 {
		t.Errorf("stat --watch for 2.5 s looked %d times, want 2–3", looks)
	}
	if _, err := cli("stat", "--window", "1s"); err == nil || !strings.Contains(err.Error(), "--window 1s: from 10s to 10m") {
		t.Errorf("--window 1s: %v", err)
	}
}
