package service_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	pb "github.com/micromesh/micromesh/examples/helloworld/proto"
	"github.com/micromesh/micromesh/internal/envconfig"
	"github.com/micromesh/micromesh/internal/syncbuf"
	"github.com/micromesh/micromesh/service"
)

// idEcho answers with the request ID and the trace it was called with.
type idEcho struct {
	pb.UnimplementedHelloworldServer
}

func (idEcho) Call(ctx context.Context, _ *pb.CallRequest) (*pb.CallResponse, error) {
	return &pb.CallResponse{Msg: strings.TrimSpace(service.RequestID(ctx) + " " + service.TraceID(ctx))}, nil
}

// relay calls "next" through the mesh with the context it serves.
type relay struct {
	pb.UnimplementedHelloworldServer
}

func (relay) Call(ctx context.Context, req *pb.CallRequest) (*pb.CallResponse, error) {
	conn, err := service.Dial(ctx, "next")
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return pb.NewHelloworldClient(conn).Call(ctx, req)
}

func serve(t *testing.T, name string, register func(*grpc.Server)) (addr string, logs *syncbuf.Buffer) {
	t.Helper()
	logs = &syncbuf.Buffer{}
	srv := service.New(service.Name(name), service.Logger(slog.New(slog.NewTextHandler(logs, nil))))
	register(srv.Server())
	addr, _ = serveOn(t, srv)
	return addr, logs
}

// A call a service makes while serving one carries the served request's
// x-request-id (which the first sidecar set) and trace context, and both
// services' log lines name them: one ID across every service a request
// reaches, and the trace its sidecars record.
func TestCallsCarryTheRequestID(t *testing.T) {
	// "next" stands in for the sidecar's outbound listener: it is what
	// Dial reaches at $MESH_PROXY.
	next, nextLogs := serve(t, "next", func(s *grpc.Server) { pb.RegisterHelloworldServer(s, idEcho{}) })
	t.Setenv(envconfig.Proxy, next)
	front, frontLogs := serve(t, "front", func(s *grpc.Server) { pb.RegisterHelloworldServer(s, relay{}) })
	conn, err := grpc.NewClient(front, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := pb.NewHelloworldClient(conn)

	const trace = "4bf92f3577b34da6a3ce929d0e0e4736"
	ctx := metadata.AppendToOutgoingContext(t.Context(), "x-request-id", "req-7", "traceparent", "00-"+trace+"-00f067aa0ba902b7-01")
	resp, err := client.Call(ctx, &pb.CallRequest{Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetMsg() != "req-7 "+trace {
		t.Errorf("next saw request ID and trace %q, want req-7 and %s", resp.GetMsg(), trace)
	}
	for name, logs := range map[string]*syncbuf.Buffer{"front": frontLogs, "next": nextLogs} {
		if !strings.Contains(logs.String(), "request_id=req-7") || !strings.Contains(logs.String(), "trace_id="+trace) {
			t.Errorf("%s's log does not name the request and its trace:\n%s", name, logs)
		}
	}
	// Without one (not through the mesh), none is made up.
	if resp, err = client.Call(t.Context(), &pb.CallRequest{Name: "x"}); err != nil || resp.GetMsg() != "" {
		t.Errorf("no request ID: %q, %v", resp.GetMsg(), err)
	}
}
