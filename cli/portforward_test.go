package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/micromesh/micromesh/internal/clienv"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/poll"
	"github.com/micromesh/micromesh/internal/syncbuf"
	"github.com/micromesh/micromesh/internal/testsvc"
	"github.com/micromesh/micromesh/service"
)

// portForward runs meshctl port-forward with args until the test ends
// and returns the address it listens on.
func portForward(t *testing.T, home string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errs syncbuf.Buffer
	cmd := NewRootCommand(Streams{In: strings.NewReader(""), Out: &out, Err: &errs})
	cmd.SetArgs(append([]string{"--home", home, "-o", "json", "port-forward"}, args...))
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("port-forward %v after Ctrl-C: %v", args, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("port-forward %v did not stop", args)
		}
	})
	var shown struct{ Listen, Service, As string }
	poll.Until(t, "port-forward to say where it listens", 30*time.Second, 20*time.Millisecond, func() bool {
		select {
		case err := <-done:
			t.Fatalf("port-forward %v: %v\n%s", args, err, errs.String())
		default:
		}
		return json.Unmarshal([]byte(out.String()), &shown) == nil
	})
	return shown.Listen
}

// A local port stands for a service: gRPC (unary, a bidirectional stream,
// the reflection grpcurl reads) and HTTP/1.1 go through a sidecar of the
// CLI's — as meshctl.micromesh, or --as a service —, whatever host the
// client names; Ctrl-C stops it.
func TestPortForward(t *testing.T) {
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	home := string(env.Home)
	cp.StartService("default", "tester", func(s *service.Service) { testgrpc.RegisterTestServiceServer(s.Server(), testsvc.Service{}) })
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s host=%s caller=%s", r.Method, r.URL.Path, r.Host, r.Header.Get("X-Mesh-Caller"))
	}))
	t.Cleanup(app.Close)
	cp.StartSidecar("default", "web", meshtest.WithApp(app.Listener.Addr().String(), "http"))

	addr := portForward(t, home, "tester")
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	tester := testgrpc.NewTestServiceClient(conn)
	if resp, err := tester.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: 3}); err != nil || resp.GetUsername() != "size 3" {
		t.Fatalf("UnaryCall through the forward: %v %v", resp, err)
	}
	bidi, err := tester.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int32{1, 2} { // each answered before the next is sent: both ways at once
		if err := bidi.Send(&testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{Size: size}}}); err != nil {
			t.Fatal(err)
		}
		if resp, err := bidi.Recv(); err != nil || len(resp.GetPayload().GetBody()) != int(size) {
			t.Fatalf("FullDuplexCall through the forward: %v %v", resp, err)
		}
	}
	if err := bidi.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := bidi.Recv(); err != io.EOF {
		t.Fatalf("the stream's end: %v", err)
	}
	refl, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := refl.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"}}); err != nil {
		t.Fatal(err)
	}
	listed, err := refl.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range listed.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if !slices.Contains(names, "grpc.testing.TestService") {
		t.Fatalf("reflection through the forward lists %v", names)
	}

	// HTTP/1.1, whatever Host the client sends, from the CLI's identity or
	// the one --as names.
	for _, tc := range []struct {
		args   []string
		caller string
	}{
		{[]string{"web"}, "spiffe://micromesh.local/ns/micromesh/svc/meshctl"},
		{[]string{"web.default", "--as", "client"}, "spiffe://micromesh.local/ns/default/svc/client"},
	} {
		addr := portForward(t, home, tc.args...)
		resp, err := http.Get("http://" + addr + "/orders/7")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "GET /orders/7 host=web caller=" + tc.caller; resp.StatusCode != 200 || !strings.HasPrefix(string(body), "GET /orders/7 host=web") || !strings.HasSuffix(string(body), "caller="+tc.caller) {
			t.Errorf("port-forward %v, GET /orders/7: %d %q, want %q", tc.args, resp.StatusCode, body, want)
		}
	}

	// Bad input: refused before anything starts.
	for _, tc := range []struct {
		args    []string
		mention string
	}{
		{[]string{"tester", "0.0.0.0:9999"}, "listens on this machine only"},
		{[]string{"tester", "10.1.2.3:9999"}, "not a loopback address"},
		{[]string{"Tester"}, "is not a service"},
		{[]string{"tester", "--as", "Bad"}, "--as"},
	} {
		if _, err := runCLI(t, append([]string{"--home", home, "port-forward"}, tc.args...)...); err == nil || !strings.Contains(describe(err), tc.mention) {
			t.Errorf("port-forward %v: %v; want an error mentioning %q", tc.args, err, tc.mention)
		}
	}
}

// A remote port-forward reads the login's token once and keeps it while
// it has more than a minute left; in its last minute it goes back to the
// file (and the session), so a login ended meanwhile is said.
func TestLoginTokenKeptUntilItsLastMinute(t *testing.T) {
	g := &globalOptions{home: t.TempDir()}
	env := &clienv.Env{Name: "staging"}
	save := func(access string, expires time.Time) {
		t.Helper()
		if err := clienv.SaveToken(g.homeDir(), env.Name, clienv.Token{AccessToken: access, Subject: "alice", Expires: expires}); err != nil {
			t.Fatal(err)
		}
	}
	bearer := func(l *loginToken) (string, error) {
		md, err := l.GetRequestMetadata(context.Background())
		return md["authorization"], err
	}
	l := &loginToken{g: g, env: env}
	if _, err := bearer(l); err == nil || !strings.Contains(err.Error(), "not logged in to environment staging") {
		t.Fatalf("no login: %v", err)
	}
	save("first", time.Now().Add(time.Hour))
	if got, err := bearer(l); err != nil || got != "Bearer first" {
		t.Fatalf("got %q, %v; want Bearer first", got, err)
	}
	save("second", time.Now().Add(time.Hour)) // another process logged in again
	if got, err := bearer(l); err != nil || got != "Bearer first" {
		t.Fatalf("got %q, %v; want the kept Bearer first (no file read per call)", got, err)
	}
	l.until = time.Now() // the kept token's last minute began
	if got, err := bearer(l); err != nil || got != "Bearer second" {
		t.Fatalf("got %q, %v; want Bearer second, read again", got, err)
	}
	save("third", time.Now().Add(30*time.Second)) // no session to refresh it by
	l.until = time.Now()
	if _, err := bearer(l); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("an expired login: %v", err)
	}
}

// A TCP service's forward is raw TCP: a client's connection to the local
// port reaches the app through a tunnel, its end passed on.
func TestPortForwardTCP(t *testing.T) {
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	app, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = app.Close() })
	go func() {
		for {
			c, err := app.Accept()
			if err != nil {
				return
			}
			go func() { // echoes until the client ends, then says so and ends
				defer c.Close()
				_, _ = io.Copy(c, c)
				_, _ = io.WriteString(c, "[end]")
			}()
		}
	}()
	cp.StartSidecar("default", "cache", meshtest.WithApp(app.Addr().String(), "tcp"))
	port := meshtest.FreePort(t)
	addr := portForward(t, string(env.Home), "cache", strconv.Itoa(port))
	if addr != "127.0.0.1:"+strconv.Itoa(port) {
		t.Fatalf("listens on %s, want 127.0.0.1:%d", addr, port)
	}
	var c net.Conn
	poll.Until(t, "the forward to take connections", 30*time.Second, 50*time.Millisecond, func() bool {
		c, err = net.Dial("tcp", addr)
		return err == nil
	})
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, "PING"); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "PING[end]" {
		t.Fatalf("through the forward: %q, %v; want the echo and the app's end", got, err)
	}
	// Not on another address: the tunnel listener is the sidecar's, on 127.0.0.1.
	if _, err := runCLI(t, "--home", string(env.Home), "port-forward", "cache", "127.0.0.2:"+strconv.Itoa(port)); err == nil || !strings.Contains(err.Error(), "listens on 127.0.0.1") {
		t.Errorf("a TCP forward on 127.0.0.2: %v", err)
	}
}
