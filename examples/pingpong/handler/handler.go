// Package handler is pingpong's endpoints.
package handler

import (
	"context"

	hello "github.com/micromesh/micromesh/examples/helloworld/proto"
	pb "github.com/micromesh/micromesh/examples/pingpong/proto"
)

// Pingpong answers Ping by asking helloworld.
type Pingpong struct {
	pb.UnimplementedPingpongServer
	Hello hello.HelloworldClient
}

// Ping asks helloworld to greet req.Name. helloworld's errors reach the
// caller as they are.
func (p *Pingpong) Ping(ctx context.Context, req *pb.PingRequest) (*pb.PingResponse, error) {
	rsp, err := p.Hello.Call(ctx, &hello.CallRequest{Name: req.GetName()})
	if err != nil {
		return nil, err
	}
	return &pb.PingResponse{Msg: rsp.GetMsg()}, nil
}
