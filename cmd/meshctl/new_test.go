package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/micromesh/micromesh/internal/poll"
	"github.com/micromesh/micromesh/internal/syncbuf"
)

// A service from nothing, as a user makes one: meshctl new writes it (its
// own module, building against this checkout), meshctl run --watch starts
// it on the mesh (its log lines shown), and it answers a call, a stream,
// its own command and the API gateway; a change to its .proto and handler is generated, built and
// served at the next save; a change that does not build leaves the running
// version answering; Ctrl-C stops the watch and leaves the service.
func TestANewServiceOnTheMesh(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	srv := startServer(ctx, t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	// The protoc plugins are in bin/, beside the meshctl make build makes.
	srv.env = append(srv.env, "PATH="+filepath.Join(root, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	dir := filepath.Join(t.TempDir(), "orders")
	out := srv.run(ctx, t, meshctl, "new", "orders", "--dir", dir, "--micromesh", root)
	for _, want := range []string{"Created orders in " + dir + " (module orders)", "proto/orders_grpc.pb.go", "meshctl run " + dir} {
		if !strings.Contains(out, want) {
			t.Fatalf("new orders: no %q in\n%s", want, out)
		}
	}

	watch := srv.command(ctx, meshctl, "run", dir, "--watch")
	watch.Env, watch.Dir = srv.env, srv.home
	var watchOut syncbuf.Buffer
	watch.Stdout, watch.Stderr = &watchOut, &watchOut
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- watch.Wait() }()
	defer func() {
		_ = watch.Process.Kill()
		if t.Failed() {
			t.Logf("run --watch said:\n%s", watchOut.String())
		}
	}()
	// waitFor waits for the n-th line of the watch's output holding text.
	waitFor := func(text string, n int) {
		t.Helper()
		poll.Until(t, fmt.Sprintf("run --watch to say %q (%d)", text, n), 3*time.Minute, 100*time.Millisecond, func() bool {
			return strings.Count(watchOut.String(), text) >= n
		})
	}
	waitFor("orders is running: 1 instance(s)", 1)
	waitFor("watching "+dir, 1)

	if out := srv.run(ctx, t, meshctl, "call", "orders", "Orders.Call", `{"name":"Alice"}`); out != `{"msg":"Hello Alice"}`+"\n" {
		t.Fatalf("call: %q", out)
	}
	waitFor("method=/orders.v1.Orders/Call", 1) // the app's log line, shown by the watch
	if out := srv.run(ctx, t, meshctl, "orders", "stream", "--count", "3"); out != `{"count":"1"}`+"\n"+`{"count":"2"}`+"\n"+`{"count":"3"}`+"\n" {
		t.Fatalf("orders stream --count 3: %q", out)
	}
	if out, err := srv.try(ctx, meshctl, "orders", "stream", "--count", "0"); err == nil || !strings.Contains(out, "InvalidArgument: count must be between 1 and 1000, not 0") {
		t.Fatalf("orders stream --count 0: %v %q", err, out)
	}
	resp, err := http.Post("http://"+srv.gateway+"/orders/call", "application/json", strings.NewReader(`{"name":"Bob"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != `{"msg":"Hello Bob"}` {
		t.Fatalf("POST /orders/call through the gateway: %d %s", resp.StatusCode, body)
	}

	// A new field in the API and the handler filling it: saved, it is
	// generated, built and served.
	p := filepath.Join(dir, "proto", "orders.proto")
	proto, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h := filepath.Join(dir, "handler", "handler.go")
	handler, err := os.ReadFile(h)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(path string, data []byte) {
		t.Helper()
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	edit(p, []byte(strings.Replace(string(proto), "  string msg = 1;", "  string msg = 1;\n  int32 length = 2;", 1)))
	edit(h, []byte(strings.Replace(string(handler), `Msg: "Hello " + req.GetName()}`, `Msg: "Hello " + req.GetName(), Length: int32(len(req.GetName()))}`, 1)))
	waitFor("generated proto/orders.pb.go, proto/orders_grpc.pb.go", 1)
	waitFor("orders updated: version", 1)
	if out := srv.run(ctx, t, meshctl, "call", "orders", "Orders.Call", `{"name":"Alice"}`); out != `{"msg":"Hello Alice","length":5}`+"\n" {
		t.Fatalf("call after the update: %q", out)
	}

	// A save that does not build: the compiler's word, and the running
	// version goes on answering.
	fixed, _ := os.ReadFile(h)
	edit(h, append(fixed, "\nfunc broken() { undefinedThing() }\n"...))
	waitFor("undefined: undefinedThing", 1)
	waitFor("orders keeps running version", 1)
	if out := srv.run(ctx, t, meshctl, "call", "orders", "Orders.Call", `{"name":"Alice"}`); out != `{"msg":"Hello Alice","length":5}`+"\n" {
		t.Fatalf("call after a failed build: %q", out)
	}
	edit(h, fixed)
	waitFor("orders updated: version", 2)

	// generate by hand: a .proto that does not compile is named with its
	// line and column (the watch says so too, and builds nothing).
	good, _ := os.ReadFile(p)
	edit(p, append(good, "message Broken { strin s = 1; }\n"...))
	if out, err := srv.try(ctx, meshctl, "generate", dir); err == nil || !strings.Contains(out, "proto/orders.proto:") || !strings.Contains(out, "unknown type strin") {
		t.Fatalf("generate a broken proto: %v %q", err, out)
	}
	waitFor("unknown type strin", 1)
	edit(p, good)
	if out := srv.run(ctx, t, meshctl, "generate", dir); out != "proto/orders.pb.go\nproto/orders_grpc.pb.go\n" {
		t.Fatalf("generate: %q", out)
	}

	// Ctrl-C ends the watch, not the service.
	if err := watch.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("run --watch after Ctrl-C: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("run --watch did not stop at Ctrl-C")
	}
	if out := srv.run(ctx, t, meshctl, "call", "orders", "Orders.Call", `{"name":"Carol"}`); out != `{"msg":"Hello Carol","length":5}`+"\n" {
		t.Fatalf("call after the watch stopped: %q", out)
	}

	// Bad input says what to do.
	if out, err := srv.try(ctx, meshctl, "new", "orders", "--dir", dir); err == nil || !strings.Contains(out, "is not empty") {
		t.Fatalf("new into the same directory: %v %q", err, out)
	}
	for _, args := range [][]string{
		{"run", "file:///srv/git/orders.git", "--watch"},
		{"run", dir, "--watch", "--rollout", "--version", "v2"},
	} {
		if out, err := srv.try(ctx, meshctl, args...); err == nil || !strings.Contains(out, "--watch") {
			t.Errorf("%v: %v %q", args, err, out)
		}
	}
}
