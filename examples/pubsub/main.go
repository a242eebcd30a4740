// Pubsub publishes events and consumes them as a group, through its
// sidecar.
//
//	meshctl run examples/pubsub
//	meshctl call pubsub Pubsub.Publish '{"message":"hello"}'
//	meshctl call pubsub Pubsub.Received
//	meshctl events read greetings
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/micromesh/micromesh/examples/pubsub/handler"
	pb "github.com/micromesh/micromesh/examples/pubsub/proto"
	"github.com/micromesh/micromesh/service"
	"github.com/micromesh/micromesh/service/events"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run() error {
	srv := service.New(service.Name("pubsub"), service.Version("v1"))
	conn, err := service.Dial(context.Background(), events.ServiceName)
	if err != nil {
		return err
	}
	defer conn.Close()
	h := &handler.Pubsub{Events: events.NewClient(conn)}
	pb.RegisterPubsubServer(srv.Server(), h)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go h.Consume(ctx, srv.Logger())
	return srv.Run()
}
