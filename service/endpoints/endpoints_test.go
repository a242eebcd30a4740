package endpoints

import (
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/reflection"

	"github.com/micromesh/micromesh/internal/testsvc"
)

func serve(t *testing.T) *grpc.ClientConn {
	t.Helper()
	srv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(srv, testsvc.Service{})
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

// Client and bidirectional streams: each JSON message is sent as it comes;
// a bidi stream's answers arrive before the requests end; a bad message
// ends the call naming it; a unary endpoint is refused.
func TestStream(t *testing.T) {
	conn := serve(t)
	set, err := Describe(t.Context(), conn)
	if err != nil {
		t.Fatal(err)
	}
	messages := func(ms ...string) func() ([]byte, error) {
		return func() ([]byte, error) {
			if len(ms) == 0 {
				return nil, io.EOF
			}
			m := ms[0]
			ms = ms[1:]
			return []byte(m), nil
		}
	}
	cs, _ := set.Lookup("TestService.StreamingInputCall")
	var got []string
	collect := func(b []byte) error { got = append(got, string(b)); return nil }
	if err := cs.Stream(t.Context(), conn, messages(`{"payload":{"body":"AAA="}}`, `{}`, `{"payload":{"body":"AAAAAA=="}}`), collect); err != nil || len(got) != 1 || got[0] != `{"aggregatedPayloadSize":6}` {
		t.Fatalf("client stream: %q %v", got, err)
	}

	// Bidi: the second request is sent only once the first's answer came.
	bidi, _ := set.Lookup("TestService.FullDuplexCall")
	answered := make(chan struct{}, 1)
	sentSecond := false
	first := true
	next := func() ([]byte, error) {
		switch {
		case first:
			first = false
			return []byte(`{"responseParameters":[{"size":1}]}`), nil
		case !sentSecond:
			<-answered
			sentSecond = true
			return []byte(`{"responseParameters":[{"size":2},{"size":3}]}`), nil
		}
		return nil, io.EOF
	}
	got = nil
	err = bidi.Stream(t.Context(), conn, next, func(b []byte) error {
		got = append(got, string(b))
		select {
		case answered <- struct{}{}:
		default:
		}
		return nil
	})
	if err != nil || len(got) != 3 || got[0] != `{"payload":{"body":"AA=="}}` {
		t.Fatalf("bidi stream: %q %v", got, err)
	}

	if err := bidi.Stream(t.Context(), conn, messages(`{"responseParameters":[{"size":1}]}`, `{"nope":1}`), func([]byte) error { return nil }); !errors.Is(err, ErrBadRequestJSON) || !strings.Contains(err.Error(), "message 2") {
		t.Errorf("a bad second message: %v; want it named", err)
	}
	unary, _ := set.Lookup("TestService.UnaryCall")
	if err := unary.Stream(t.Context(), conn, messages(), func([]byte) error { return nil }); err == nil || !strings.Contains(err.Error(), "takes one request") {
		t.Errorf("Stream on a unary endpoint: %v", err)
	}
}

// Form values (a query string) become the request's JSON, each read as its
// field's type.
func TestValuesJSON(t *testing.T) {
	set, err := Describe(t.Context(), serve(t))
	if err != nil {
		t.Fatal(err)
	}
	unary, _ := set.Lookup("TestService.UnaryCall")
	stream, _ := set.Lookup("TestService.StreamingOutputCall")
	for _, tc := range []struct {
		ep    *Endpoint
		query string
		want  string // JSON, or the error's words
		bad   bool
	}{
		{unary, "responseSize=3&fillUsername=true&responseType=COMPRESSABLE", `{"fillUsername":true,"responseSize":3,"responseType":"COMPRESSABLE"}`, false},
		{unary, "response_size=-2.5e1", `{"responseSize":-2.5e1}`, false},
		{unary, `payload={"body":"AAAA"}`, `{"payload":{"body":"AAAA"}}`, false},
		{stream, `responseParameters={"size":1}&responseParameters={"size":2}`, `{"responseParameters":[{"size":1},{"size":2}]}`, false},
		{stream, `response_parameters={"size":2}&responseParameters={"size":1}`, `{"responseParameters":[{"size":1},{"size":2}]}`, false}, // both names: one field
		{unary, "responseSize=1&response_size=2", `field responseSize takes one value, not 2`, true},
		{unary, "", `{}`, false},
		{unary, "responseSize=three", `field responseSize: "three" is not a number`, true},
		{unary, "responseSize=NaN", `"NaN" is not a number`, true},
		{unary, "fillUsername=maybe", `"maybe" is not true or false`, true},
		{unary, "nope=1", `"nope" is not a field (fields: responseType, responseSize, payload`, true},
		{unary, "responseSize=1&responseSize=2", `field responseSize takes one value, not 2`, true},
	} {
		vals, err := url.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tc.ep.ValuesJSON(vals)
		if tc.bad {
			if err == nil || !errors.Is(err, ErrBadRequestJSON) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: %s, %v; want an error with %s", tc.ep.Name, got, err, tc.want)
			}
			continue
		}
		if err != nil || string(got) != tc.want {
			t.Errorf("%s %q: %s, %v; want %s", tc.ep.Name, tc.query, got, err, tc.want)
			continue
		}
		if _, err := tc.ep.NewRequest(got); err != nil {
			t.Errorf("%s: the request does not parse: %v", got, err)
		}
	}
}
