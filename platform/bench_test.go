package platform_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/platform/store"
	cfgclient "github.com/micromesh/micromesh/service/config"
	evclient "github.com/micromesh/micromesh/service/events"
	stclient "github.com/micromesh/micromesh/service/store"
)

// rate runs n operations over conc goroutines and returns operations per
// second.
func rate(b *testing.B, n, conc int, op func(i int) error) float64 {
	b.Helper()
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := op(i); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		b.Fatal(err)
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkPlatform measures the primitives through the mesh — a client
// behind its own sidecar, HTTP/3 to the primitive's sidecar — beside the
// store's backend called in-process, in one run, 16 concurrent clients:
//
//	go test -run '^$' -bench Platform -benchtime 1x ./platform/
func BenchmarkPlatform(b *testing.B) {
	const conc, n = 16, 4000
	cp := meshtest.NewEnv(b).StartControlPlane()
	cp.StartPlatform()
	out := cp.StartSidecar("bench", "client").Info.Outbound
	st := stclient.NewClient(meshtest.DialThrough(b, out, stclient.ServiceName))
	ev := evclient.NewClient(meshtest.DialThrough(b, out, evclient.ServiceName))
	cfg := cfgclient.NewClient(meshtest.DialThrough(b, out, cfgclient.ServiceName))
	ctx := context.Background()
	for i := 0; ; i++ { // until the primitives are in the client's config
		if _, err := cfg.Set(ctx, "warm", 1); err == nil {
			break
		} else if i > 400 {
			b.Fatal(err)
		}
		time.Sleep(25 * time.Millisecond)
	}
	bolt, err := store.OpenBolt(filepath.Join(b.TempDir(), "baseline.db"), time.Hour, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer bolt.Close()
	scope := store.Scope{Database: "bench", Table: "baseline"}
	value := make([]byte, 256)

	for b.Loop() {
		inWrite := rate(b, n, conc, func(i int) error {
			return bolt.Write(ctx, scope, store.Record{Key: fmt.Sprintf("k%06d", i), Value: value})
		})
		meshWrite := rate(b, n, conc, func(i int) error {
			return st.Write(ctx, &stclient.Record{Key: fmt.Sprintf("k%06d", i), Value: value})
		})
		inRead := rate(b, n, conc, func(i int) error {
			_, err := bolt.Read(ctx, scope, store.Query{Key: fmt.Sprintf("k%06d", i)})
			return err
		})
		meshRead := rate(b, n, conc, func(i int) error {
			_, err := st.Read(ctx, fmt.Sprintf("k%06d", i))
			return err
		})
		b.ReportMetric(inWrite, "store-writes/s-inprocess")
		b.ReportMetric(meshWrite, "store-writes/s-mesh")
		b.ReportMetric(meshWrite/inWrite, "store-writes-ratio")
		b.ReportMetric(inRead, "store-reads/s-inprocess")
		b.ReportMetric(meshRead, "store-reads/s-mesh")
		b.ReportMetric(meshRead/inRead, "store-reads-ratio")

		topic := fmt.Sprintf("bench-%d", time.Now().UnixNano())
		pub := rate(b, n, conc, func(i int) error {
			_, err := ev.Publish(ctx, topic, value)
			return err
		})
		c, err := ev.Consume(ctx, topic, evclient.Group("bench"), evclient.AutoAck())
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for range n {
			if _, err := c.Next(); err != nil {
				b.Fatal(err)
			}
		}
		consume := float64(n) / time.Since(start).Seconds()
		_ = c.Close()
		b.ReportMetric(pub, "events-published/s")
		b.ReportMetric(consume, "events-consumed/s")

		// Config: set → watcher notified, and the set's own round trip.
		wctx, stop := context.WithCancel(ctx)
		w, err := cfg.Watch(wctx, "bench.value")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := w.Next(); err != nil { // the value now
			b.Fatal(err)
		}
		var notify, setRT []time.Duration
		for i := range 200 {
			t0 := time.Now()
			if _, err := cfg.Set(ctx, "bench.value", i); err != nil {
				b.Fatal(err)
			}
			setRT = append(setRT, time.Since(t0))
			if _, err := w.Next(); err != nil {
				b.Fatal(err)
			}
			notify = append(notify, time.Since(t0))
		}
		stop()
		b.ReportMetric(pct(notify, 0.50), "watch-p50-ms")
		b.ReportMetric(pct(notify, 0.99), "watch-p99-ms")
		b.ReportMetric(pct(setRT, 0.99), "set-p99-ms")
	}
}

func pct(d []time.Duration, p float64) float64 {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return float64(s[int(float64(len(s)-1)*p)]) / float64(time.Millisecond)
}
