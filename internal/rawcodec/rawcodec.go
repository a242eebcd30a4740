// Package rawcodec is a gRPC codec for messages that are already bytes:
// *[]byte both ways, sent and received as they are ("proto" on the wire).
// The remote proxy relays messages without decoding them; the sidecar's
// span exporter sends an OTLP request it encodes itself.
package rawcodec

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
)

// Codec passes *[]byte messages through.
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// Name is the content subtype: application/grpc+proto.
func (Codec) Name() string { return "proto" }

// Marshal sends *v as it is.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawcodec: cannot send %T (want *[]byte)", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
}

// Unmarshal sets *v to the message's bytes.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawcodec: cannot receive into %T (want *[]byte)", v)
	}
	*b = data.Materialize()
	return nil
}
