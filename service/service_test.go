package service_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/examples/helloworld/handler"
	pb "github.com/micromesh/micromesh/examples/helloworld/proto"
	"github.com/micromesh/micromesh/internal/envconfig"
	"github.com/micromesh/micromesh/internal/syncbuf"
	"github.com/micromesh/micromesh/service"
	"github.com/micromesh/micromesh/service/endpoints"
	merrors "github.com/micromesh/micromesh/service/errors"
)

// slowHello answers like helloworld, after a pause for "slow", and panics
// for "panic".
type slowHello struct {
	handler.Helloworld
	started chan struct{}
}

func (h slowHello) Call(ctx context.Context, req *pb.CallRequest) (*pb.CallResponse, error) {
	switch req.GetName() {
	case "slow":
		close(h.started)
		time.Sleep(300 * time.Millisecond)
	case "panic":
		panic("boom")
	}
	return h.Helloworld.Call(ctx, req)
}

// serveOn serves srv on a loopback port until the test ends; stop ends
// it sooner and returns what Serve returned.
func serveOn(t *testing.T, srv *service.Service) (addr string, stop func() error) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() { _ = stop() })
	return lis.Addr().String(), stop
}

// start serves helloworld (slowHello) with the framework and returns a
// client connection, the logs and a stop function that waits for Serve.
func start(t *testing.T) (*grpc.ClientConn, *syncbuf.Buffer, func() error, chan struct{}) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	started := make(chan struct{})
	srv := service.New(service.Name("helloworld"), service.Version("v1"), service.GracePeriod(5*time.Second),
		service.Logger(slog.New(slog.NewTextHandler(logs, nil))))
	pb.RegisterHelloworldServer(srv.Server(), slowHello{started: started})
	addr, stop := serveOn(t, srv)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, logs, stop, started
}

func TestServesProtobufAndJSON(t *testing.T) {
	conn, logs, _, _ := start(t)
	c := pb.NewHelloworldClient(conn)
	ctx := metadata.AppendToOutgoingContext(t.Context(), service.CallerHeader, "spiffe://micromesh.local/ns/default/svc/web")
	rsp, err := c.Call(ctx, &pb.CallRequest{Name: "Alice"})
	if err != nil || rsp.GetMsg() != "Hello Alice" {
		t.Fatalf("protobuf: %v %v", rsp, err)
	}
	// The same handler with JSON on the wire (application/grpc+json).
	var out []byte
	err = conn.Invoke(t.Context(), "/examples.helloworld.v1.Helloworld/Call", []byte(`{"name":"Bob"}`), &out, grpc.ForceCodec(rawJSON{}))
	if err != nil || string(out) != `{"msg":"Hello Bob"}` {
		t.Fatalf("json: %s %v", out, err)
	}
	if l := logs.String(); !strings.Contains(l, "method=/examples.helloworld.v1.Helloworld/Call code=OK") || !strings.Contains(l, "caller=spiffe://micromesh.local/ns/default/svc/web") || !strings.Contains(l, "component=service") {
		t.Errorf("calls are not logged as expected:\n%s", l)
	}
}

// rawJSON is a client codec that sends and receives JSON bytes as they are.
type rawJSON struct{}

func (rawJSON) Name() string                  { return service.JSONCodecName }
func (rawJSON) Marshal(v any) ([]byte, error) { return v.([]byte), nil }
func (rawJSON) Unmarshal(b []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), b...)
	return nil
}

func TestErrorsReachTheCallerWithTheirKindAndID(t *testing.T) {
	conn, logs, _, _ := start(t)
	c := pb.NewHelloworldClient(conn)
	_, err := c.Call(t.Context(), &pb.CallRequest{})
	e := merrors.FromError(err)
	if e.Code != codes.InvalidArgument || e.ID != "helloworld.call" || e.Detail != "name is required" || e.HTTPStatus() != 400 {
		t.Fatalf("error = %+v (%v)", e, err)
	}
	// A panicking handler is INTERNAL for the caller, logged with its stack,
	// and the service goes on.
	_, err = c.Call(t.Context(), &pb.CallRequest{Name: "panic"})
	if status.Code(err) != codes.Internal {
		t.Fatalf("panic: %v", err)
	}
	if !strings.Contains(logs.String(), "handler panicked") || !strings.Contains(logs.String(), "boom") {
		t.Errorf("panic not logged:\n%s", logs.String())
	}
	if _, err := c.Call(t.Context(), &pb.CallRequest{Name: "after"}); err != nil {
		t.Fatalf("after the panic: %v", err)
	}
}

func TestHealthAndReflection(t *testing.T) {
	conn, _, _, _ := start(t)
	for _, svc := range []string{"", "helloworld"} {
		h, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health %q: %v %v", svc, h, err)
		}
	}
	set, err := endpoints.Describe(t.Context(), conn)
	if err != nil {
		t.Fatal(err)
	}
	if got := set.Names(); len(got) != 1 || got[0] != "Helloworld.Call" {
		t.Fatalf("endpoints = %v", got)
	}
}

func TestStopDrainsCallsInFlight(t *testing.T) {
	conn, _, stop, started := start(t)
	c := pb.NewHelloworldClient(conn)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), &pb.CallRequest{Name: "slow"})
		errc <- err
	}()
	<-started
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	if err := <-errc; err != nil {
		t.Fatalf("the call in flight failed: %v", err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := c.Call(context.Background(), &pb.CallRequest{Name: "late"}); err == nil {
		t.Fatal("a call after the stop succeeded")
	}
}

func TestRunWithoutTheRuntimeSaysHowToStart(t *testing.T) {
	t.Setenv(envconfig.Address, "")
	t.Setenv(envconfig.Service, "")
	err := service.New(service.Name("helloworld")).Run()
	if !errors.Is(err, service.ErrNoAddress) || !strings.Contains(err.Error(), "meshctl run .") {
		t.Fatalf("Run = %v", err)
	}
	t.Setenv(envconfig.Address, "127.0.0.1:0")
	if err := service.New().Run(); err == nil || !strings.Contains(err.Error(), "service.Name") {
		t.Fatalf("Run without a name = %v", err)
	}
	// The runtime's name wins: it is the identity the sidecar holds.
	t.Setenv(envconfig.Service, "hello2")
	if got := service.New(service.Name("helloworld")).Name(); got != "hello2" {
		t.Errorf("Name = %q", got)
	}
}

func TestDialNeedsTheSidecar(t *testing.T) {
	t.Setenv(envconfig.Proxy, "")
	if _, err := service.Dial(t.Context(), "helloworld"); err == nil || !strings.Contains(err.Error(), envconfig.Proxy) {
		t.Fatalf("Dial = %v", err)
	}
	t.Setenv(envconfig.Proxy, "127.0.0.1:1")
	for _, bad := range []string{"", "Hello", "a.b.c", "-x", strings.Repeat("a", 64)} {
		if _, err := service.Dial(t.Context(), bad); err == nil {
			t.Errorf("Dial(%q) succeeded", bad)
		}
	}
	for _, good := range []string{"helloworld", "store.micromesh", "a-b"} {
		conn, err := service.Dial(t.Context(), good)
		if err != nil {
			t.Errorf("Dial(%q): %v", good, err)
			continue
		}
		if conn.CanonicalTarget() == "" || fmt.Sprint(conn.Target()) == "" {
			t.Errorf("Dial(%q): no target", good)
		}
		conn.Close()
	}
}
