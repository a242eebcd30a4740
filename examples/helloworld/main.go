// Helloworld is the smallest service on the mesh.
//
//	meshctl run examples/helloworld
//	meshctl call helloworld Helloworld.Call '{"name":"Alice"}'
package main

import (
	"fmt"
	"os"

	"github.com/micromesh/micromesh/examples/helloworld/handler"
	pb "github.com/micromesh/micromesh/examples/helloworld/proto"
	"github.com/micromesh/micromesh/service"
)

func main() {
	srv := service.New(service.Name("helloworld"), service.Version("v1"))
	pb.RegisterHelloworldServer(srv.Server(), handler.Helloworld{})
	if err := srv.Run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
