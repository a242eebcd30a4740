// Package testsvc serves grpc-go's interop TestService for tests of
// calls of every shape — unary, server, client and bidirectional streams —
// with answers that show what was asked.
package testsvc

import (
	"context"
	"io"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// Service implements the TestService's UnaryCall, StreamingOutputCall,
// StreamingInputCall and FullDuplexCall.
type Service struct {
	testgrpc.UnimplementedTestServiceServer
}

// UnaryCall answers with the response size asked for, as "size N".
func (Service) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{Username: "size " + string(rune('0'+req.GetResponseSize()))}, nil
}

// StreamingOutputCall sends a payload of each size asked for.
func (Service) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, s testgrpc.TestService_StreamingOutputCallServer) error {
	for _, p := range req.GetResponseParameters() {
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: make([]byte, p.GetSize())}}); err != nil {
			return err
		}
	}
	return nil
}

// StreamingInputCall sums the sizes of the payloads it is sent.
func (Service) StreamingInputCall(s testgrpc.TestService_StreamingInputCallServer) error {
	sum := 0
	for {
		req, err := s.Recv()
		if err == io.EOF {
			return s.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: int32(sum)})
		}
		if err != nil {
			return err
		}
		sum += len(req.GetPayload().GetBody())
	}
}

// FullDuplexCall answers each request as it comes with a payload of each
// size it asks for.
func (Service) FullDuplexCall(s testgrpc.TestService_FullDuplexCallServer) error {
	for {
		req, err := s.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		for _, p := range req.GetResponseParameters() {
			if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: make([]byte, p.GetSize())}}); err != nil {
				return err
			}
		}
	}
}
