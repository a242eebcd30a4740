package dataplane_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/micromesh/micromesh/dataplane"
	"github.com/micromesh/micromesh/internal/meshtest"
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
