package dataplane_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/dataplane"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/poll"
	"github.com/micromesh/micromesh/internal/upstreams"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
)

// startTCPEcho runs a TCP app in the manner of a database: it greets
// first ("ready"), answers each line in upper case, and when the client
// ends its side says "bye" and closes.
func startTCPEcho(t *testing.T) string {
	t.Helper()
	return serveTCP(t, func(c net.Conn) {
		_, _ = io.WriteString(c, "ready\n")
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadBytes('\n')
			if len(line) > 0 {
				if _, werr := c.Write(bytes.ToUpper(line)); werr != nil {
					return
				}
			}
			if err != nil {
				break
			}
		}
		_, _ = io.WriteString(c, "bye\n")
	})
}

// serveTCP runs a TCP app on a loopback port until the test ends: handle
// serves each connection, which is closed when it returns.
func serveTCP(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// withUpstreams has the sidecar reach TCP services at loopback ports.
func withUpstreams(us ...upstreams.Upstream) meshtest.SidecarOption {
	return meshtest.WithOptions(func(o *dataplane.Options) { o.Upstreams = us })
}

// session opens a connection to a tunnel listener and plays the echo
// app's protocol through it: the greeting, lines answered, then the
// client's end answered "bye" and the server's.
func session(t *testing.T, port int, lines ...string) error {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	r := bufio.NewReader(c)
	if got, err := r.ReadString('\n'); got != "ready\n" {
		return fmt.Errorf("greeting %q, %v", got, err)
	}
	for _, l := range lines {
		if _, err := io.WriteString(c, l+"\n"); err != nil {
			return err
		}
		if got, err := r.ReadString('\n'); got != strings.ToUpper(l)+"\n" {
			return fmt.Errorf("answer to %q: %q, %v", l, got, err)
		}
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	rest, err := io.ReadAll(r)
	if err != nil || string(rest) != "bye\n" {
		return fmt.Errorf("after our end: %q, %v; want \"bye\" and the app's end", rest, err)
	}
	return nil
}

// TCP through the mesh: web's app reaches db, a TCP service, at a port of
// its sidecar; the bytes ride a CONNECT stream over QUIC between the two
// sidecars, mTLS checked, and each side's end reaches the other.
func TestTCPThroughTheMesh(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	db := cp.StartSidecar("default", "db", meshtest.WithApp(startTCPEcho(t), "tcp"))
	port, ghost := meshtest.FreePort(t), meshtest.FreePort(t)
	web := cp.StartSidecar("default", "web", withUpstreams(upstreams.Upstream{Service: "db", Port: uint16(port)},
		upstreams.Upstream{Service: "ghost", Port: uint16(ghost)}))

	waitFor(t, "web to reach db", func() bool { return session(t, port, "ping") == nil })
	if err := session(t, port, "hello", "how are you"); err != nil {
		t.Fatal(err)
	}
	// Over QUIC, counted at both ends as a TCP connection (not a request).
	dbm := metrics(t, db.Info.Admin)
	for _, want := range []string{
		`micromesh_tcp_connections_opened_total{destination="db.default",direction="inbound",source="web.default"}`,
		`micromesh_open_connections{direction="inbound",transport="quic"} 1`,
	} {
		if !strings.Contains(dbm, want) {
			t.Errorf("db's metrics lack %s:\n%s", want, grep(dbm, "micromesh_tcp"))
		}
	}
	if strings.Contains(dbm, `micromesh_requests_total{direction="inbound"`) {
		t.Errorf("tunnels counted as requests:\n%s", grep(dbm, "micromesh_requests_total"))
	}
	wm := metrics(t, web.Info.Admin)
	// "hello\n" and "how are you\n" (18 bytes) from web's app; "ready\n",
	// the two answers and "bye\n" (28) back, in the last session.
	waitFor(t, "the sessions' bytes counted", func() bool {
		wm = metrics(t, web.Info.Admin)
		return strings.Contains(wm, `micromesh_tcp_connections_closed_total{destination="db.default",direction="outbound",source="web.default"}`)
	})
	if got := metricValue(wm, `micromesh_tcp_received_bytes_total{destination="db.default",direction="outbound",source="web.default"}`); got < 18 {
		t.Errorf("web's received bytes = %v, want at least 18:\n%s", got, grep(wm, "micromesh_tcp"))
	}

	// An HTTP request to it is told how to reach it.
	if resp, reply := call(t, web.Info.Outbound, "db", "/", nil); resp.StatusCode != http.StatusNotFound || !strings.Contains(reply.Body, "db.default is a TCP service") {
		t.Errorf("HTTP to a TCP service: %d %q", resp.StatusCode, reply.Body)
	}

	// A service that is not in the mesh: the connection is closed at once,
	// the reason logged and counted.
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(ghost))
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("a tunnel to a service not in the mesh: read %d, %v; want the connection closed", n, err)
	}
	c.Close()
	waitFor(t, "the refusal logged", func() bool {
		return strings.Contains(cp.Logs(), "ghost.default is not a service in the mesh this workload can reach")
	})
	if wm := metrics(t, web.Info.Admin); !strings.Contains(wm, `micromesh_tcp_connections_failed_total{destination="ghost.default",direction="outbound",reason="no_cluster"} 1`) {
		t.Errorf("the refusal is not counted:\n%s", grep(wm, "failed"))
	}
}

// A caller of another namespace is refused by db's RBAC: its connection
// is closed, db counts the denial, the caller says why.
func TestTCPRefusedByRBAC(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	db := cp.StartSidecar("default", "db", meshtest.WithApp(startTCPEcho(t), "tcp"),
		meshtest.WithOptions(func(o *dataplane.Options) { o.Policy = map[string]string{"allow_from": "web.prod"} }))
	friend, intruder := meshtest.FreePort(t), meshtest.FreePort(t)
	cp.StartSidecar("prod", "web", withUpstreams(upstreams.Upstream{Service: "db", Namespace: "default", Port: uint16(friend)}))
	cp.StartSidecar("prod", "batch", withUpstreams(upstreams.Upstream{Service: "db", Namespace: "default", Port: uint16(intruder)}))
	waitFor(t, "web.prod, which db admits, to reach it", func() bool { return session(t, friend, "ok") == nil })
	if err := session(t, intruder, "let me in"); err == nil {
		t.Fatal("batch.prod, which db does not admit, got through")
	}
	if m := metrics(t, db.Info.Admin); !strings.Contains(m, "micromesh_rbac_denied_total 1") {
		t.Errorf("db did not count the denial:\n%s", grep(m, "denied"))
	}
	waitFor(t, "the caller's sidecar to say why", func() bool {
		return strings.Contains(cp.Logs(), "refused it: 403") && strings.Contains(cp.Logs(), "spiffe://micromesh.local/ns/prod/svc/batch may not call CONNECT")
	})
}

// Where the callee's instances are not all built-in sidecars the tunnel
// rides HTTP/2 over TLS, as Envoy's would; large transfers stream both
// ways at once without either side waiting for the other.
func TestTCPOverTLSAndLargeTransfers(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	db := cp.StartSidecar("default", "db", meshtest.WithApp(startTCPEcho(t), "tcp"), meshtest.WithInstance("db-1"))
	_, p, _ := net.SplitHostPort(db.Info.Inbound)
	inbound, _ := strconv.Atoi(p)
	if err := cp.Registry().Register(context.Background(), registry.Instance{ID: "db-envoy", Service: "db", Address: "127.0.0.1", Port: uint16(inbound),
		Kind: registry.KindEnvoy, Protocol: registry.ProtocolTCP}); err != nil {
		t.Fatal(err)
	}
	port := meshtest.FreePort(t)
	cp.StartSidecar("default", "web", withUpstreams(upstreams.Upstream{Service: "db", Port: uint16(port)}))
	waitFor(t, "web to reach db over TLS", func() bool {
		return session(t, port, "ping") == nil && strings.Contains(metrics(t, db.Info.Admin), `micromesh_open_connections{direction="inbound",transport="tls"} 1`)
	})

	// 4 MiB of lines written while the answers are read.
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	line := strings.Repeat("abcdefgh", 127) + "\n" // 1 KiB
	const lines = 4096
	go func() {
		for range lines {
			if _, err := io.WriteString(c, line); err != nil {
				return
			}
		}
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	want := "ready\n" + strings.Repeat(strings.ToUpper(line), lines) + "bye\n"
	if string(got) != want {
		t.Fatalf("got %d bytes, want %d (the greeting, %d answers, bye)", len(got), len(want), lines)
	}
}

// metricValue is the value of the sample named (with its labels), -1 if
// there is none.
func metricValue(text, sample string) float64 {
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// An instance that does not answer (its sidecar gone without
// deregistering) costs a connection nothing: the tunnel is tried on
// another instance, the app's first bytes held until one took it.
func TestTCPTriesAnotherInstance(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	cp.StartSidecar("default", "db", meshtest.WithApp(startTCPEcho(t), "tcp"))
	// Nothing listens there: its connections are refused at once (an
	// Envoy instance: the cluster is HTTP/2 over TLS then, whose dials
	// fail fast; over QUIC each would wait out the handshake timeout).
	gone := meshtest.FreePort(t)
	if err := cp.Registry().Register(context.Background(), registry.Instance{ID: "db-gone", Service: "db", Address: "127.0.0.1",
		Port: uint16(gone), Kind: registry.KindEnvoy, Protocol: registry.ProtocolTCP, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	port := meshtest.FreePort(t)
	web := cp.StartSidecar("default", "web", withUpstreams(upstreams.Upstream{Service: "db", Port: uint16(port)}))
	waitFor(t, "web to know both instances", func() bool {
		return strings.Count(adminText(t, web.Info.Admin, "/clusters"), "127.0.0.1:") >= 2
	})
	for i := range 12 {
		if err := session(t, port, fmt.Sprintf("query %d", i)); err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
	}
	if m := metrics(t, web.Info.Admin); strings.Contains(m, "micromesh_tcp_connections_failed_total") {
		t.Errorf("a connection failed:\n%s", grep(m, "failed"))
	}
}

// A TCP service's split spreads connections over its versions, as a
// canary needs: all to v1, then all to v2, then some to each.
func TestTCPSplitBetweenVersions(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	for _, v := range []string{"v1", "v2"} {
		app := serveTCP(t, func(c net.Conn) { _, _ = io.WriteString(c, v+"\n") })
		cp.StartSidecar("default", "db", meshtest.WithApp(app, "tcp"), meshtest.WithInstance("db-"+v),
			meshtest.WithOptions(func(o *dataplane.Options) { o.Version = v }))
	}
	port := meshtest.FreePort(t)
	cp.StartSidecar("default", "web", withUpstreams(upstreams.Upstream{Service: "db", Port: uint16(port)}))
	admin := cp.RegistryClient(cp.Join(identity.SystemNamespace, "meshctl"))
	split := func(shares map[string]uint32) {
		t.Helper()
		sp := &registryv1.Split{Service: "db"}
		for v, w := range shares {
			sp.Versions = append(sp.Versions, &registryv1.VersionWeight{Version: v, Weight: w})
		}
		if _, err := admin.SetSplit(t.Context(), &registryv1.SetSplitRequest{Split: sp}); err != nil {
			t.Fatal(err)
		}
	}
	// versions counts which version greeted n connections.
	versions := func(n int) map[string]int {
		got := map[string]int{}
		for range n {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
			if err != nil {
				got["error"]++
				continue
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			c.Close()
			got[strings.TrimSpace(line)]++
		}
		return got
	}
	for _, step := range []struct {
		shares map[string]uint32
		want   func(map[string]int) bool
	}{
		{map[string]uint32{"v1": 100, "v2": 0}, func(g map[string]int) bool { return g["v1"] == 10 }},
		{map[string]uint32{"v1": 0, "v2": 100}, func(g map[string]int) bool { return g["v2"] == 10 }},
		{map[string]uint32{"v1": 50, "v2": 50}, func(g map[string]int) bool { return g["v1"] > 0 && g["v2"] > 0 && g["v1"]+g["v2"] == 40 }},
	} {
		split(step.shares)
		var got map[string]int
		poll.Until(t, fmt.Sprintf("connections to follow the split %v", step.shares), 15*time.Second, 50*time.Millisecond, func() bool {
			n := 10
			if len(step.shares) == 2 && step.shares["v1"] == 50 {
				n = 40
			}
			got = versions(n)
			return step.want(got)
		})
	}
}
