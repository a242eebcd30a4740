package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/micromesh/micromesh/internal/home"
	"github.com/micromesh/micromesh/internal/meshclient"
	evclient "github.com/micromesh/micromesh/service/events"
	stclient "github.com/micromesh/micromesh/service/store"
)

// dialPlatform connects to a platform service of the running server as the
// CLI's admin identity, through the service's sidecar.
func dialPlatform(ctx context.Context, t *testing.T, s *testServer, name string) *grpc.ClientConn {
	t.Helper()
	h := home.Dir(s.home)
	info, err := h.ReadServerInfo()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := meshclient.DialService(ctx, h, info.Address, "micromesh", name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// kill -9 of the server while clients write: every write the store or the
// events service acknowledged is there after a restart.
func TestNothingAcknowledgedIsLostOnKill9(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	srv := startServer(ctx, t)
	store := stclient.NewClient(dialPlatform(ctx, t, srv, "store"))
	events := evclient.NewClient(dialPlatform(ctx, t, srv, "events"))

	const target = 10_000
	var (
		mu         sync.Mutex
		storeAcked = map[string]bool{}
		eventAcked = map[uint64]string{}
		nStore     atomic.Int64
		nEvents    atomic.Int64
	)
	wctx, stopWriting := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := 0; wctx.Err() == nil; i++ {
				key := fmt.Sprintf("w%02d/%06d", w, i)
				if err := store.Write(wctx, &stclient.Record{Key: key, Value: []byte(key)}, stclient.Table("kill9")); err != nil {
					return // the server went away
				}
				mu.Lock()
				storeAcked[key] = true
				mu.Unlock()
				nStore.Add(1)
			}
		})
		wg.Go(func() {
			for i := 0; wctx.Err() == nil; i++ {
				payload := fmt.Sprintf("w%02d/%06d", w, i)
				seq, err := events.Publish(wctx, "kill9", []byte(payload))
				if err != nil {
					return
				}
				mu.Lock()
				eventAcked[seq] = payload
				mu.Unlock()
				nEvents.Add(1)
			}
		})
	}
	start := time.Now()
	for nStore.Load() < target || nEvents.Load() < target {
		if time.Since(start) > 3*time.Minute {
			t.Fatalf("only %d store writes and %d events acknowledged in 3 min", nStore.Load(), nEvents.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Mid-flight: writers are still going.
	if err := srv.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = srv.cmd.Wait()
	stopWriting()
	wg.Wait()
	t.Logf("killed after %v: %d store writes and %d events acknowledged", time.Since(start).Round(time.Millisecond), len(storeAcked), len(eventAcked))

	again := startServerIn(ctx, t, srv.home)
	store = stclient.NewClient(dialPlatform(ctx, t, again, "store"))
	events = evclient.NewClient(dialPlatform(ctx, t, again, "events"))
	var keys []string
	var err error
	for range 100 { // the store's sidecar may still be getting its config
		if keys, err = store.List(ctx, stclient.Table("kill9")); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, k := range keys {
		have[k] = true
	}
	lost := 0
	for k := range storeAcked {
		if !have[k] {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d acknowledged store writes lost (of %d)", lost, len(storeAcked))
	}
	got := map[uint64]string{}
	for offset := uint64(1); ; {
		evs, err := events.Read(ctx, "kill9", evclient.Offset(offset), evclient.Limit(1000))
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		for _, ev := range evs {
			got[ev.Sequence] = string(ev.Payload)
		}
		offset = evs[len(evs)-1].Sequence + 1
	}
	lost = 0
	for seq, p := range eventAcked {
		if got[seq] != p {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d acknowledged events lost or changed (of %d)", lost, len(eventAcked))
	}
	again.interrupt(t)
}
