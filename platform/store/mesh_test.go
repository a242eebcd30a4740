package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/platform/store"
	client "github.com/micromesh/micromesh/service/store"
)

// through connects to the primitive through a sidecar's outbound.
func through(t *testing.T, outbound string) *client.Client {
	return client.NewClient(meshtest.DialThrough(t, outbound, client.ServiceName))
}

// Two services of the same name in two namespaces use the store through
// their sidecars: each sees its own data, and neither can name the other's
// database.
func TestStoreOnTheMesh(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	cp.StartPlatform()
	a := through(t, cp.StartSidecar("team-a", "web").Info.Outbound)
	b := through(t, cp.StartSidecar("team-b", "web").Info.Outbound)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The store may take a moment to appear in the callers' config.
	var err error
	for range 200 {
		if err = a.Write(ctx, &client.Record{Key: "greeting", Value: []byte("from a"), Metadata: map[string]string{"lang": "en"}}); err == nil {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Write(ctx, &client.Record{Key: "greeting", Value: []byte("from b")}, client.TTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	ra, err := a.Read(ctx, "greeting")
	if err != nil || string(ra[0].Value) != "from a" || ra[0].Metadata["lang"] != "en" || !ra[0].Expiry.IsZero() {
		t.Fatalf("a reads %+v, %v", ra, err)
	}
	rb, err := b.Read(ctx, "greeting")
	if err != nil || string(rb[0].Value) != "from b" || time.Until(rb[0].Expiry) < 59*time.Minute {
		t.Fatalf("b reads %+v, %v", rb, err)
	}
	// Namespace A cannot name B's database.
	_, err = a.Read(ctx, "greeting", client.Database("team-b"))
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "own namespace (team-a)") {
		t.Fatalf("a reading b's database: %v", err)
	}
	if err := a.Write(ctx, &client.Record{Key: "x"}, client.Database("team-b")); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a writing b's database: %v", err)
	}
	// Tables: the caller's service by default, others by name.
	if err := a.Write(ctx, &client.Record{Key: "o1"}, client.Table("orders")); err != nil {
		t.Fatal(err)
	}
	if keys, err := a.List(ctx, client.Table("orders")); err != nil || len(keys) != 1 || keys[0] != "o1" {
		t.Fatalf("orders = %v, %v", keys, err)
	}
	if keys, err := a.List(ctx); err != nil || len(keys) != 1 || keys[0] != "greeting" {
		t.Fatalf("web's keys = %v, %v", keys, err)
	}
	if _, err := a.Read(ctx, "nosuch"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("missing key: %v", err)
	}

	// Bad input: a clear status, nothing written.
	for name, call := range map[string]func() error{
		"empty key":    func() error { return a.Write(ctx, &client.Record{Key: ""}) },
		"key too long": func() error { return a.Write(ctx, &client.Record{Key: strings.Repeat("k", store.MaxKeyLen+1)}) },
		"value too big": func() error {
			return a.Write(ctx, &client.Record{Key: "big", Value: make([]byte, store.MaxValueLen+1)})
		},
		"ttl 0 or less": func() error { return a.Write(ctx, &client.Record{Key: "t"}, client.TTL(-time.Second)) },
		"bad table":     func() error { return a.Write(ctx, &client.Record{Key: "t"}, client.Table("no/slashes")) },
		"prefix+suffix": func() error { _, err := a.Read(ctx, "x", client.Prefix(), client.Suffix()); return err },
	} {
		if err := call(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	if keys, _ := a.List(ctx); len(keys) != 1 {
		t.Errorf("refused writes left keys: %v", keys)
	}
}
