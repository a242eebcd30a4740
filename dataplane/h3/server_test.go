package h3

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/micromesh/micromesh/internal/syncbuf"
)

// quic-go's own HTTP/3 client against our server: requests with and
// without bodies, trailers both ways, a streamed answer read as it comes.
func TestServerAnswersQuicGosClient(t *testing.T) {
	ts, _ := startServer(t, ours, "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Req-Trailer")
		w.Header().Set("X-Method", r.Method)
		w.Header().Set("X-Host", r.Host)
		w.Header().Set("X-Query", r.URL.Query().Get("q"))
		if r.URL.Path == "/stream" {
			for i := range 3 {
				_, _ = w.Write([]byte{'a' + byte(i)})
				w.(http.Flusher).Flush()
			}
			return
		}
		_, _ = w.Write(append([]byte("got:"), body...))
		w.Header().Set("X-Req-Trailer", r.Trailer.Get("X-Req-Trailer"))
	}))
	_, pool := sharedTLS()
	client := &http.Client{Transport: &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	defer client.Transport.(*http3.Transport).Close()

	resp, err := client.Get(ts.url("/a?q=1"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "got:" || resp.Header.Get("X-Method") != "GET" || resp.Header.Get("X-Query") != "1" || resp.Header.Get("X-Host") != ts.addr {
		t.Fatalf("GET: %d %q %v", resp.StatusCode, b, resp.Header)
	}

	req, _ := http.NewRequest("POST", ts.url("/p"), io.NopCloser(strings.NewReader("hello")))
	req.Trailer = http.Header{"X-Req-Trailer": {"t1"}}
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "got:hello" || resp.Trailer.Get("X-Req-Trailer") != "t1" {
		t.Fatalf("POST: %q trailers %v", b, resp.Trailer)
	}

	resp, err = client.Get(ts.url("/stream"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "abc" {
		t.Fatalf("stream: %q", b)
	}
}

// dialRaw opens a QUIC connection speaking h3 to ts, for tests that write
// frames by hand; it closes with the test.
func dialRaw(t *testing.T, ts *testServer) (context.Context, *quic.Conn) {
	t.Helper()
	_, pool := sharedTLS()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	qc, err := quic.DialAddr(ctx, ts.addr, &tls.Config{RootCAs: pool, NextProtos: []string{NextProto}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = qc.CloseWithError(0, "") })
	return ctx, qc
}

// rawRequest opens a stream to our server on a connection of its own and
// writes frames as given; it returns the answer, or the stream's error.
func rawRequest(t *testing.T, ts *testServer, frames ...[]byte) (*http.Response, string, error) {
	t.Helper()
	ctx, qc := dialRaw(t, ts)
	if _, err := openControl(qc); err != nil {
		t.Fatal(err)
	}
	str, err := qc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = str.Write(bytes.Join(frames, nil))
	_ = str.Close()
	req, _ := http.NewRequest("GET", ts.url("/"), nil)
	resp, br, err := readResponse(str, req)
	if err != nil {
		return nil, "", err
	}
	b := &body{str: str, br: br, trailer: &resp.Trailer, of: "response", contentLength: resp.ContentLength}
	msg, err := io.ReadAll(b)
	return resp, string(msg), err
}

func dataFrame(s string) []byte {
	return append(appendFrameHeader(nil, frameData, uint64(len(s))), s...)
}

// Requests that break HTTP/3's rules get a 4xx/5xx with the reason, and
// never reach the handler.
func TestServerRefusesMalformedRequests(t *testing.T) {
	var reached sync.Map
	ts, _ := startServer(t, ours, "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Store(r.URL.Path, true)
	}))
	ok := []string{":method", "GET", ":scheme", "https", ":authority", "svc", ":path"}
	cases := []struct {
		name   string
		frames [][]byte
		code   int
		says   string
	}{
		{"missing path", [][]byte{headersFrame(t, ":method", "GET", ":scheme", "https")}, 400, "missing :method, :scheme or :path"},
		{"unknown pseudo-header", [][]byte{headersFrame(t, append(ok, "/u", ":nope", "x")...)}, 400, `pseudo-header ":nope"`},
		{"duplicate pseudo-header", [][]byte{headersFrame(t, append(ok, "/d", ":path", "/d")...)}, 400, "twice"},
		{"pseudo-header after a field", [][]byte{headersFrame(t, ":method", "GET", "x-a", "1", ":path", "/p", ":scheme", "https")}, 400, "after regular fields"},
		{"upper-case name", [][]byte{headersFrame(t, append(ok, "/c", "X-Up", "1")...)}, 400, "not lower-case"},
		{"header injection", [][]byte{headersFrame(t, append(ok, "/i", "x-a", "1\r\nx-b: 2")...)}, 400, `invalid value for "x-a"`},
		{"connection-specific field", [][]byte{headersFrame(t, append(ok, "/k", "connection", "close")...)}, 400, "connection-specific"},
		{"transfer-encoding", [][]byte{headersFrame(t, append(ok, "/t", "transfer-encoding", "chunked")...)}, 400, "connection-specific"},
		{"te other than trailers", [][]byte{headersFrame(t, append(ok, "/te", "te", "gzip")...)}, 400, `only "trailers"`},
		{"differing content-lengths", [][]byte{headersFrame(t, append(ok, "/cl", "content-length", "1", "content-length", "2")...), dataFrame("x")}, 400, "content-length"},
		{"content-length without a body", [][]byte{headersFrame(t, append(ok, "/nb", "content-length", "5")...)}, 400, "no body"},
		{"authority and host differ", [][]byte{headersFrame(t, append(ok, "/h", "host", "other")...)}, 400, "differ"},
		{"bad path", [][]byte{headersFrame(t, ":method", "GET", ":scheme", "https", ":path", "no-slash")}, 400, ":path"},
		{"DATA before HEADERS", [][]byte{dataFrame("x"), headersFrame(t, append(ok, "/x")...)}, 400, "DATA before HEADERS"},
		{"control frame on a request stream", [][]byte{appendFrameHeader(nil, frameSettings, 0)}, 400, "frame type 0x4"},
		{"extended CONNECT", [][]byte{headersFrame(t, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "https", ":path", "/ws", ":authority", "svc:443")}, 501, "extended CONNECT"},
		{"CONNECT with a path", [][]byte{headersFrame(t, ":method", "CONNECT", ":authority", "svc:443", ":path", "/")}, 400, "only :authority"},
		{"CONNECT without an authority", [][]byte{headersFrame(t, ":method", "CONNECT")}, 400, "CONNECT without :authority"},
		{"headers too large", [][]byte{headersFrame(t, append(ok, "/big", "x-big", strings.Repeat("a", 2*maxRequestHead))...)}, 431, "limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, msg, err := rawRequest(t, ts, tc.frames...)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.code || !strings.Contains(msg, tc.says) {
				t.Fatalf("got %d %q, want %d saying %q", resp.StatusCode, msg, tc.code, tc.says)
			}
		})
	}
	reached.Range(func(k, _ any) bool {
		t.Errorf("the handler saw %v", k)
		return true
	})
	// Unknown frame types are skipped, and a well-formed request still
	// gets through on the same server.
	grease := append(appendFrameHeader(nil, 0x21, 3), "abc"...)
	resp, _, err := rawRequest(t, ts, grease, headersFrame(t, append(ok, "/fine")...))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("well-formed request: %v %v", resp, err)
	}
}

// A request body that breaks its framing reaches the handler as a read
// error, never as a whole body.
func TestServerRequestBodyFraming(t *testing.T) {
	got := make(chan error, 2)
	ts, _ := startServer(t, ours, "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		got <- err
	}))
	ok := []string{":method", "POST", ":scheme", "https", ":authority", "svc", ":path", "/"}
	_, _, _ = rawRequest(t, ts, headersFrame(t, append(ok, "content-length", "10")...), dataFrame("short"))
	if err := <-got; err == nil || !strings.Contains(err.Error(), "content-length 10") {
		t.Fatalf("short body: %v", err)
	}
	_, _, _ = rawRequest(t, ts, headersFrame(t, append(ok, "content-length", "2")...), dataFrame("longer"))
	if err := <-got; err == nil || !strings.Contains(err.Error(), "longer than content-length") {
		t.Fatalf("long body: %v", err)
	}
}

// HEAD and 204 answers carry no body; a body shorter than the
// content-length the handler set resets the stream; a panicking handler
// resets its stream, is logged, and the connection keeps serving.
func TestServerResponseRules(t *testing.T) {
	var logs syncbuf.Buffer
	writeErr := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/no-content":
			w.WriteHeader(http.StatusNoContent)
			_, err := w.Write([]byte("x"))
			writeErr <- err
		case "/short":
			w.Header().Set("Content-Length", "10")
			_, _ = w.Write([]byte("12345"))
		case "/long":
			w.Header().Set("Content-Length", "2")
			_, err := w.Write([]byte("12345"))
			writeErr <- err
		case "/panic":
			panic("handler bug")
		case "/abort":
			_, _ = w.Write([]byte("partial"))
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		default:
			w.Header().Set("Content-Length", "5")
			_, _ = w.Write([]byte("hello"))
		}
	})
	ts, tr := startServer(t, ours, "", h, func(s *Server) { s.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	do := func(method, path string) (*http.Response, string, error) {
		resp, err := tr.RoundTrip(mustReq(method, ts.url(path), nil))
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, string(b), err
	}
	if resp, b, err := do("HEAD", "/"); err != nil || resp.StatusCode != 200 || b != "" || resp.Header.Get("Content-Length") != "5" {
		t.Fatalf("HEAD: %v %q %v", resp, b, err)
	}
	if resp, b, err := do("GET", "/no-content"); err != nil || resp.StatusCode != 204 || b != "" {
		t.Fatalf("204: %v %q %v", resp, b, err)
	}
	if err := <-writeErr; !errors.Is(err, http.ErrBodyNotAllowed) {
		t.Fatalf("writing a 204's body: %v", err)
	}
	if _, b, err := do("GET", "/short"); err == nil {
		t.Fatalf("a body cut short read as whole: %q", b)
	}
	if _, b, err := do("GET", "/long"); err == nil { // nothing written of the 2 bytes promised
		t.Fatalf("a body cut short read as whole: %q", b)
	}
	if err := <-writeErr; !errors.Is(err, http.ErrContentLength) {
		t.Fatalf("writing past the content-length: %v", err)
	}
	for _, path := range []string{"/panic", "/abort"} {
		if _, b, err := do("GET", path); err == nil {
			t.Fatalf("%s: a cut answer read as whole: %q", path, b)
		}
	}
	if _, b, err := do("GET", "/"); err != nil || b != "hello" {
		t.Fatalf("after the panics: %q %v", b, err)
	}
	if !strings.Contains(logs.String(), "handler bug") || strings.Contains(logs.String(), "abort") {
		t.Fatalf("log: %s", logs.String())
	}
}

// After Shutdown's GOAWAY a stream the server had not accepted is
// rejected (H3_REQUEST_REJECTED: not processed, safe to retry), and
// Shutdown returns once the client has closed.
func TestServerShutdownRejectsNewStreams(t *testing.T) {
	release, entered := make(chan struct{}), make(chan struct{})
	ts, _ := startServer(t, ours, "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
	}))
	ctx, qc := dialRaw(t, ts)
	goAway := make(chan struct{})
	go acceptUniStreams(qc, false, func() { close(goAway) })
	if _, err := openControl(qc); err != nil {
		t.Fatal(err)
	}
	req := headersFrame(t, ":method", "GET", ":scheme", "https", ":authority", "svc", ":path", "/")
	first, _ := qc.OpenStreamSync(ctx)
	_, _ = first.Write(req)
	_ = first.Close()
	<-entered // accepted, before the GOAWAY
	shut := make(chan error, 1)
	go func() { shut <- ts.srv.Shutdown(ctx) }()
	<-goAway
	second, _ := qc.OpenStreamSync(ctx)
	_, _ = second.Write(req)
	_ = second.Close()
	_, err := second.Read(make([]byte, 1))
	var se *quic.StreamError
	if !errors.As(err, &se) || se.ErrorCode != errRequestRejected {
		t.Fatalf("stream after GOAWAY: %v", err)
	}
	close(release)
	if _, _, err := readResponse(first, mustReq("GET", ts.url("/"), nil)); err != nil {
		t.Fatalf("the request in flight: %v", err)
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned before the client closed: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	_ = qc.CloseWithError(errNoError, "")
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

// A handler may answer while the client is still sending, and close the
// request body under a reader blocked in another goroutine (as a transport
// copying the body upstream does when the upstream answered early, gRPC's
// usual error path): the answer must still arrive whole.
func TestServerAnswersBeforeTheRequestEnds(t *testing.T) {
	readErr := make(chan error, 1)
	ts, tr := startServer(t, ours, "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		go func() {
			_, err := io.Copy(io.Discard, r.Body)
			readErr <- err
		}()
		time.Sleep(50 * time.Millisecond) // the reader blocked in Read (it fails on the old code this way; no hook tells when it blocks)
		w.Header().Set("Grpc-Status", "11")
		w.WriteHeader(200)
		_ = r.Body.Close()
	}))
	pr, pw := io.Pipe() // the client's request body never ends
	defer pw.Close()
	resp, err := tr.RoundTrip(mustReq("POST", ts.url("/"), pr))
	if err != nil {
		t.Fatalf("the early answer: %v", err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err != nil || resp.Header.Get("Grpc-Status") != "11" {
		t.Fatalf("the early answer: %v %v", resp.Header, err)
	}
	if err := <-readErr; err == nil {
		t.Fatal("the reader saw a whole body")
	}
}

// A stream that never delivers its headers is reset once
// ReadHeaderTimeout passes, and holds nothing after.
func TestServerReadHeaderTimeout(t *testing.T) {
	ts, _ := startServer(t, ours, "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
		func(s *Server) { s.ReadHeaderTimeout = 200 * time.Millisecond })
	ctx, qc := dialRaw(t, ts)
	str, err := qc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Half a HEADERS frame, then nothing.
	_, _ = str.Write(headersFrame(t, ":method", "GET", ":scheme", "https", ":authority", "svc", ":path", "/")[:3])
	start := time.Now()
	_ = str.SetReadDeadline(start.Add(5 * time.Second))
	_, err = str.Read(make([]byte, 1))
	var se *quic.StreamError
	if !errors.As(err, &se) || se.ErrorCode != errRequestIncomplete || time.Since(start) > 5*time.Second {
		t.Fatalf("after %v: %v", time.Since(start), err)
	}
}

// A handler (the proxy) may hand the server a header map whole instead of
// filling Header(); after WriteHeader the header is fixed.
func TestServerReplaceHeader(t *testing.T) {
	ts, tr := startServer(t, ours, "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Dropped", "1")
		w.(*responseWriter).ReplaceHeader(http.Header{"X-Adopted": {"yes"}, "Content-Length": {"2"}})
		w.WriteHeader(http.StatusAccepted)
		w.(*responseWriter).ReplaceHeader(http.Header{"X-Late": {"no"}})
		_, _ = w.Write([]byte("ok"))
	}))
	resp, err := tr.RoundTrip(mustReq("GET", ts.url("/"), nil))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || string(b) != "ok" || resp.Header.Get("X-Adopted") != "yes" ||
		resp.Header.Get("X-Dropped") != "" || resp.Header.Get("X-Late") != "" || resp.ContentLength != 2 {
		t.Fatalf("%d %q %v", resp.StatusCode, b, resp.Header)
	}
}
