package dataplane_test

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/dataplane"
	"github.com/micromesh/micromesh/internal/meshtest"
)

// instances lists the registered instance IDs of service name.
func instances(t *testing.T, cp *meshtest.ControlPlane, name string) []string {
	t.Helper()
	snap, err := registry.List(t.Context(), cp.Registry())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, in := range snap.Instances {
		if in.Service == name {
			ids = append(ids, in.ID)
		}
	}
	return ids
}

// With WaitForApp the sidecar listens at once but registers only when the
// app answers; POST /drain deregisters while the proxy keeps serving.
func TestWaitForAppAndDrain(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	caller := cp.StartSidecar("default", "caller")
	appAddr := "127.0.0.1:" + strconv.Itoa(meshtest.FreePort(t))
	creds := cp.Join("default", "late")
	certDir := filepath.Join(t.TempDir(), "certs")
	if err := creds.WriteDir(certDir); err != nil {
		t.Fatal(err)
	}
	ready := make(chan dataplane.Info, 1)
	sc, err := dataplane.New(dataplane.Options{
		Credentials: creds, CertDir: certDir, ControlPlane: cp.Info.Address, Instance: "late-1",
		App: appAddr, AppProtocol: "http", Outbound: "127.0.0.1:0",
		Admin: "127.0.0.1:0", TTL: 3 * time.Second, Drain: time.Second, WaitForApp: true, Version: "v7",
		Ready: func(i dataplane.Info) { ready <- i },
	})
	if err != nil {
		t.Fatal(err)
	}
	outbound, admin := sc.Info().Outbound, sc.Info().Admin
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sc.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	// It listens (the runtime starts the app then) but is not registered.
	waitFor(t, "the outbound listener", func() bool {
		c, err := net.Dial("tcp", outbound)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	time.Sleep(300 * time.Millisecond)
	if ids := instances(t, cp, "late"); len(ids) != 0 {
		t.Fatalf("registered before the app is up: %v", ids)
	}
	select {
	case <-ready:
		t.Fatal("ready before the app is up")
	default:
	}
	// The app comes up: registered, with its version, and reachable.
	ln, err := net.Listen("tcp", appAddr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`{"app":"late"}`)) })}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	select {
	case <-ready:
	case <-time.After(15 * time.Second):
		t.Fatal("not ready after the app came up")
	}
	snap, _ := registry.List(t.Context(), cp.Registry())
	for _, in := range snap.Instances {
		if in.Service == "late" && in.Version != "v7" {
			t.Errorf("version = %q", in.Version)
		}
	}
	waitFor(t, "caller reaches late", func() bool {
		resp, _ := call(t, caller.Info.Outbound, "late", "/", nil)
		return resp.StatusCode == 200
	})

	// Drain: deregistered and not ready, yet still serving what reaches it.
	resp, err := http.Post("http://"+admin+"/drain", "", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("drain: %v %v", resp, err)
	}
	resp.Body.Close()
	waitFor(t, "deregistered", func() bool { return len(instances(t, cp, "late")) == 0 })
	if r, err := http.Get("http://" + admin + "/ready"); err != nil || r.StatusCode != 503 {
		t.Fatalf("ready after drain: %v %v", r, err)
	}
	// Heartbeats stopped: it does not come back.
	time.Sleep(1500 * time.Millisecond)
	if ids := instances(t, cp, "late"); len(ids) != 0 {
		t.Fatalf("registered again after the drain: %v", ids)
	}
}
