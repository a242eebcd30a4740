package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A service from nothing, as a user makes one: meshctl new writes it (its
// own module, building against this checkout), meshctl run starts it on
// the mesh, and it answers a call, a stream, its own command and the API
// gateway; after a change to its .proto, meshctl generate and update
// serve the new field.
func TestANewServiceOnTheMesh(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
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
	if out := srv.run(ctx, t, meshctl, "run", dir); !strings.Contains(out, "orders is running: 1 instance(s)") {
		t.Fatalf("run:\n%s", out)
	}
	if out := srv.run(ctx, t, meshctl, "call", "orders", "Orders.Call", `{"name":"Alice"}`); out != `{"msg":"Hello Alice"}`+"\n" {
		t.Fatalf("call: %q", out)
	}
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

	// A new field in the API, generated, served after an update.
	p := filepath.Join(dir, "proto", "orders.proto")
	proto, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(strings.Replace(string(proto), "  string msg = 1;", "  string msg = 1;\n  int32 length = 2;", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := srv.run(ctx, t, meshctl, "generate", dir); out != "proto/orders.pb.go\nproto/orders_grpc.pb.go\n" {
		t.Fatalf("generate: %q", out)
	}
	h := filepath.Join(dir, "handler", "handler.go")
	src, err := os.ReadFile(h)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h, []byte(strings.Replace(string(src), `Msg: "Hello " + req.GetName()}`, `Msg: "Hello " + req.GetName(), Length: int32(len(req.GetName()))}`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	srv.run(ctx, t, meshctl, "update", "orders")
	if out := srv.run(ctx, t, meshctl, "call", "orders", "Orders.Call", `{"name":"Alice"}`); out != `{"msg":"Hello Alice","length":5}`+"\n" {
		t.Fatalf("call after the update: %q", out)
	}

	// Bad input says what to do.
	if out, err := srv.try(ctx, meshctl, "new", "orders", "--dir", dir); err == nil || !strings.Contains(out, "is not empty") {
		t.Fatalf("new into the same directory: %v %q", err, out)
	}
	if err := os.WriteFile(p, append(proto, "message Broken { strin s = 1; }\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := srv.try(ctx, meshctl, "generate", dir); err == nil || !strings.Contains(out, "proto/orders.proto:") || !strings.Contains(out, "unknown type strin") {
		t.Fatalf("generate a broken proto: %v %q", err, out)
	}
}
