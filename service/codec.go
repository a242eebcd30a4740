package service

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// JSONCodecName is the gRPC content subtype of JSON bodies: a call with
// content type application/grpc+json carries its messages as protobuf JSON
// (the same handlers answer).
const JSONCodecName = "json"

func init() { encoding.RegisterCodec(jsonCodec{}) }

// jsonCodec marshals protobuf messages as protobuf JSON (lowerCamelCase
// field names; unknown fields refused).
type jsonCodec struct{}

func (jsonCodec) Name() string { return JSONCodecName }

func (jsonCodec) Marshal(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("json codec: %T is not a protobuf message", v)
	}
	return protojson.Marshal(m)
}

func (jsonCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("json codec: %T is not a protobuf message", v)
	}
	return protojson.Unmarshal(data, m)
}
