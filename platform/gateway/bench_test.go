package gateway_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/micromesh/micromesh/examples/helloworld/handler"
	pb "github.com/micromesh/micromesh/examples/helloworld/proto"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/poll"
	"github.com/micromesh/micromesh/internal/servingcert/servingcerttest"
	"github.com/micromesh/micromesh/platform/gateway"
	"github.com/micromesh/micromesh/service"
)

// BenchmarkGatewayCall: Helloworld.Call as JSON through the API gateway
// (its handler, its sidecar, HTTP/3 over QUIC with mTLS, helloworld's
// sidecar, the app) — over plain HTTP/1.1, and from outside over HTTPS
// (HTTP/1.1 and HTTP/2) and HTTP/3 —, beside the baseline in the same run:
// the same call as gRPC from a client through a sidecar of its own — what
// a service of the mesh pays. The difference is the gateway's own work:
// HTTP/JSON in, reflection-described JSON↔protobuf, one more loopback hop.
// Calls one after another on kept connections, everything in one process.
func BenchmarkGatewayCall(b *testing.B) {
	cp := meshtest.NewEnv(b).StartControlPlane()
	cp.StartService("default", "helloworld", func(s *service.Service) { pb.RegisterHelloworldServer(s.Server(), handler.Helloworld{}) })
	plain, err := gateway.Start(context.Background(), gateway.Options{Addr: "127.0.0.1:0", Home: cp.Home(), ControlPlane: cp.Info.Address, Auth: gateway.AuthOff})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(plain.Stop)
	ca := servingcerttest.NewCA(b)
	files, _ := ca.Write(b, b.TempDir(), "gateway", servingcerttest.Cert{})
	secure, err := gateway.Start(context.Background(), gateway.Options{Addr: "127.0.0.1:0", Home: cp.Home(), ControlPlane: cp.Info.Address, Auth: gateway.AuthOff, TLS: files, HTTP3: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(secure.Stop)
	caller := cp.StartSidecar("default", "caller")
	client := pb.NewHelloworldClient(meshtest.DialThrough(b, caller.Info.Outbound, "helloworld"))
	h3 := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}
	b.Cleanup(func() { _ = h3.Close() })
	clients := []struct {
		name string
		url  string
		c    *http.Client
	}{
		{"gateway", plain.URL(), &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}},
		{"gateway-https", secure.URL(), &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}}},
		{"gateway-http2", secure.URL(), &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}}},
		{"gateway-http3", secure.URL(), &http.Client{Transport: h3}},
	}
	call := func(httpc *http.Client, base string) error {
		resp, err := httpc.Post(base+"/helloworld/call", "application/json", strings.NewReader(`{"name":"Ada"}`))
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
	poll.Until(b, "the gateways and the caller route to helloworld", 10*time.Second, 20*time.Millisecond, func() bool {
		_, err := client.Call(context.Background(), &pb.CallRequest{Name: "Ada"})
		for _, c := range clients {
			err = errors.Join(err, call(c.c, c.url))
		}
		return err == nil
	})

	for _, c := range clients {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if err := call(c.c, c.url); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
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
