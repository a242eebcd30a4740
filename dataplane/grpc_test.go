package dataplane_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/testsvc"
)

// streamer implements the four kinds of gRPC call: testsvc's client
// stream, and the others answering with what these tests look at.
type streamer struct {
	testsvc.Service
}

func callerOf(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	return strings.Join(md.Get("x-mesh-caller"), ",")
}

func (streamer) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if req.GetResponseStatus().GetCode() != 0 {
		return nil, status.Error(codes.Code(req.GetResponseStatus().GetCode()), req.GetResponseStatus().GetMessage())
	}
	if req.GetResponseSize() == -1 { // wait for the caller's deadline
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &testgrpc.SimpleResponse{Username: callerOf(ctx), Payload: &testgrpc.Payload{Body: make([]byte, req.GetResponseSize())}}, nil
}

func (streamer) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, s testgrpc.TestService_StreamingOutputCallServer) error {
	for i, p := range req.GetResponseParameters() {
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: []byte(strconv.Itoa(i)), Type: testgrpc.PayloadType(p.GetSize())}}); err != nil {
			return err
		}
	}
	return nil
}

func (streamer) FullDuplexCall(s testgrpc.TestService_FullDuplexCallServer) error {
	for {
		req, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

func startGRPCApp(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(srv, streamer{})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// dialThrough connects a gRPC client to a sidecar's outbound listener (h2c)
// for service authority.
func dialThrough(t *testing.T, outbound, authority string) testgrpc.TestServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(outbound, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(authority))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return testgrpc.NewTestServiceClient(conn)
}

func TestGRPCThroughBothTransports(t *testing.T) {
	for _, transport := range []string{"quic", "tls"} {
		t.Run(transport, func(t *testing.T) {
			cp := meshtest.NewEnv(t).StartControlPlane()
			a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
			b := cp.StartSidecar("default", "grpcsrv", meshtest.WithApp(startGRPCApp(t), "grpc"))
			if transport == "tls" {
				_, port, _ := net.SplitHostPort(b.Info.Inbound)
				p, _ := strconv.Atoi(port)
				if err := cp.Registry().Register(context.Background(), registry.Instance{ID: "grpcsrv-envoy", Service: "grpcsrv", Address: "127.0.0.1", Port: uint16(p), Kind: registry.KindEnvoy, Protocol: "grpc"}); err != nil {
					t.Fatal(err)
				}
			}
			c := dialThrough(t, a.Info.Outbound, "grpcsrv")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			// Unary, with the caller's identity; wait until routed (and, for
			// tls, until the mixed cluster is in force).
			waitFor(t, "a unary call through "+transport, func() bool {
				resp, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: 100 << 10})
				return err == nil && len(resp.GetPayload().GetBody()) == 100<<10 && resp.GetUsername() == "spiffe://micromesh.local/ns/default/svc/a" &&
					strings.Contains(metrics(t, b.Info.Admin), `transport="`+transport+`"`)
			})
			// A gRPC error keeps its code and message.
			_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.NotFound), Message: "no such thing"}})
			if status.Code(err) != codes.NotFound || status.Convert(err).Message() != "no such thing" {
				t.Errorf("error status = %v", err)
			}
			// Both sidecars count it by its method and gRPC status
			// (trailers-only: the status is in the headers); successes as
			// status 0.
			for _, side := range []struct{ admin, direction string }{{a.Info.Admin, "outbound"}, {b.Info.Admin, "inbound"}} {
				m := metrics(t, side.admin)
				unary := `grpc_method="grpc.testing.TestService/UnaryCall"`
				for _, want := range []string{`direction="` + side.direction + `",` + unary + `,grpc_status="5",response_code="200"`, `direction="` + side.direction + `",` + unary + `,grpc_status="0",response_code="200"`} {
					if !strings.Contains(m, want) {
						t.Errorf("%s metrics lack %s:\n%s", side.direction, want, grep(m, "micromesh_requests_total"))
					}
				}
			}
			// The deadline travels: the server sees it expire, the client gets DEADLINE_EXCEEDED.
			dctx, dcancel := context.WithTimeout(ctx, 300*time.Millisecond)
			_, err = c.UnaryCall(dctx, &testgrpc.SimpleRequest{ResponseSize: -1})
			dcancel()
			if status.Code(err) != codes.DeadlineExceeded {
				t.Errorf("deadline: %v", err)
			}
			// Server streaming: 100 messages in order.
			ss, err := c.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: make([]*testgrpc.ResponseParameters, 100)})
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; ; i++ {
				m, err := ss.Recv()
				if errors.Is(err, io.EOF) {
					if i != 100 {
						t.Errorf("server stream ended after %d messages", i)
					}
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if string(m.GetPayload().GetBody()) != strconv.Itoa(i) {
					t.Fatalf("message %d out of order: %q", i, m.GetPayload().GetBody())
				}
			}
			// Client streaming: 50 × 1 KiB.
			cs, err := c.StreamingInputCall(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for range 50 {
				if err := cs.Send(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: make([]byte, 1024)}}); err != nil {
					t.Fatal(err)
				}
			}
			sum, err := cs.CloseAndRecv()
			if err != nil || sum.GetAggregatedPayloadSize() != 50*1024 {
				t.Fatalf("client stream: %v %v", sum, err)
			}
			// Bidi: each message answered before the next is sent — the
			// proxy must not wait for the whole request body.
			bs, err := c.FullDuplexCall(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 20 {
				if err := bs.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: []byte(strconv.Itoa(i))}}); err != nil {
					t.Fatal(err)
				}
				m, err := bs.Recv()
				if err != nil || string(m.GetPayload().GetBody()) != strconv.Itoa(i) {
					t.Fatalf("bidi echo %d: %v %v", i, m, err)
				}
			}
			if err := bs.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if _, err := bs.Recv(); !errors.Is(err, io.EOF) {
				t.Errorf("bidi end: %v", err)
			}
			// Cancellation travels: a cancelled stream ends on the server too.
			cctx, ccancel := context.WithCancel(ctx)
			bs2, err := c.FullDuplexCall(cctx)
			if err != nil {
				t.Fatal(err)
			}
			ccancel()
			if _, err := bs2.Recv(); status.Code(err) != codes.Canceled {
				t.Errorf("cancelled stream: %v", err)
			}
		})
	}
}

func TestGRPCLocalRepliesAreGRPCStatuses(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	a := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a"), "http"))
	_, err := dialThrough(t, a.Info.Outbound, "nosuch").UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), `"nosuch" is not a service`) {
		t.Errorf("unknown service over gRPC: %v", err)
	}
}
