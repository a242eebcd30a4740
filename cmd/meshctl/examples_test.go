package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// examples/kv and examples/pubsub, run from source, use the store and the
// events primitives through their sidecars.
func TestPlatformExamples(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	srv := startServer(ctx, t)
	examples, _ := filepath.Abs("../../examples")
	srv.run(ctx, t, meshctl, "run", filepath.Join(examples, "kv"))
	srv.run(ctx, t, meshctl, "run", filepath.Join(examples, "pubsub"))

	srv.run(ctx, t, meshctl, "call", "kv", "Kv.Put", `{"key":"greeting","value":"hello"}`)
	if out := srv.run(ctx, t, meshctl, "call", "kv", "Kv.Get", `{"key":"greeting"}`); out != `{"value":"hello"}`+"\n" {
		t.Errorf("Kv.Get = %q", out)
	}
	if out := srv.run(ctx, t, meshctl, "call", "kv", "Kv.List", `{"prefix":"gr"}`); out != `{"keys":["greeting"]}`+"\n" {
		t.Errorf("Kv.List = %q", out)
	}
	// The record is in kv's table of namespace default.
	if out := srv.run(ctx, t, meshctl, "store", "read", "greeting", "--table", "kv"); out != "hello\n" {
		t.Errorf("store read = %q", out)
	}
	if out, err := srv.try(ctx, meshctl, "call", "kv", "Kv.Get", `{"key":"nope"}`); err == nil || !strings.Contains(out, "NotFound") {
		t.Errorf("Kv.Get of a missing key: %v %s", err, out)
	}

	srv.run(ctx, t, meshctl, "call", "pubsub", "Pubsub.Publish", `{"message":"hi there"}`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := srv.run(ctx, t, meshctl, "call", "pubsub", "Pubsub.Received")
		if strings.Contains(out, "hi there") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pubsub's consumer never received the message: %s\n%s", out, srv.run(ctx, t, meshctl, "logs", "pubsub"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out := srv.run(ctx, t, meshctl, "events", "read", "greetings"); !strings.HasPrefix(out, "1\t") || !strings.Contains(out, "hi there") {
		t.Errorf("events read greetings = %q", out)
	}
	srv.run(ctx, t, meshctl, "kill", "kv")
	srv.run(ctx, t, meshctl, "kill", "pubsub")
	srv.interrupt(t)
}
