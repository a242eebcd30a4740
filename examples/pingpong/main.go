// Pingpong calls helloworld through its sidecar and answers with what
// helloworld said.
//
//	meshctl run examples/helloworld
//	meshctl run examples/pingpong
//	meshctl call pingpong Pingpong.Ping '{"name":"Bob"}'
package main

import (
	"context"
	"fmt"
	"os"

	hello "github.com/micromesh/micromesh/examples/helloworld/proto"
	"github.com/micromesh/micromesh/examples/pingpong/handler"
	pb "github.com/micromesh/micromesh/examples/pingpong/proto"
	"github.com/micromesh/micromesh/service"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run() error {
	srv := service.New(service.Name("pingpong"), service.Version("v1"))
	conn, err := service.Dial(context.Background(), "helloworld")
	if err != nil {
		return err
	}
	defer conn.Close()
	pb.RegisterPingpongServer(srv.Server(), &handler.Pingpong{Hello: hello.NewHelloworldClient(conn)})
	return srv.Run()
}
