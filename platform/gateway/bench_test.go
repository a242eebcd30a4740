package gateway_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/examples/helloworld/handler"
	pb "github.com/micromesh/micromesh/examples/helloworld/proto"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/poll"
	"github.com/micromesh/micromesh/platform/gateway"
	"github.com/micromesh/micromesh/service"
)

// BenchmarkGatewayCall: Helloworld.Call as JSON over HTTP/1.1 through the
// API gateway (its handler, its sidecar, HTTP/3 over QUIC with mTLS,
// helloworld's sidecar, the app), beside the baseline in the same run: the
// same call as gRPC from a client through a sidecar of its own — what a
// service of the mesh pays. The difference is the gateway's own work:
// HTTP/JSON in, reflection-described JSON↔protobuf, one more loopback hop.
// Calls one after another, everything in one process.
func BenchmarkGatewayCall(b *testing.B) {
	cp := meshtest.NewEnv(b).StartControlPlane()
	cp.StartService("default", "helloworld", func(s *service.Service) { pb.RegisterHelloworldServer(s.Server(), handler.Helloworld{}) })
	gw, err := gateway.Start(context.Background(), gateway.Options{Addr: "127.0.0.1:0", Home: cp.Home(), ControlPlane: cp.Info.Address, Auth: gateway.AuthOff})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(gw.Stop)
	caller := cp.StartSidecar("default", "caller")
	client := pb.NewHelloworldClient(meshtest.DialThrough(b, caller.Info.Outbound, "helloworld"))
	httpc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	url := "http://" + gw.Addr() + "/helloworld/call"
	viaGateway := func() error {
		resp, err := httpc.Post(url, "application/json", strings.NewReader(`{"name":"Ada"}`))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.Contains(string(body), "Hello Ada") {
			return &callError{resp.StatusCode, string(body)}
		}
		return nil
	}
	poll.Until(b, "the gateway and the caller route to helloworld", 10*time.Second, 20*time.Millisecond, func() bool {
		_, err := client.Call(context.Background(), &pb.CallRequest{Name: "Ada"})
		return err == nil && viaGateway() == nil
	})

	b.Run("gateway", func(b *testing.B) {
		for b.Loop() {
			if err := viaGateway(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline=grpc-through-a-sidecar", func(b *testing.B) {
		for b.Loop() {
			if _, err := client.Call(context.Background(), &pb.CallRequest{Name: "Ada"}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

type callError struct {
	code int
	body string
}

func (e *callError) Error() string { return http.StatusText(e.code) + ": " + e.body }
