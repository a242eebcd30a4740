package dataplane_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/micromesh/micromesh/dataplane"
	"github.com/micromesh/micromesh/internal/meshtest"
)

// With the control plane stopped, traffic keeps flowing on the last config;
// restarted, the sidecars resync.
func TestControlPlaneAway(t *testing.T) {
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
	cp.StartSidecar("default", "b", meshtest.WithApp(startEcho(t, "b"), "http"))
	waitFor(t, "a reaches b", func() bool { resp, _ := call(t, a.Info.Outbound, "b", "/", nil); return resp.StatusCode == 200 })

	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if resp, e := call(t, a.Info.Outbound, "b", "/", nil); resp.StatusCode != 200 || e.App != "b" {
			t.Fatalf("with the control plane away: %d %+v", resp.StatusCode, e)
		}
	}
	cp2 := env.StartControlPlaneAt(cp.Info.Address)
	cp2.StartSidecar("default", "c", meshtest.WithApp(startEcho(t, "c"), "http"))
	waitFor(t, "a learns of c from the restarted control plane", func() bool {
		resp, e := call(t, a.Info.Outbound, "c", "/", nil)
		return resp.StatusCode == 200 && e.App == "c"
	})
}

// An app may call out before its sidecar has any config (the runtime starts
// it once the outbound port accepts): the port is bound from the start, and
// the call waits for the first config instead of failing.
func TestCallBeforeTheFirstConfigWaitsForIt(t *testing.T) {
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	cp.StartSidecar("default", "b", meshtest.WithApp(startEcho(t, "b"), "http"))
	creds := cp.Join("default", "a")
	addr := cp.Info.Address
	if err := cp.Stop(); err != nil { // away when a starts
		t.Fatal(err)
	}
	sc, err := dataplane.New(dataplane.Options{Credentials: creds, CertDir: t.TempDir(), ControlPlane: addr,
		Outbound: "127.0.0.1:0", Instance: "a-1", Drain: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- sc.Run(ctx) }()
	defer func() {
		cancel()
		<-ran
	}()

	type answer struct {
		status int
		body   string
		err    error
	}
	answered := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest("POST", "http://"+sc.Info().Outbound+"/", strings.NewReader("early"))
		req.Host = "b"
		resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
		if err != nil {
			answered <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answered <- answer{status: resp.StatusCode, body: string(b)}
	}()
	select {
	case a := <-answered:
		t.Fatalf("answered with no config: %+v", a)
	case <-time.After(500 * time.Millisecond):
	}
	env.StartControlPlaneAt(addr)
	select {
	case a := <-answered:
		if a.err != nil || a.status != 200 || !strings.Contains(a.body, `"app":"b"`) {
			t.Fatalf("the early call: %+v", a)
		}
	case <-time.After(45 * time.Second):
		t.Fatal("the early call was not answered after the control plane came back")
	}
}

// An endpoint dies under load: retries and outlier detection keep errors
// under 0.1 % of 5,000 requests.
func TestEndpointKilledUnderLoad(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
	cp.StartSidecar("default", "b", meshtest.WithApp(startEcho(t, "b1"), "http"), meshtest.WithInstance("b-1"))
	app2, stopApp2 := killableEcho(t, "b2")
	cp.StartSidecar("default", "b", meshtest.WithApp(app2, "http"), meshtest.WithInstance("b-2"))
	served := map[string]int{}
	waitFor(t, "both b instances serve", func() bool {
		_, e := call(t, a.Info.Outbound, "b", "/", nil)
		served[e.App]++
		return served["b1"] > 0 && served["b2"] > 0
	})

	const total = 5000
	var failures, done atomic.Int64
	var firstErr atomic.Value
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	work := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				req, _ := http.NewRequest("GET", "http://"+a.Info.Outbound+"/", nil)
				req.Host = "b"
				resp, err := client.Do(req)
				if err == nil {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("%w: %s", errStatus(resp.StatusCode), bytes.TrimSpace(body))
					}
				}
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				done.Add(1)
			}
		}()
	}
	for i := range total {
		if i == total/5 {
			stopApp2() // b-2's app dies; its sidecar answers 503 until ejected
		}
		work <- i
	}
	close(work)
	wg.Wait()
	if f := failures.Load(); f*1000 > total {
		t.Fatalf("%d of %d requests failed (> 0.1%%); first: %v", f, total, firstErr.Load())
	} else {
		t.Logf("%d of %d requests failed; first: %v", f, total, firstErr.Load())
	}
	m := metrics(t, a.Info.Admin)
	if !strings.Contains(m, `micromesh_upstream_retries_total{cluster="b.default"}`) {
		t.Error("no retries were counted")
	}
	if !strings.Contains(m, `micromesh_outlier_ejections_total{cluster="b.default"} 1`) {
		t.Errorf("the dead endpoint was not ejected once:\n%s", grep(m, "ejections"))
	}
}

type errStatus int

func (e errStatus) Error() string { return "status " + http.StatusText(int(e)) }

// killableEcho is an echo app that can be stopped.
func killableEcho(t *testing.T, name string) (string, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"app":"`+name+`"}`)
	})}
	go func() { _ = srv.Serve(ln) }()
	var once sync.Once
	stop := func() { once.Do(func() { _ = srv.Close() }) }
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

// A port the sidecar needs is taken: it does not start, and says which
// port and why (it binds its own ports before asking the control plane
// for anything, so it never waits on a config it cannot apply).
func TestTakenPortFailsTheStart(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	creds := cp.Join("default", "b")
	for _, tc := range []struct {
		name, network, want string
	}{
		{"inbound UDP", "udp", "inbound port %d (UDP, for QUIC)"},
		{"inbound TCP", "tcp", "inbound port %d (TCP, for TLS)"},
		{"outbound", "tcp-loopback", "outbound 127.0.0.1:%d"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := meshtest.FreePort(t)
			var closer io.Closer
			var err error
			switch tc.network {
			case "udp":
				closer, err = net.ListenPacket("udp", "0.0.0.0:"+itoa(port))
			case "tcp":
				closer, err = net.Listen("tcp", "0.0.0.0:"+itoa(port))
			default:
				closer, err = net.Listen("tcp", "127.0.0.1:"+itoa(port))
			}
			if err != nil {
				t.Fatal(err)
			}
			defer closer.Close()
			o := dataplane.Options{Credentials: creds, CertDir: t.TempDir(), ControlPlane: cp.Info.Address,
				App: startEcho(t, "b"), InboundPort: uint16(port), Outbound: "127.0.0.1:0", Instance: "b-1"}
			if tc.network == "tcp-loopback" {
				o.InboundPort = 0 // picks one
				o.Outbound = "127.0.0.1:" + itoa(port)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err = dataplane.Run(ctx, o)
			if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), fmt.Sprintf(tc.want, port)) {
				t.Fatalf("Run = %v, want %q and address already in use", err, fmt.Sprintf(tc.want, port))
			}
			// Nothing is left bound: the port it did take is free again.
			if tc.network == "udp" {
				l, err := net.Listen("tcp", "0.0.0.0:"+itoa(port))
				if err != nil {
					t.Fatalf("TCP port %d still held after the failed start: %v", port, err)
				}
				l.Close()
			}
		})
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
