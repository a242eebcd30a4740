package endpoints

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/reflection"
)

// streamer serves grpc-go's interop TestService: a unary and a
// server-streaming endpoint with nested messages.
type streamer struct {
	testgrpc.UnimplementedTestServiceServer
}

func (streamer) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{Username: "size " + string(rune('0'+req.GetResponseSize()))}, nil
}

func (streamer) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, s testgrpc.TestService_StreamingOutputCallServer) error {
	for _, p := range req.GetResponseParameters() {
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: make([]byte, p.GetSize())}}); err != nil {
			return err
		}
	}
	return nil
}

func serve(t *testing.T) *grpc.ClientConn {
	t.Helper()
	srv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(srv, streamer{})
	reflection.Register(srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestDescribeLookupAndCall(t *testing.T) {
	conn := serve(t)
	set, err := Describe(t.Context(), conn)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Endpoints) < 5 {
		t.Fatalf("endpoints = %v", set.Names())
	}
	for _, name := range []string{"TestService.UnaryCall", "grpc.testing.TestService.UnaryCall", "/grpc.testing.TestService/UnaryCall"} {
		ep, err := set.Lookup(name)
		if err != nil || ep.Method != "/grpc.testing.TestService/UnaryCall" {
			t.Errorf("Lookup(%q) = %v, %v", name, ep, err)
		}
	}
	_, err = set.Lookup("TestService.Nope")
	if !errors.Is(err, ErrUnknownEndpoint) || !strings.Contains(err.Error(), "TestService.UnaryCall") {
		t.Errorf("unknown endpoint: %v", err)
	}

	// Nested messages are described field by field; enums and repeated
	// fields by type.
	ep, _ := set.Lookup("TestService.StreamingOutputCall")
	if !ep.ServerStreaming || ep.ClientStreaming {
		t.Errorf("streaming flags: %+v", ep)
	}
	fields := map[string]Field{}
	for _, f := range ep.Request.Fields {
		fields[f.Name] = f
	}
	if f := fields["responseParameters"]; f.Type != "repeated grpc.testing.ResponseParameters" || len(f.Fields) == 0 {
		t.Errorf("responseParameters = %+v", f)
	}
	if f := fields["responseType"]; f.Type != "grpc.testing.PayloadType" {
		t.Errorf("responseType = %+v", f)
	}

	// A server stream: one JSON line per message.
	var got []string
	err = ep.Call(t.Context(), conn, []byte(`{"responseParameters":[{"size":1},{"size":2},{"size":3}]}`), func(b []byte) error {
		got = append(got, string(b))
		return nil
	})
	if err != nil || len(got) != 3 || got[1] != `{"payload":{"body":"AAA="}}` {
		t.Fatalf("stream: %q %v", got, err)
	}

	// JSON errors say where; client streams are refused plainly.
	unary, _ := set.Lookup("TestService.UnaryCall")
	for body, want := range map[string]string{
		`{"responseSize": }`:   "line 1:18",
		`{"responseSize":"x"}`: "responseSize",
		`{"nope":1}`:           `unknown field "nope"`,
		`[1]`:                  "request JSON",
	} {
		if _, err := unary.NewRequest([]byte(body)); !errors.Is(err, ErrBadRequestJSON) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", body, err, want)
		}
	}
	cs, _ := set.Lookup("TestService.StreamingInputCall")
	if err := cs.Call(t.Context(), conn, nil, func([]byte) error { return nil }); err == nil || !strings.Contains(err.Error(), "stream of requests") {
		t.Errorf("client stream: %v", err)
	}
}
