package dataplane_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/micromesh/micromesh/dataplane"
	"github.com/micromesh/micromesh/internal/meshtest"
)

// Certificates rotate under traffic, on both sides, without a failed
// request: new handshakes take the new certificate, connections in use stay.
func TestRotationUnderTraffic(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	app := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		return ln.Addr().String()
	}
	certDirs := map[string]string{}
	start := func(name string) *dataplane.Sidecar {
		creds := cp.Join("default", name)
		dir := filepath.Join(t.TempDir(), "certs")
		certDirs[name] = dir
		if err := creds.WriteDir(dir); err != nil {
			t.Fatal(err)
		}
		s, err := dataplane.New(dataplane.Options{Credentials: creds, CertDir: dir, ControlPlane: cp.Info.Address, App: app(),
			Outbound: "127.0.0.1:0", Instance: name + "-1", Admin: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		deadline := time.Now().Add(20 * time.Second)
		for !s.Ready() {
			if time.Now().After(deadline) {
				t.Fatalf("%s not ready", name)
			}
			time.Sleep(10 * time.Millisecond)
		}
		return s
	}
	a, b := start("a"), start("b")
	bDir := certDirs["b"]
	outbound := a.Info().Outbound

	var ok, failed atomic.Int64
	var lastErr atomic.Value
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 10 * time.Second}
			for ctx.Err() == nil {
				flowing := ok.Load() > 0 // when the request leaves
				req, _ := http.NewRequest("GET", "http://"+outbound+"/", nil)
				req.Host = "b"
				resp, err := client.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = errCode(resp.StatusCode)
					}
				}
				if err != nil {
					// Until b's endpoint arrives, "no healthy endpoint" is
					// expected: a request sent before another succeeded
					// may fail.
					if flowing {
						failed.Add(1)
						lastErr.Store(err)
					}
					continue
				}
				ok.Add(1)
			}
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	for ok.Load() < 50 {
		if time.Now().After(deadline) {
			t.Fatal("no traffic from a to b")
		}
		time.Sleep(10 * time.Millisecond)
	}
	serials := map[string]bool{}
	for round := range 3 {
		for _, s := range []*dataplane.Sidecar{a, b} {
			if err := s.Rotate(context.Background()); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			serials[s.Certificate().Leaf().SerialNumber.String()] = true
		}
		before := ok.Load()
		for ok.Load() < before+50 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	cancel()
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d requests failed across rotations (of %d); last: %v", n, ok.Load(), lastErr.Load())
	}
	if len(serials) != 6 {
		t.Errorf("%d distinct certificates after 3 rotations of 2 sidecars", len(serials))
	}
	// The rotated certificate is on disk, where SDS names it.
	files, err := filepath.Glob(filepath.Join(bDir, "*.pem"))
	if err != nil || len(files) != 3 {
		t.Errorf("cert dir holds %v", files)
	}
	t.Logf("%d requests, 0 failures, across 3 rotations of both sidecars", ok.Load())
}

type errCode int

func (e errCode) Error() string { return http.StatusText(int(e)) }
