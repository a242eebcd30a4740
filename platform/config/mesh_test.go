package config_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/internal/meshtest"
	client "github.com/micromesh/micromesh/service/config"
)

// through connects to the primitive through a sidecar's outbound.
func through(t *testing.T, outbound string) *client.Client {
	return client.NewClient(meshtest.DialThrough(t, outbound, client.ServiceName))
}

func TestConfigOnTheMesh(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	cp.StartPlatform()
	a := through(t, cp.StartSidecar("team-a", "web").Info.Outbound)
	other := through(t, cp.StartSidecar("team-a", "batch").Info.Outbound)
	b := through(t, cp.StartSidecar("team-b", "web").Info.Outbound)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	var err error
	for range 200 { // until the config service is in the caller's config
		if _, err = a.Set(ctx, "db", map[string]any{"host": "db.local", "pool": map[string]any{"size": 10}}); err == nil {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	// Maps merge.
	if _, err := a.Set(ctx, "db.pool", map[string]any{"idle": 2}); err != nil {
		t.Fatal(err)
	}
	v, err := a.Get(ctx, "db")
	if err != nil || string(v.JSON) != `{"host":"db.local","pool":{"idle":2,"size":10}}` {
		t.Fatalf("get db = %s, %v", v.JSON, err)
	}
	var size int
	if v, err := a.Get(ctx, "db.pool.size"); err != nil || v.Scan(&size) != nil || size != 10 {
		t.Fatalf("size = %d, %v", size, err)
	}
	if _, err := a.Delete(ctx, "db.pool.idle"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Get(ctx, "db.pool.idle"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	// Namespaces are apart.
	if _, err := b.Get(ctx, "db"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("b sees a's config: %v", err)
	}
	if _, err := b.Get(ctx, "db", client.Namespace("team-a")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("b naming a's namespace: %v", err)
	}

	// Secrets: shown as [secret]; decrypted when asked, by their readers.
	if _, err := a.Set(ctx, "db.password", "hunter2", client.Secret(), client.Readers("web")); err != nil {
		t.Fatal(err)
	}
	if v, _ := a.Get(ctx, "db"); !strings.Contains(string(v.JSON), `"password":"[secret]"`) {
		t.Errorf("a secret is visible: %s", v.JSON)
	}
	if v, err := a.Get(ctx, "db.password", client.Secret()); err != nil || string(v.JSON) != `"hunter2"` {
		t.Errorf("reader asks for the secret: %s %v", v.JSON, err)
	}
	if _, err := other.Get(ctx, "db.password", client.Secret()); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a service not among the readers: %v", err)
	}
	if v, err := other.Get(ctx, "db.password"); err != nil || string(v.JSON) != `"[secret]"` {
		t.Errorf("without asking: %s %v", v.JSON, err)
	}

	// Watch: the value now, then each change to it (not to others).
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	w, err := a.Watch(wctx, "feature")
	if err != nil {
		t.Fatal(err)
	}
	if first, err := w.Next(); err != nil || !first.Deleted {
		t.Fatalf("first watch value: %+v %v", first, err)
	}
	start := time.Now()
	if _, err := a.Set(ctx, "unrelated", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Set(ctx, "feature", map[string]any{"on": true}); err != nil {
		t.Fatal(err)
	}
	got, err := w.Next()
	if err != nil || string(got.JSON) != `{"on":true}` {
		t.Fatalf("watched: %+v %v", got, err)
	}
	t.Logf("set → watcher notified: %v", time.Since(start))

	// Bad input.
	for name, call := range map[string]func() error{
		"bad path":     func() error { _, err := a.Get(ctx, "a..b"); return err },
		"not JSON":     func() error { _, err := a.Set(ctx, "x", json.RawMessage(`{"a":}`)); return err },
		"reserved key": func() error { _, err := a.Set(ctx, "x", map[string]any{"$secret": 1}); return err },
		"root secret":  func() error { _, err := a.Set(ctx, "", 1, client.Secret()); return err },
	} {
		if err := call(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := a.Set(ctx, "x", json.RawMessage(`{"a":}`)); err == nil || !strings.Contains(err.Error(), "at byte 6") {
		t.Errorf("not JSON says where: %v", err)
	}
}

// Compare-and-set under contention: 4 writers × 1,000 increments through
// the mesh; none is lost.
func TestConfigCompareAndSet(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	cp.StartPlatform()
	a := through(t, cp.StartSidecar("team-a", "web").Info.Outbound)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var err error
	for range 200 { // until the config service is in the caller's config
		if _, err = a.Set(ctx, "counter", 0); err == nil {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// Compare-and-set: 4 writers × 1,000 increments, none lost.
	const writers, each = 4, 1000
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Go(func() {
			for i := 0; i < each; {
				v, err := a.Get(ctx, "counter")
				if err != nil {
					errs <- err
					return
				}
				var n int
				_ = v.Scan(&n)
				_, err = a.Set(ctx, "counter", n+1, client.Revision(v.Revision))
				if errors.Is(err, client.ErrConflict) {
					time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond) // back off, as a client should
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				i++
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var n int
	if v, err := a.Get(ctx, "counter"); err != nil || v.Scan(&n) != nil || n != writers*each {
		t.Fatalf("counter = %d after %d increments, %v", n, writers*each, err)
	}

	t.Logf("%d increments with compare-and-set in %v", writers*each, time.Since(start).Round(time.Millisecond))
}
