package dataplane_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/dataplane/proxy"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/poll"
)

// echo is an HTTP app that says who it is and what it received.
type echoReply struct {
	App    string `json:"app"`
	Caller string `json:"caller"`
	Proto  string `json:"proto"`
	Path   string `json:"path"`
	Body   string `json:"body"`
	XFCC   string `json:"xfcc,omitempty"` // x-forwarded-client-cert
	// RequestID is the x-request-id the app received.
	RequestID string `json:"requestId,omitempty"`
	// Traceparent is the W3C trace context the app received, when the
	// request asks for it (X-Echo-Trace: 1: an answer of constant size
	// otherwise, so that the benchmarks compare like with like).
	Traceparent string `json:"traceparent,omitempty"`
}

func startEcho(t testing.TB, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		if code, err := strconv.Atoi(r.Header.Get("X-Echo-Status")); err == nil {
			w.WriteHeader(code) // the answer a test asks for
		}
		var trace string
		if r.Header.Get("X-Echo-Trace") == "1" {
			trace = strings.Join(r.Header.Values("Traceparent"), ",")
		}
		_ = json.NewEncoder(w).Encode(echoReply{App: name, Caller: r.Header.Get("X-Mesh-Caller"), Proto: r.Proto, Path: r.URL.Path, Body: string(body),
			XFCC: strings.Join(r.Header.Values("X-Forwarded-Client-Cert"), ","), RequestID: strings.Join(r.Header.Values("X-Request-Id"), ","),
			Traceparent: trace})
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}

// call sends a request to a sidecar's outbound listener for service host.
func call(t *testing.T, outbound, host, path string, header http.Header) (*http.Response, echoReply) {
	t.Helper()
	req, err := http.NewRequest("POST", "http://"+outbound+path, strings.NewReader("ping"))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e echoReply
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("reply %q: %v", b, err)
		}
	} else {
		e.Body = string(b)
	}
	return resp, e
}

func metrics(t *testing.T, admin string) string {
	t.Helper()
	return adminText(t, admin, "/metrics")
}

// echoPair starts sidecars a and b of namespace default in front of echo
// apps, and waits until a reaches b.
func echoPair(t *testing.T, cp *meshtest.ControlPlane) (a, b *meshtest.Sidecar) {
	t.Helper()
	a = cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
	b = cp.StartSidecar("default", "b", meshtest.WithApp(startEcho(t, "b"), "http"))
	waitReachable(t, a, "b")
	return a, b
}

// waitReachable waits until from's outbound reaches service to.
func waitReachable(t *testing.T, from *meshtest.Sidecar, to string) {
	t.Helper()
	waitFor(t, "the caller to reach "+to, func() bool {
		resp, _ := call(t, from.Info.Outbound, to, "/", nil)
		return resp.StatusCode == http.StatusOK
	})
}

// adminText is what a sidecar's admin endpoint answers at path.
func adminText(t *testing.T, admin, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + admin + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// getJSON decodes what url answers into v.
func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, what, 15*time.Second, 20*time.Millisecond, cond)
}

// The script of the issue: a control plane, two echo apps, two sidecars.
func TestRequestThroughTheMesh(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
	b := cp.StartSidecar("default", "b", meshtest.WithApp(startEcho(t, "b"), "http"))

	var reply echoReply
	waitFor(t, "a can reach b", func() bool {
		resp, e := call(t, a.Info.Outbound, "b", "/hello", nil)
		reply = e
		return resp.StatusCode == 200
	})
	if reply.App != "b" || reply.Path != "/hello" || reply.Body != "ping" {
		t.Fatalf("reply = %+v", reply)
	}
	if reply.Caller != "spiffe://micromesh.local/ns/default/svc/a" {
		t.Errorf("b saw caller %q, want a's SPIFFE ID", reply.Caller)
	}
	// It went over QUIC: b's inbound counts it as such.
	if m := metrics(t, b.Info.Admin); !strings.Contains(m, `micromesh_requests_total{destination="b.default",direction="inbound",grpc_method="",grpc_status="",response_code="200",source="a.default",transport="quic"}`) {
		t.Errorf("b's metrics show no inbound QUIC request from a:\n%s", grep(m, "micromesh_requests_total"))
	}
	if m := metrics(t, b.Info.Admin); !strings.Contains(m, `micromesh_open_connections{direction="inbound",transport="quic"} 1`) || !strings.Contains(m, "micromesh_xds_connected 1") || !strings.Contains(m, "micromesh_config_held 0") {
		t.Errorf("b's metrics lack its QUIC connection or xDS state:\n%s", grep(m, "micromesh_open_connections")+grep(m, "micromesh_xds"))
	}
	// a's /clusters shows b's cluster with its endpoint, healthy, none
	// ejected. (Not "nothing in flight": a's handler may still be
	// finishing the last call when the answer is already here.)
	var clusters struct{ Clusters []proxy.ClusterStatus }
	getJSON(t, "http://"+a.Info.Admin+"/clusters", &clusters)
	var bc *proxy.ClusterStatus
	for i := range clusters.Clusters {
		if clusters.Clusters[i].Name == "b.default" {
			bc = &clusters.Clusters[i]
		}
	}
	if bc == nil || bc.Transport != "quic" || len(bc.Endpoints) != 1 || !bc.Endpoints[0].Healthy || bc.Endpoints[0].Ejected || bc.MaxRequests == 0 {
		t.Errorf("a's /clusters, b.default = %+v (of %+v)", bc, clusters.Clusters)
	} else if q := bc.Endpoints[0].QUIC; q == nil || q.PacketsSent == 0 || q.PacketsReceived == 0 || q.SmoothedRTTMillis <= 0 || q.CongestionWindow == 0 {
		// ... and the QUIC connection to it: RTT, window, packets.
		t.Errorf("a's /clusters shows no QUIC connection state for b's endpoint: %+v", q)
	}
	if m := metrics(t, a.Info.Admin); !strings.Contains(m, `micromesh_quic_packets_sent_total{cluster="b.default",endpoint=`) ||
		!strings.Contains(m, `micromesh_quic_smoothed_rtt_seconds{cluster="b.default",endpoint=`) {
		t.Errorf("a's metrics lack the QUIC connection to b:\n%s", grep(m, "micromesh_quic"))
	}
	// a's /config_dump shows the resources in force as Envoy would: proto
	// JSON names, typed configs with their @type.
	var dump struct {
		Connected bool
		Listeners []struct {
			Name    string
			Address struct{ SocketAddress struct{ Protocol string } }
		}
		Clusters []struct {
			Name            string
			TransportSocket struct {
				TypedConfig map[string]any
			}
		}
	}
	getJSON(t, "http://"+a.Info.Admin+"/config_dump", &dump)
	udp, quicCluster := 0, false
	for _, l := range dump.Listeners {
		if l.Address.SocketAddress.Protocol == "UDP" {
			udp++
		}
	}
	for _, c := range dump.Clusters {
		if c.Name == "b.default" && c.TransportSocket.TypedConfig["@type"] == "type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicUpstreamTransport" {
			quicCluster = true
		}
	}
	if !dump.Connected || len(dump.Listeners) != 3 || udp != 1 || !quicCluster {
		t.Errorf("a's /config_dump: connected %v, %d listeners (%d UDP), b.default over QUIC: %v", dump.Connected, len(dump.Listeners), udp, quicCluster)
	}
	// The caller header cannot be spoofed, nor x-forwarded-client-cert,
	// which b's sidecar sets as Envoy's SANITIZE_SET does.
	_, spoofed := call(t, a.Info.Outbound, "b.default", "/", http.Header{"X-Mesh-Caller": {"spiffe://micromesh.local/ns/default/svc/admin"},
		"X-Forwarded-Client-Cert": {"URI=spiffe://micromesh.local/ns/default/svc/admin"}})
	if spoofed.Caller != "spiffe://micromesh.local/ns/default/svc/a" {
		t.Errorf("a spoofed x-mesh-caller reached b: %q", spoofed.Caller)
	}
	if !regexp.MustCompile(`^By=spiffe://micromesh\.local/ns/default/svc/b;Hash=[0-9a-f]{64};URI=spiffe://micromesh\.local/ns/default/svc/a$`).MatchString(spoofed.XFCC) {
		t.Errorf("x-forwarded-client-cert at b: %q, want By (b), Hash and URI (a) only", spoofed.XFCC)
	}
	// A request gets an x-request-id (a random UUID) at a's sidecar, as
	// Envoy's generate_request_id; one the app sent arrives as it was.
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(spoofed.RequestID) {
		t.Errorf("x-request-id at b: %q, want one UUID", spoofed.RequestID)
	}
	if _, e := call(t, a.Info.Outbound, "b.default", "/", http.Header{"X-Request-Id": {"order-42"}}); e.RequestID != "order-42" {
		t.Errorf("the app's x-request-id arrived at b as %q", e.RequestID)
	}
	// An unknown service: 503 naming it.
	resp, e := call(t, a.Info.Outbound, "nosuch", "/", nil)
	if resp.StatusCode != 503 || !strings.Contains(e.Body, `"nosuch" is not a service`) || !strings.Contains(e.Body, "b.default") {
		t.Errorf("unknown service: %d %q", resp.StatusCode, e.Body)
	}
}

// A caller of another namespace, with a valid certificate, is refused by
// b's RBAC rules (default: same namespace only).
func TestRBACDeniesOtherNamespaces(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	b := cp.StartSidecar("default", "b", meshtest.WithApp(startEcho(t, "b"), "http"))
	intruder := cp.Join("prod", "web")
	friend := cp.Join("default", "web")
	get := func(creds *identity.Credentials) (int, string) {
		cert := creds.TLSCertificate()
		cfg := identity.ClientTLSConfig(func() *identity.Bundle { return creds.Bundle }, func() *tls.Certificate { return cert },
			identity.AuthorizeID(b.Creds.ID))
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
		resp, err := client.Get("https://" + b.Info.Inbound + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get(intruder); code != http.StatusForbidden || !strings.Contains(body, "RBAC") || !strings.Contains(body, "ns/prod/svc/web") {
		t.Errorf("a caller from prod got %d %q, want 403 naming it", code, body)
	}
	if code, _ := get(friend); code != 200 {
		t.Errorf("a caller of the same namespace got %d", code)
	}
	if m := metrics(t, b.Info.Admin); !strings.Contains(m, "micromesh_rbac_denied_total 1") {
		t.Error("the denial is not counted")
	}
}

// Traffic to an instance registered as kind envoy goes over HTTP/2 + TLS.
func TestFallbackToTLSForEnvoyPeers(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
	b := cp.StartSidecar("default", "b", meshtest.WithApp(startEcho(t, "b"), "http"), meshtest.WithInstance("b-1"))
	// b's inbound port also registered as an Envoy instance of b: the
	// cluster is mixed, so every caller uses HTTP/2 over TLS.
	_, port, _ := net.SplitHostPort(b.Info.Inbound)
	p, _ := strconv.Atoi(port)
	if err := cp.Registry().Register(context.Background(), registry.Instance{ID: "b-envoy", Service: "b", Address: "127.0.0.1", Port: uint16(p), Kind: registry.KindEnvoy}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a reaches b over TLS", func() bool {
		resp, _ := call(t, a.Info.Outbound, "b", "/", nil)
		return resp.StatusCode == 200 && strings.Contains(metrics(t, b.Info.Admin), `transport="tls"`)
	})
}

func grep(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
