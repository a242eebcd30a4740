// Package handler is helloworld's endpoints.
package handler

import (
	"context"

	pb "github.com/micromesh/micromesh/examples/helloworld/proto"
	"github.com/micromesh/micromesh/service/errors"
)

// Helloworld answers Call.
type Helloworld struct {
	pb.UnimplementedHelloworldServer
}

// Call greets req.Name.
func (Helloworld) Call(ctx context.Context, req *pb.CallRequest) (*pb.CallResponse, error) {
	if req.GetName() == "" {
		return nil, errors.BadRequest("helloworld.call", "name is required")
	}
	return &pb.CallResponse{Msg: "Hello " + req.GetName()}, nil
}
