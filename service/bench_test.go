package service_test

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/micromesh/micromesh/examples/helloworld/handler"
	pb "github.com/micromesh/micromesh/examples/helloworld/proto"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/service"
)

// BenchmarkFrameworkCall is a framework-to-framework unary call
// (Helloworld.Call) through the caller's sidecar, HTTP/3 over QUIC with
// mTLS, and the callee's sidecar — beside the same call straight to the
// app, in the same run. The difference is what the mesh adds.
//
//	go test -run '^$' -bench FrameworkCall ./service/
func BenchmarkFrameworkCall(b *testing.B) {
	cp := meshtest.NewEnv(b).StartControlPlane()
	hello := cp.StartService("default", "helloworld", func(s *service.Service) {
		pb.RegisterHelloworldServer(s.Server(), handler.Helloworld{})
	})
	caller := cp.StartSidecar("default", "caller")
	dial := func(addr string, opts ...grpc.DialOption) pb.HelloworldClient {
		conn, err := grpc.NewClient("passthrough:///"+addr, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { conn.Close() })
		return pb.NewHelloworldClient(conn)
	}
	direct := dial(hello.App)
	mesh := dial(caller.Info.Outbound, grpc.WithAuthority("helloworld"))
	req := &pb.CallRequest{Name: "bench"}
	// Wait until the caller's sidecar knows helloworld.
	for i := 0; ; i++ {
		if _, err := mesh.Call(context.Background(), req); err == nil {
			break
		} else if i > 500 {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		name   string
		client pb.HelloworldClient
	}{{"direct", direct}, {"mesh", mesh}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := c.client.Call(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
