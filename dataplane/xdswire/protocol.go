package xdswire

import (
	"fmt"
	"math"
	"sort"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// ADS methods, for grpc.ClientConn.NewStream.
const (
	StreamAggregatedResources = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
	DeltaAggregatedResources  = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
)

// Node is envoy.config.core.v3.Node, as a proxy describes itself.
type Node struct {
	ID            string
	Cluster       string
	Metadata      map[string]any // a google.protobuf.Struct: strings, float64s, bools, nil, nested maps and []any
	UserAgentName string
}

func (n *Node) marshal(b []byte) ([]byte, error) {
	b = appendString(b, 1, n.ID)
	b = appendString(b, 2, n.Cluster)
	if n.Metadata != nil {
		st, err := appendStruct(nil, n.Metadata)
		if err != nil {
			return nil, fmt.Errorf("node metadata: %w", err)
		}
		b = appendMessage(b, 3, st)
	}
	b = appendString(b, 6, n.UserAgentName)
	return b, nil
}

// Status is google.rpc.Status, the error detail of a NACK.
type Status struct {
	Code    int32
	Message string
}

func (s *Status) marshal(b []byte) []byte {
	if s.Code != 0 {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(int64(s.Code)))
	}
	return appendString(b, 2, s.Message)
}

// DiscoveryRequest is envoy.service.discovery.v3.DiscoveryRequest.
type DiscoveryRequest struct {
	VersionInfo   string
	Node          *Node
	ResourceNames []string
	TypeURL       string
	ResponseNonce string
	ErrorDetail   *Status
}

// Marshal encodes the request.
func (r *DiscoveryRequest) Marshal() ([]byte, error) {
	b := appendString(nil, 1, r.VersionInfo)
	if r.Node != nil {
		nb, err := r.Node.marshal(nil)
		if err != nil {
			return nil, err
		}
		b = appendMessage(b, 2, nb)
	}
	for _, n := range r.ResourceNames {
		b = appendRepeatedString(b, 3, n)
	}
	b = appendString(b, 4, r.TypeURL)
	b = appendString(b, 5, r.ResponseNonce)
	if r.ErrorDetail != nil {
		b = appendMessage(b, 6, r.ErrorDetail.marshal(nil))
	}
	return b, nil
}

// DiscoveryResponse is envoy.service.discovery.v3.DiscoveryResponse.
type DiscoveryResponse struct {
	VersionInfo string
	Resources   []*Any
	TypeURL     string
	Nonce       string
}

// Unmarshal decodes a response; the resources stay encoded (Decode reads
// them), so one that cannot be read is NACKed, not a broken stream.
func (r *DiscoveryResponse) Unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&r.VersionInfo)
		case 2:
			return msgs(f, &r.Resources)
		case 4:
			return f.str(&r.TypeURL)
		case 5:
			return f.str(&r.Nonce)
		}
		return nil
	})
}

// DeltaDiscoveryRequest is envoy.service.discovery.v3.DeltaDiscoveryRequest.
type DeltaDiscoveryRequest struct {
	Node                     *Node
	TypeURL                  string
	ResourceNamesSubscribe   []string
	ResourceNamesUnsubscribe []string
	InitialResourceVersions  map[string]string
	ResponseNonce            string
	ErrorDetail              *Status
}

// Marshal encodes the request (map entries in key order, so equal
// requests encode the same).
func (r *DeltaDiscoveryRequest) Marshal() ([]byte, error) {
	var b []byte
	if r.Node != nil {
		nb, err := r.Node.marshal(nil)
		if err != nil {
			return nil, err
		}
		b = appendMessage(b, 1, nb)
	}
	b = appendString(b, 2, r.TypeURL)
	for _, n := range r.ResourceNamesSubscribe {
		b = appendRepeatedString(b, 3, n)
	}
	for _, n := range r.ResourceNamesUnsubscribe {
		b = appendRepeatedString(b, 4, n)
	}
	keys := make([]string, 0, len(r.InitialResourceVersions))
	for k := range r.InitialResourceVersions {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		e := appendRepeatedString(nil, 1, k)
		e = appendRepeatedString(e, 2, r.InitialResourceVersions[k])
		b = appendMessage(b, 5, e)
	}
	b = appendString(b, 6, r.ResponseNonce)
	if r.ErrorDetail != nil {
		b = appendMessage(b, 7, r.ErrorDetail.marshal(nil))
	}
	return b, nil
}

// DeltaDiscoveryResponse is envoy.service.discovery.v3.DeltaDiscoveryResponse.
type DeltaDiscoveryResponse struct {
	SystemVersionInfo string
	Resources         []*Resource
	TypeURL           string
	RemovedResources  []string
	Nonce             string
}

// Unmarshal decodes a response, resources left encoded.
func (r *DeltaDiscoveryResponse) Unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&r.SystemVersionInfo)
		case 2:
			return msgs(f, &r.Resources)
		case 4:
			return f.str(&r.TypeURL)
		case 6:
			return f.strs(&r.RemovedResources)
		case 5:
			return f.str(&r.Nonce)
		}
		return nil
	})
}

// Resource is envoy.service.discovery.v3.Resource, one resource of a
// delta response.
type Resource struct {
	Name     string
	Version  string
	Resource *Any
}

func (r *Resource) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 3:
			return f.str(&r.Name)
		case 1:
			return f.str(&r.Version)
		case 2:
			return msg(f, &r.Resource)
		}
		return nil
	})
}

// Codec is the gRPC codec of the ADS stream: it marshals the requests and
// unmarshals the responses of this package ("proto" on the wire, as
// Envoy's own clients send).
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// Name is the content subtype: application/grpc+proto.
func (Codec) Name() string { return "proto" }

// Marshal encodes a *DiscoveryRequest or *DeltaDiscoveryRequest.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(interface{ Marshal() ([]byte, error) })
	if !ok {
		return nil, fmt.Errorf("xdswire: cannot marshal %T", v)
	}
	b, err := m.Marshal()
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

// Unmarshal decodes a *DiscoveryResponse or *DeltaDiscoveryResponse.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(interface{ Unmarshal([]byte) error })
	if !ok {
		return fmt.Errorf("xdswire: cannot unmarshal into %T", v)
	}
	return m.Unmarshal(data.Materialize())
}

// appendString appends a string field, omitted when empty (proto3).
func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	return appendRepeatedString(b, num, s)
}

// appendRepeatedString appends a string always (a repeated element or a
// map entry's key or value).
func appendRepeatedString(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// appendMessage appends an embedded message field, present even if empty.
func appendMessage(b []byte, num protowire.Number, m []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, m)
}

// appendStruct encodes a google.protobuf.Struct's fields (map entries in
// key order).
func appendStruct(b []byte, m map[string]any) ([]byte, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v, err := appendValue(nil, m[k])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		e := appendRepeatedString(nil, 1, k)
		e = appendMessage(e, 2, v)
		b = appendMessage(b, 1, e)
	}
	return b, nil
}

// appendValue encodes a google.protobuf.Value.
func appendValue(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		return protowire.AppendVarint(b, 0), nil
	case float64:
		b = protowire.AppendTag(b, 2, protowire.Fixed64Type)
		return protowire.AppendFixed64(b, math.Float64bits(v)), nil
	case int:
		return appendValue(b, float64(v))
	case string:
		return appendRepeatedString(b, 3, v), nil
	case bool:
		b = protowire.AppendTag(b, 4, protowire.VarintType)
		return protowire.AppendVarint(b, protowire.EncodeBool(v)), nil
	case map[string]any:
		st, err := appendStruct(nil, v)
		if err != nil {
			return nil, err
		}
		return appendMessage(b, 5, st), nil
	case []any:
		var list []byte
		for _, e := range v {
			ev, err := appendValue(nil, e)
			if err != nil {
				return nil, err
			}
			list = appendMessage(list, 1, ev)
		}
		return appendMessage(b, 6, list), nil
	}
	return nil, fmt.Errorf("a %T cannot be a metadata value", v)
}
