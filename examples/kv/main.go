// Kv keeps values in the store primitive through its sidecar.
//
//	meshctl run examples/kv
//	meshctl call kv Kv.Put '{"key":"greeting","value":"hello"}'
//	meshctl call kv Kv.Get '{"key":"greeting"}'
//	meshctl store read greeting --table kv
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/micromesh/micromesh/examples/kv/handler"
	pb "github.com/micromesh/micromesh/examples/kv/proto"
	"github.com/micromesh/micromesh/service"
	"github.com/micromesh/micromesh/service/store"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run() error {
	srv := service.New(service.Name("kv"), service.Version("v1"))
	conn, err := service.Dial(context.Background(), store.ServiceName)
	if err != nil {
		return err
	}
	defer conn.Close()
	pb.RegisterKvServer(srv.Server(), &handler.Kv{Store: store.NewClient(conn)})
	return srv.Run()
}
