// Package endpoints discovers what a running service offers — its
// endpoints with their request and response fields — through gRPC server
// reflection, and calls any of them with JSON. `meshctl describe` and
// `meshctl call` use it; so will the API gateway and the dashboard.
//
// Endpoints are named as in Micro: Service.Method (Helloworld.Call); the
// full names (examples.helloworld.v1.Helloworld.Call, or the gRPC path
// /examples.helloworld.v1.Helloworld/Call) work too.
package endpoints

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Endpoint is one method of a service.
type Endpoint struct {
	// Name is Service.Method.
	Name string `json:"name"`
	// Method is the gRPC path, /package.Service/Method.
	Method          string   `json:"method"`
	Request         *Message `json:"request"`
	Response        *Message `json:"response"`
	ClientStreaming bool     `json:"client_streaming,omitempty"`
	ServerStreaming bool     `json:"server_streaming,omitempty"`

	desc protoreflect.MethodDescriptor
}

// Message describes a message type by its JSON fields.
type Message struct {
	Name   string  `json:"name"`
	Fields []Field `json:"fields"`
}

// Field is one field as it appears in JSON.
type Field struct {
	Name string `json:"name"`
	// Type is string, int64, bool, bytes, an enum or message name,
	// prefixed "repeated " or written map<K, V>.
	Type string `json:"type"`
	// Fields are a message field's own fields (one level deep per level of
	// nesting, stopping at recursion).
	Fields []Field `json:"fields,omitempty"`
}

// Set is what a service offers.
type Set struct {
	Endpoints []*Endpoint
}

// hidden services are the platform's, not the service's.
var hidden = []string{"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}

// Describe asks the service behind conn for its endpoints.
func Describe(ctx context.Context, conn grpc.ClientConnInterface) (*Set, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, fmt.Errorf("reflection: %w", err)
	}
	ask := func(req *rpb.ServerReflectionRequest) (*rpb.ServerReflectionResponse, error) {
		if err := stream.Send(req); err != nil {
			if err == io.EOF {
				_, err = stream.Recv() // the real error
			}
			return nil, fmt.Errorf("reflection: %w", err)
		}
		resp, err := stream.Recv()
		if err != nil {
			return nil, fmt.Errorf("reflection: %w", err)
		}
		if e := resp.GetErrorResponse(); e != nil {
			return nil, fmt.Errorf("reflection: %s", e.GetErrorMessage())
		}
		return resp, nil
	}
	resp, err := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		if !slices.Contains(hidden, s.GetName()) {
			names = append(names, s.GetName())
		}
	}
	raw := map[string]*descriptorpb.FileDescriptorProto{}
	for _, name := range names {
		resp, err := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: name}})
		if err != nil {
			return nil, err
		}
		for _, b := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
			fd := new(descriptorpb.FileDescriptorProto)
			if err := proto.Unmarshal(b, fd); err != nil {
				return nil, fmt.Errorf("reflection: a file descriptor: %w", err)
			}
			raw[fd.GetName()] = fd
		}
	}
	// End the stream as a client should, rather than by cancelling it.
	if err := stream.CloseSend(); err == nil {
		_, _ = stream.Recv()
	}
	files, err := buildFiles(raw)
	if err != nil {
		return nil, err
	}
	set := &Set{}
	for _, name := range names {
		d, err := files.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			return nil, fmt.Errorf("reflection: service %s: %w", name, err)
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			continue
		}
		for i := range sd.Methods().Len() {
			md := sd.Methods().Get(i)
			set.Endpoints = append(set.Endpoints, &Endpoint{
				Name:            string(sd.Name()) + "." + string(md.Name()),
				Method:          "/" + string(sd.FullName()) + "/" + string(md.Name()),
				Request:         describeMessage(md.Input(), nil),
				Response:        describeMessage(md.Output(), nil),
				ClientStreaming: md.IsStreamingClient(),
				ServerStreaming: md.IsStreamingServer(),
				desc:            md,
			})
		}
	}
	sort.Slice(set.Endpoints, func(i, j int) bool { return set.Endpoints[i].Name < set.Endpoints[j].Name })
	return set, nil
}

// buildFiles links the descriptors the service sent, taking any it did not
// send (well-known types) from those compiled into this program.
func buildFiles(raw map[string]*descriptorpb.FileDescriptorProto) (*protoregistry.Files, error) {
	files := new(protoregistry.Files)
	var add func(name string, depth int) error
	add = func(name string, depth int) error {
		if _, err := files.FindFileByPath(name); err == nil {
			return nil
		}
		if depth > 100 {
			return fmt.Errorf("reflection: import cycle at %s", name)
		}
		fd, ok := raw[name]
		if !ok {
			known, err := protoregistry.GlobalFiles.FindFileByPath(name)
			if err != nil {
				return fmt.Errorf("reflection: the service did not send %s", name)
			}
			return files.RegisterFile(known)
		}
		for _, dep := range fd.GetDependency() {
			if err := add(dep, depth+1); err != nil {
				return err
			}
		}
		f, err := protodesc.NewFile(fd, files)
		if err != nil {
			return fmt.Errorf("reflection: %s: %w", name, err)
		}
		return files.RegisterFile(f)
	}
	names := make([]string, 0, len(raw))
	for n := range raw {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := add(n, 0); err != nil {
			return nil, err
		}
	}
	return files, nil
}

func describeMessage(md protoreflect.MessageDescriptor, seen []protoreflect.FullName) *Message {
	m := &Message{Name: string(md.FullName()), Fields: []Field{}}
	seen = append(seen, md.FullName())
	for i := range md.Fields().Len() {
		m.Fields = append(m.Fields, describeField(md.Fields().Get(i), seen))
	}
	return m
}

func describeField(fd protoreflect.FieldDescriptor, seen []protoreflect.FullName) Field {
	f := Field{Name: fd.JSONName(), Type: typeName(fd)}
	if fd.IsMap() {
		f.Type = "map<" + typeName(fd.MapKey()) + ", " + typeName(fd.MapValue()) + ">"
		fd = fd.MapValue()
	} else if fd.IsList() {
		f.Type = "repeated " + f.Type
	}
	if md := fd.Message(); md != nil && !wellKnown(md) && !slices.Contains(seen, md.FullName()) {
		f.Fields = describeMessage(md, seen).Fields
	}
	return f
}

func typeName(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return string(fd.Message().FullName())
	case protoreflect.EnumKind:
		return string(fd.Enum().FullName())
	default:
		return fd.Kind().String()
	}
}

// wellKnown messages have a JSON form of their own (a timestamp is a
// string, a Struct any object): their fields are not what JSON shows.
func wellKnown(md protoreflect.MessageDescriptor) bool {
	return md.ParentFile().Package() == "google.protobuf"
}

// Names lists the endpoints' names.
func (s *Set) Names() []string {
	out := make([]string, 0, len(s.Endpoints))
	for _, e := range s.Endpoints {
		out = append(out, e.Name)
	}
	return out
}

// ErrUnknownEndpoint is Lookup's error for a name the service does not
// have; the message lists the ones it has.
var ErrUnknownEndpoint = errors.New("unknown endpoint")

// Lookup finds an endpoint by Service.Method, package.Service.Method or
// /package.Service/Method.
func (s *Set) Lookup(name string) (*Endpoint, error) {
	full := strings.TrimPrefix(strings.Replace(strings.TrimPrefix(name, "/"), "/", ".", 1), ".")
	var found []*Endpoint
	for _, e := range s.Endpoints {
		if e.Name == name || string(e.desc.FullName()) == full {
			found = append(found, e)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		if len(s.Endpoints) == 0 {
			return nil, fmt.Errorf("%w %q: the service has no endpoints", ErrUnknownEndpoint, name)
		}
		return nil, fmt.Errorf("%w %q; the service has: %s", ErrUnknownEndpoint, name, strings.Join(s.Names(), ", "))
	default:
		var full []string
		for _, e := range found {
			full = append(full, string(e.desc.FullName()))
		}
		return nil, fmt.Errorf("endpoint %q is ambiguous: %s", name, strings.Join(full, ", "))
	}
}

// ErrBadRequestJSON wraps a request that is not valid JSON for the
// endpoint's request message.
var ErrBadRequestJSON = errors.New("request JSON")

// NewRequest parses body (JSON; empty means {}) into the endpoint's request
// message. The error says where the JSON is wrong.
func (e *Endpoint) NewRequest(body []byte) (proto.Message, error) {
	req := dynamicpb.NewMessage(e.desc.Input())
	if len(bytes.TrimSpace(body)) == 0 {
		return req, nil
	}
	if err := protojson.Unmarshal(body, req); err != nil {
		msg := strings.TrimPrefix(err.Error(), "proto: ")
		return nil, fmt.Errorf("%w for %s (%s): %s", ErrBadRequestJSON, e.Name, e.desc.Input().FullName(), msg)
	}
	return req, nil
}

// Call calls the endpoint with the JSON request body and hands each
// response, as compact JSON, to out: once for a unary endpoint, once per
// message for a server-streaming one. Client and bidirectional streams
// are called with Stream.
func (e *Endpoint) Call(ctx context.Context, conn grpc.ClientConnInterface, body []byte, out func(json []byte) error, opts ...grpc.CallOption) error {
	if e.ClientStreaming {
		return fmt.Errorf("%s takes a stream of requests: it cannot be called with one JSON body", e.Name)
	}
	req, err := e.NewRequest(body)
	if err != nil {
		return err
	}
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: e.ServerStreaming}, e.Method, opts...)
	if err != nil {
		return err
	}
	if err := stream.SendMsg(req); err != nil && err != io.EOF {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	return e.receive(stream, out)
}

// Stream calls a client- or bidirectional-streaming endpoint: it sends
// each JSON message next returns, until next returns io.EOF, while it
// hands each response, as compact JSON, to out as it arrives (a bidi
// stream's answers need not wait for the requests to end). A message that
// is not the request's JSON ends the call with an error naming it.
func (e *Endpoint) Stream(ctx context.Context, conn grpc.ClientConnInterface, next func() ([]byte, error), out func(json []byte) error, opts ...grpc.CallOption) error {
	if !e.ClientStreaming {
		return fmt.Errorf("%s takes one request, not a stream: call it with one JSON body", e.Name)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: e.ServerStreaming}, e.Method, opts...)
	if err != nil {
		return err
	}
	sent := make(chan error, 1)
	go func() {
		err := func() error {
			for n := 1; ; n++ {
				body, err := next()
				if err == io.EOF {
					return stream.CloseSend()
				}
				if err != nil {
					return err
				}
				req, err := e.NewRequest(body)
				if err != nil {
					return fmt.Errorf("message %d: %w", n, err)
				}
				if err := stream.SendMsg(req); err != nil {
					return nil // the call ended: its status comes from the receiving side
				}
			}
		}()
		sent <- err
		if err != nil {
			cancel() // the call cannot go on: end the receiving side too
		}
	}()
	err = e.receive(stream, out)
	select {
	case serr := <-sent:
		if serr != nil {
			return serr // what went wrong on this side, not the cancellation it caused
		}
	default:
		// Still waiting for a message to send: the call is over without it.
	}
	return err
}

// receive hands each response of stream to out until the stream ends (or
// after one, for an endpoint that answers once).
func (e *Endpoint) receive(stream grpc.ClientStream, out func(json []byte) error) error {
	for {
		resp := dynamicpb.NewMessage(e.desc.Output())
		err := stream.RecvMsg(resp)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		b, err := protojson.MarshalOptions{UseProtoNames: false}.Marshal(resp)
		if err != nil {
			return err
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, b); err != nil {
			return err
		}
		if err := out(buf.Bytes()); err != nil {
			return err
		}
		if !e.ServerStreaming {
			return nil
		}
	}
}

// ValuesJSON turns form values (a query string, an HTML form) into the
// endpoint's request JSON, each value read as its field's type: name=Ada,
// count=3, verbose=true, a repeated field's values as a list, a message
// field's value as JSON. Keys are the fields' JSON or proto names; one
// that names no field is an error that says so.
func (e *Endpoint) ValuesJSON(vals url.Values) ([]byte, error) {
	fields := e.desc.Input().Fields()
	keys := make([]string, 0, len(vals))
	for key := range vals {
		keys = append(keys, key)
	}
	sort.Strings(keys) // a field named twice (JSON and proto name) keeps one order
	items := map[protoreflect.FieldDescriptor][]json.RawMessage{}
	for _, key := range keys {
		fd := fields.ByJSONName(key)
		if fd == nil {
			fd = fields.ByName(protoreflect.Name(key))
		}
		if fd == nil || fd.IsMap() {
			return nil, fmt.Errorf("%w for %s (%s): %q is not a field (fields: %s)", ErrBadRequestJSON, e.Name, e.desc.Input().FullName(), key, fieldNames(e.Request.Fields))
		}
		for _, v := range vals[key] {
			item, err := formValue(fd, v)
			if err != nil {
				return nil, fmt.Errorf("%w for %s: field %s: %w", ErrBadRequestJSON, e.Name, fd.JSONName(), err)
			}
			items[fd] = append(items[fd], item)
		}
	}
	obj := make(map[string]json.RawMessage, len(items))
	for fd, list := range items {
		if !fd.IsList() {
			if len(list) > 1 {
				return nil, fmt.Errorf("%w for %s: field %s takes one value, not %d", ErrBadRequestJSON, e.Name, fd.JSONName(), len(list))
			}
			obj[fd.JSONName()] = list[0]
			continue
		}
		b, err := json.Marshal(list)
		if err != nil {
			return nil, err
		}
		obj[fd.JSONName()] = b
	}
	return json.Marshal(obj)
}

// formValue is v as JSON of fd's kind.
func formValue(fd protoreflect.FieldDescriptor, v string) (json.RawMessage, error) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("%q is not true or false", v)
		}
		return json.Marshal(b)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.FloatKind, protoreflect.DoubleKind:
		if !jsonNumber.MatchString(v) {
			return nil, fmt.Errorf("%q is not a number", v)
		}
		return json.RawMessage(v), nil
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if !json.Valid([]byte(v)) {
			return json.Marshal(v) // a well-known type's string form (a timestamp, a duration)
		}
		return json.RawMessage(v), nil
	default: // strings, bytes (base64), 64-bit integers and enums as strings
		return json.Marshal(v)
	}
}

var jsonNumber = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)

func fieldNames(fields []Field) string {
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.Name
	}
	return strings.Join(names, ", ")
}
