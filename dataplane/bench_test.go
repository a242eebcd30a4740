package dataplane_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/dataplane"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/upstreams"
)

// BenchmarkRequest is the cost of one request through a pair of sidecars
// (QUIC and TLS between them), beside the same request sent straight to the
// app: the baseline. 16 callers in parallel, 1 KiB POSTs, keep-alive. Both
// sidecars run in this process, so -cpuprofile shows the whole data path;
// `make bench-dataplane` measures the same with real processes and nginx.
func BenchmarkRequest(b *testing.B) {
	cp := meshtest.NewEnv(b).StartControlPlane()
	app := startEcho(b, "b")
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(b, "a"), "http"))
	cp.StartSidecar("default", "b", meshtest.WithApp(app, "http"), meshtest.WithInstance("b-quic"))
	cp.StartSidecar("default", "c", meshtest.WithApp(app, "http"), meshtest.WithInstance("c-tls"),
		meshtest.WithOptions(func(o *dataplane.Options) { o.NoQUIC = true }))
	b.Run("direct", func(b *testing.B) { benchRequests(b, "http://"+app+"/echo", "b") })
	b.Run("quic", func(b *testing.B) { benchRequests(b, "http://"+a.Info.Outbound+"/echo", "b") })
	b.Run("tls", func(b *testing.B) { benchRequests(b, "http://"+a.Info.Outbound+"/echo", "c") })
}

// BenchmarkTracing is BenchmarkRequest's QUIC path with the mesh's tracing
// off (the baseline), on with nothing sampled (what every unsampled
// request pays: a traceparent made and carried), at the default 1 % and
// with every request recorded — its spans exported to the control plane,
// which keeps them on disk, in this same process.
func BenchmarkTracing(b *testing.B) {
	for _, tc := range []struct {
		name string
		opts []meshtest.CPOption
	}{
		{"off", nil},
		{"sampled=0%", []meshtest.CPOption{meshtest.WithTracing(0)}},
		{"sampled=1%", []meshtest.CPOption{meshtest.WithTracing(1)}},
		{"sampled=100%", []meshtest.CPOption{meshtest.WithTracing(100)}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cp := meshtest.NewEnv(b).StartControlPlane(tc.opts...)
			a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(b, "a"), "http"))
			cp.StartSidecar("default", "b", meshtest.WithApp(startEcho(b, "b"), "http"))
			benchRequests(b, "http://"+a.Info.Outbound+"/echo", "b")
		})
	}
}

// benchRequests sends 1 KiB POSTs to url (Host host) from 16 callers,
// keep-alive, once it answers.
func benchRequests(b *testing.B, url, host string) {
	body := bytes.Repeat([]byte("x"), 1024)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	once := func() error {
		req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	waitFor(b, host+" reachable", func() bool { return once() == nil })
	b.SetParallelism(8) // 16 callers on 2 cores
	before := udpDatagrams(b)
	b.ResetTimer()
	defer func() {
		b.ReportMetric(float64(udpDatagrams(b)-before)/float64(b.N), "datagrams/op")
	}()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := once(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// udpDatagrams is the host's count of UDP datagrams sent (/proc/net/snmp):
// the packets a request costs between the sidecars, ACKs included.
func udpDatagrams(b testing.TB) int64 {
	b.Helper()
	data, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	var header []string
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || fields[0] != "Udp:" {
			continue
		}
		if header == nil {
			header = fields
			continue
		}
		for i, name := range header {
			if name == "OutDatagrams" && i < len(fields) {
				n, _ := strconv.ParseInt(fields[i], 10, 64)
				return n
			}
		}
	}
	return 0
}

// BenchmarkTunnel is TCP through a pair of sidecars (a CONNECT stream over
// QUIC between them, docs/tcp.md) beside the same TCP straight to the app
// (an echo server): round trips of 100 bytes on a kept connection, a new
// connection and one round trip (the tunnel's setup), and 64 KiB written
// and read back (throughput, MB/s). Both sidecars run in this process.
func BenchmarkTunnel(b *testing.B) {
	app := serveTCP(b, func(c net.Conn) { _, _ = io.Copy(c, c) })
	cp := meshtest.NewEnv(b).StartControlPlane()
	cp.StartSidecar("default", "db", meshtest.WithApp(app, "tcp"))
	port := meshtest.FreePort(b)
	cp.StartSidecar("default", "web", withUpstreams(upstreams.Upstream{Service: "db", Port: uint16(port)}))
	tunnel := "127.0.0.1:" + strconv.Itoa(port)
	waitFor(b, "the tunnel", func() bool { return echoOnce(tunnel, 1) == nil })
	for _, path := range []struct{ name, addr string }{{"direct", app}, {"quic", tunnel}} {
		b.Run("roundtrip/"+path.name, func(b *testing.B) {
			c, err := net.Dial("tcp", path.addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msg, got := bytes.Repeat([]byte("x"), 100), make([]byte, 100)
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, got); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("connect/"+path.name, func(b *testing.B) {
			for b.Loop() {
				if err := echoOnce(path.addr, 100); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("throughput/"+path.name, func(b *testing.B) {
			c, err := net.Dial("tcp", path.addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			const size = 64 << 10
			msg, got := bytes.Repeat([]byte("x"), size), make([]byte, size)
			b.SetBytes(2 * size) // there and back
			for b.Loop() {
				done := make(chan error, 1)
				go func() { _, err := c.Write(msg); done <- err }()
				if _, err := io.ReadFull(c, got); err != nil {
					b.Fatal(err)
				}
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// echoOnce opens a connection to addr, has n bytes echoed, and closes it.
func echoOnce(addr string, n int) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(bytes.Repeat([]byte("x"), n)); err != nil {
		return err
	}
	_, err = io.ReadFull(c, make([]byte, n))
	return err
}
