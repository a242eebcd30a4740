package controlplane_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/consultest"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/proxylesstest"
	"github.com/micromesh/micromesh/xds/policymeta"
)

// backend is a gRPC server with its own mTLS (a proxyless server): it
// accepts only callers of its namespace and answers with its name and the
// caller's SPIFFE ID.
type backend struct {
	testgrpc.UnimplementedTestServiceServer
	name string
	port int
	busy atomic.Int32 // busyCall requests seen
}

// slowCall is a request the backend answers only after 5 s (or its
// caller's deadline).
const slowCall = 7

// busyCall is a request the backend turns away (RESOURCE_EXHAUSTED) every
// other time.
const busyCall = 8

func (b *backend) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if req.GetResponseSize() == busyCall && b.busy.Add(1)%2 == 1 {
		return nil, status.Error(codes.ResourceExhausted, "busy")
	}
	if req.GetResponseSize() == slowCall {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Second):
		}
	}
	caller := ""
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
			if id, err := identity.IDFromCertificate(info.State.PeerCertificates[0]); err == nil {
				caller = id.String()
			}
		}
	}
	return &testgrpc.SimpleResponse{ServerId: b.name, Hostname: caller}, nil
}

func startBackend(t *testing.T, cp *meshtest.ControlPlane, name string) *backend {
	t.Helper()
	creds := cp.Join("default", "greeter")
	src := identity.NewSource(creds, identity.RemoteRenewer(cp.Info.Address))
	sameNamespace := func(id identity.ID) error {
		if id.Namespace != "default" {
			return fmt.Errorf("namespace %s may not call greeter", id.Namespace)
		}
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(src.ServerTLSConfig(sameNamespace))))
	b := &backend{name: name, port: ln.Addr().(*net.TCPAddr).Port}
	testgrpc.RegisterTestServiceServer(srv, b)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return b
}

func (b *backend) instance() registry.Instance {
	return registry.Instance{ID: b.name, Service: "greeter", Namespace: "default", Address: "127.0.0.1",
		Port: uint16(b.port), Kind: registry.KindProxyless, Protocol: registry.ProtocolGRPC,
		Version: "v" + strings.TrimPrefix(b.name, "greeter-"),
		// A deadline for one method, which grpc-go's client applies, and a
		// fault on another (the backend does not implement it: only the
		// fault answers UNAVAILABLE).
		// And what is retried: RESOURCE_EXHAUSTED (gRFC A44).
		Metadata: policymeta.Metadata(map[string]string{"/grpc.testing.TestService/UnaryCall:timeout": "300ms",
			"/grpc.testing.TestService/UnaryCall:retry_on":         "resource-exhausted,unavailable",
			"/grpc.testing.TestService/EmptyCall:fault_abort_grpc": "14", "/grpc.testing.TestService/EmptyCall:fault_header": "x-chaos"})}
}

// proxylessClient dials xds:///greeter with grpc-go's xDS resolver and xDS
// credentials, bootstrapped as `meshctl bootstrap grpc` would.
func proxylessClient(t *testing.T, cp *meshtest.ControlPlane) testgrpc.TestServiceClient {
	t.Helper()
	return testgrpc.NewTestServiceClient(proxylesstest.Dial(t, cp, "default", "client", "greeter"))
}

// The scenario of the issue: two mTLS backends registered as one service; a
// proxyless client calls xds:///greeter; every call succeeds over mTLS and
// both backends serve; after one is deregistered, all traffic goes to the
// other within a second.
func testProxylessClient(t *testing.T, cp *meshtest.ControlPlane) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b1, b2 := startBackend(t, cp, "greeter-1"), startBackend(t, cp, "greeter-2")
	for _, b := range []*backend{b1, b2} {
		if err := cp.Registry().Register(ctx, b.instance()); err != nil {
			t.Fatal(err)
		}
	}
	client := proxylessClient(t, cp)

	served := map[string]int{}
	deadline := time.Now().Add(20 * time.Second)
	for served[b1.name] == 0 || served[b2.name] == 0 {
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
		if err != nil {
			t.Fatalf("call through xds:///greeter: %v", err)
		}
		if resp.GetHostname() != "spiffe://micromesh.local/ns/default/svc/client" {
			t.Fatalf("backend saw caller %q: mTLS did not present the client's identity", resp.GetHostname())
		}
		served[resp.GetServerId()]++
		if time.Now().After(deadline) {
			t.Fatalf("after 20s only %v served", served)
		}
	}
	for range 40 {
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		if err != nil {
			t.Fatalf("call %v: %v", served, err)
		}
		served[resp.GetServerId()]++
	}
	t.Logf("both backends served: %v", served)

	// The method's timeout reaches the client: a call the backend would
	// answer in 5 s ends at 300 ms.
	start := time.Now()
	_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: slowCall})
	if status.Code(err) != codes.DeadlineExceeded || time.Since(start) > 2*time.Second {
		t.Errorf("slow call: %v after %v; want DeadlineExceeded after the method's 300 ms", err, time.Since(start))
	}

	// The method's retry_on reaches the client: every other busyCall is
	// turned away RESOURCE_EXHAUSTED, and each call succeeds on a retry.
	for i := range 6 {
		if _, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: busyCall}); err != nil {
			t.Fatalf("busy call %d: %v; want RESOURCE_EXHAUSTED retried per retry_on", i, err)
		}
	}
	if turned := b1.busy.Load() + b2.busy.Load(); turned < 9 {
		t.Errorf("the backends saw %d busy calls for 6 answers; want the retries among them", turned)
	}

	// The other method's opt-in fault reaches grpc-go's fault filter (gRFC
	// A33): calls with x-chaos fail UNAVAILABLE in the client, never
	// reaching a backend; the others reach one (which does not implement
	// the method).
	chaos := metadata.AppendToOutgoingContext(ctx, "x-chaos", "1")
	for range 5 {
		if _, err := client.EmptyCall(chaos, &testgrpc.Empty{}); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "fault injection") {
			t.Fatalf("EmptyCall with x-chaos under its fault: %v; want UNAVAILABLE from fault injection", err)
		}
		if _, err := client.EmptyCall(ctx, &testgrpc.Empty{}); status.Code(err) != codes.Unimplemented {
			t.Fatalf("EmptyCall without x-chaos: %v; want the backend's UNIMPLEMENTED", err)
		}
	}

	// A split that sends every call to v2 (greeter-2): grpc-go's weighted
	// clusters; cleared, both serve again.
	split := registry.Split{Service: "greeter", Versions: []registry.VersionWeight{{Version: "v1", Weight: 0}, {Version: "v2", Weight: 100}}}
	if err := cp.Registry().SetSplit(ctx, split); err != nil {
		t.Fatal(err)
	}
	callsUntil(ctx, t, client, "20 calls in a row on v2 under the split", func(last []string) bool {
		return len(last) >= 20 && !slices.Contains(last[len(last)-20:], b1.name)
	})
	// With a version header, grpc-go's header matchers send a call whose
	// metadata names v1 there, whatever the shares.
	split.Header = "x-version"
	if err := cp.Registry().SetSplit(ctx, split); err != nil {
		t.Fatal(err)
	}
	tester := metadata.AppendToOutgoingContext(ctx, "x-version", "v1")
	until := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.UnaryCall(tester, &testgrpc.SimpleRequest{})
		if err == nil && resp.GetServerId() == b1.name {
			break
		}
		if time.Now().After(until) {
			t.Fatalf("x-version: v1 never reached v1 within 10 s: %v %v", resp.GetServerId(), err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cp.Registry().DeleteSplit(ctx, "default", "greeter"); err != nil {
		t.Fatal(err)
	}
	callsUntil(ctx, t, client, "v1 to serve again without the split", func(last []string) bool {
		return len(last) > 0 && last[len(last)-1] == b1.name
	})

	if err := cp.Registry().Deregister(ctx, b1.name); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	streak := 0
	for streak < 20 {
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		if err != nil {
			t.Fatalf("call after deregistering %s: %v", b1.name, err)
		}
		if resp.GetServerId() == b2.name {
			streak++
		} else {
			streak = 0
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("traffic still reaches %s 5s after it was deregistered", b1.name)
		}
	}
	// The streak began at most 20 calls ago: the shift took less than this.
	if took := time.Since(start); took > time.Second {
		t.Errorf("all traffic reached %s only %v after deregistering %s; want < 1s", b2.name, took, b1.name)
	} else {
		t.Logf("all traffic on %s within %v of deregistering %s", b2.name, took.Round(time.Millisecond), b1.name)
	}
}

// callsUntil calls until done holds for the backends that answered so
// far, failing after 10 s. grpc-go switches an RPC's route to a cluster
// before its balancer has one for it, so a call in that instant fails
// UNAVAILABLE "unknown cluster selected for RPC" (the race grpc-java fixed
// in its #11947): those are tolerated for a second after the first and
// logged. Any other error fails — "cluster has been removed" too: the
// control plane keeps a dropped version's cluster while routes may still
// send to it (lingerFor).
func callsUntil(ctx context.Context, t *testing.T, client testgrpc.TestServiceClient, what string, done func(servedBy []string) bool) {
	t.Helper()
	var servedBy []string
	var raced int
	var firstRace time.Time
	defer func() {
		if raced > 0 {
			t.Logf("waiting for %s: %d calls failed while grpc-go switched clusters", what, raced)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !done(servedBy) {
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		if status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "unknown cluster selected for RPC") {
			if raced == 0 {
				firstRace = time.Now()
			}
			raced++
			if time.Since(firstRace) > time.Second {
				t.Fatalf("waiting for %s: calls still fail a second after the switch began: %v", what, err)
			}
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		servedBy = append(servedBy, resp.GetServerId())
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10s (last served by %v)", what, servedBy[max(0, len(servedBy)-20):])
		}
	}
}

func TestProxylessGRPCClientEmbedded(t *testing.T) {
	testProxylessClient(t, meshtest.NewEnv(t).StartControlPlane())
}

func TestProxylessGRPCClientConsul(t *testing.T) {
	agent := consultest.Start(t)
	testProxylessClient(t, meshtest.NewEnv(t).StartControlPlane(meshtest.WithConsul(agent.Addr)))
}

// With Consul down, the control plane keeps serving its last snapshot (a
// client that connects during the outage still gets its config) and logs the
// outage once; when Consul is back, it follows the registry again.
func TestConsulOutageKeepsServing(t *testing.T) {
	agent := consultest.Start(t)
	cp := meshtest.NewEnv(t).StartControlPlane(meshtest.WithConsul(agent.Addr))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	b1, b2 := startBackend(t, cp, "greeter-1"), startBackend(t, cp, "greeter-2")
	for _, b := range []*backend{b1, b2} {
		if err := cp.Registry().Register(ctx, b.instance()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := proxylessClient(t, cp).UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatal(err)
	}

	agent.Stop()
	late := proxylessClient(t, cp) // connects while Consul is down
	for range 10 {
		if _, err := late.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true)); err != nil {
			t.Fatalf("a client connecting during the Consul outage: %v", err)
		}
	}

	agent.Restart() // a dev agent comes back empty: only greeter-2 registers again
	if err := cp.Registry().Register(ctx, b2.instance()); err != nil {
		t.Fatal(err)
	}
	// Between the restart and the re-registration Consul has no greeter, and
	// neither has the mesh: calls may fail until greeter-2 is back.
	streak := 0
	for deadline := time.Now().Add(15 * time.Second); streak < 20; {
		resp, err := late.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		if err == nil && resp.GetServerId() == b2.name {
			streak++
		} else {
			streak = 0
		}
		if time.Now().After(deadline) {
			t.Fatalf("after Consul came back, calls do not all reach %s (last error: %v)", b2.name, err)
		}
	}
	logs := cp.Logs()
	if n := strings.Count(logs, "consul unreachable"); n != 1 {
		t.Errorf("the outage was logged %d times, want once", n)
	}
	if n := strings.Count(logs, "consul reachable again"); n != 1 {
		t.Errorf("the recovery was logged %d times, want once", n)
	}
}
