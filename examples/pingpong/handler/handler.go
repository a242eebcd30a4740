// Package handler is pingpong's endpoints.
package handler

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	hello "github.com/micromesh/micromesh/examples/helloworld/proto"
	pb "github.com/micromesh/micromesh/examples/pingpong/proto"
)

// Pingpong answers Ping by asking helloworld.
type Pingpong struct {
	pb.UnimplementedPingpongServer
	Hello hello.HelloworldClient
}

// tracer records pingpong's own spans: in a traced request they show in
// `meshctl trace` between its sidecar's spans (OpenTelemetry's API; the
// framework sends them to the sidecar).
var tracer = otel.Tracer("github.com/micromesh/micromesh/examples/pingpong")

// Ping asks helloworld to greet req.Name. helloworld's errors reach the
// caller as they are.
func (p *Pingpong) Ping(ctx context.Context, req *pb.PingRequest) (*pb.PingResponse, error) {
	ctx, span := tracer.Start(ctx, "ask helloworld", trace.WithAttributes(attribute.Int("pingpong.name_length", len(req.GetName()))))
	defer span.End()
	rsp, err := p.Hello.Call(ctx, &hello.CallRequest{Name: req.GetName()})
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return nil, err
	}
	return &pb.PingResponse{Msg: rsp.GetMsg()}, nil
}
