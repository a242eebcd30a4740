// Package grpcrelay relays a gRPC call, of any kind of stream, from a
// server stream to another connection message by message, without
// decoding the messages (a pass-through codec): the remote proxy's relay
// into the mesh, and meshctl port-forward's to a remote proxy.
package grpcrelay

import (
	"context"
	"io"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/micromesh/micromesh/internal/rawcodec"
)

// Relay runs the call ss serves (method) over conn with the outgoing
// metadata md, both ways at once, and answers ss with the far end's
// headers, messages, trailers and status.
func Relay(ctx context.Context, ss grpc.ServerStream, conn *grpc.ClientConn, method string, md metadata.MD, opts ...grpc.CallOption) error {
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ctx, md))
	defer cancel()
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, method,
		append(opts, grpc.ForceCodecV2(rawcodec.Codec{}))...)
	if err != nil {
		return err
	}
	// The caller's messages, until it half-closes; the handler does not
	// wait for this: once the answer is done, the server ends the stream
	// and RecvMsg returns.
	go func() {
		for {
			var f []byte
			if err := ss.RecvMsg(&f); err != nil {
				if err == io.EOF {
					_ = cs.CloseSend()
				} else {
					cancel()
				}
				return
			}
			if err := cs.SendMsg(&f); err != nil {
				return // the answer's RecvMsg reports why
			}
		}
	}()
	if hdr, err := cs.Header(); err == nil && len(hdr) > 0 {
		if err := ss.SendHeader(hdr); err != nil {
			return err
		}
	}
	for {
		var f []byte
		err := cs.RecvMsg(&f)
		if err != nil {
			ss.SetTrailer(cs.Trailer())
			if err == io.EOF {
				return nil
			}
			return err
		}
		if err := ss.SendMsg(&f); err != nil {
			return err
		}
	}
}

// Forwardable is the incoming metadata a relayed call carries on: not
// HTTP's or gRPC's own, not the mesh's (x-mesh-*: the callee's sidecar
// sets the caller), not a token (the relay decides whose goes), not a
// client's X-Forwarded-For.
func Forwardable(in metadata.MD) metadata.MD {
	out := metadata.MD{}
	for k, v := range in {
		switch {
		case strings.HasPrefix(k, ":"), strings.HasPrefix(k, "grpc-"), strings.HasPrefix(k, "x-mesh-"),
			k == "content-type", k == "user-agent", k == "te", k == "authorization", k == "x-forwarded-for":
			continue
		}
		out[k] = v
	}
	return out
}
