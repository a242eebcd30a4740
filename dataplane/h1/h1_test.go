package h1_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/micromesh/micromesh/dataplane/h1"
)

// echo answers with what it received: method, URI, Host, a header and the
// body; trailers it got come back as response trailers.
func echo(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	w.Header().Set("X-Method", r.Method)
	w.Header().Set("X-URI", r.RequestURI)
	w.Header().Set("X-Host", r.Host)
	w.Header().Set("X-Test", r.Header.Get("X-Test"))
	w.Header().Set("X-Length", fmt.Sprint(r.ContentLength))
	for k, vv := range r.Trailer {
		w.Header()[http.TrailerPrefix+k] = vv
	}
	_, _ = w.Write(body)
}

// serveH1 runs an h1.Server on loopback and returns its address.
func serveH1(t *testing.T, h http.Handler, opts ...func(*h1.Server)) (string, *h1.Server, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	s := &h1.Server{Handler: h, ConnState: func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}}
	for _, o := range opts {
		o(s)
	}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Close() })
	return ln.Addr().String(), s, &conns
}

// serveStd runs a net/http server (the app, in production) and returns
// its address and a count of the connections it accepted.
func serveStd(t *testing.T, h http.Handler, idle time.Duration) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	s := &http.Server{Handler: h, IdleTimeout: idle, ConnState: func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Close() })
	return ln.Addr().String(), &conns
}

func do(t *testing.T, rt http.RoundTripper, method, url, body string, hdr http.Header) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	resp.Body.Close()
	return resp, string(b)
}

// The server answers net/http's client, many requests on one connection.
func TestServerWithStdClient(t *testing.T) {
	addr, _, conns := serveH1(t, http.HandlerFunc(echo))
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	for i := range 50 {
		resp, body := do(t, tr, "POST", fmt.Sprintf("http://%s/p/%d?q=1", addr, i), "hello", http.Header{"X-Test": {"v"}})
		if resp.StatusCode != 200 || body != "hello" || resp.Header.Get("X-URI") != fmt.Sprintf("/p/%d?q=1", i) ||
			resp.Header.Get("X-Test") != "v" || resp.Header.Get("X-Length") != "5" || resp.Header.Get("X-Method") != "POST" {
			t.Fatalf("request %d: %d %q %v", i, resp.StatusCode, body, resp.Header)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("50 sequential requests used %d connections, want 1 (keep-alive)", n)
	}
	// HEAD has no body, whatever the handler writes.
	resp, body := do(t, tr, "HEAD", "http://"+addr+"/", "", nil)
	if resp.StatusCode != 200 || body != "" {
		t.Errorf("HEAD: %d %q", resp.StatusCode, body)
	}
}

// The transport talks to net/http's server: keep-alive, bodies of known
// and unknown length, trailers both ways.
func TestTransportWithStdServer(t *testing.T) {
	addr, conns := serveStd(t, http.HandlerFunc(echo), 0)
	tr := &h1.Transport{}
	defer tr.CloseIdleConnections()
	for i := range 50 {
		resp, body := do(t, tr, "PUT", fmt.Sprintf("http://%s/x/%d", addr, i), strings.Repeat("b", i), http.Header{"X-Test": {"w"}})
		if resp.StatusCode != 200 || body != strings.Repeat("b", i) || resp.Header.Get("X-Test") != "w" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("50 sequential requests used %d connections, want 1", n)
	}
	// A streaming body (unknown length) with trailers.
	pr, pw := io.Pipe()
	go func() {
		for i := range 3 {
			fmt.Fprintf(pw, "part%d;", i)
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", "http://"+addr+"/stream", pr)
	req.ContentLength = -1
	req.Trailer = http.Header{"X-Sum": {"42"}}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "part0;part1;part2;" || resp.Header.Get("X-Length") != "-1" || resp.Trailer.Get("X-Sum") != "42" {
		t.Errorf("streaming: %q length %s trailer %v", b, resp.Header.Get("X-Length"), resp.Trailer)
	}
}

// Transport and server together, as the sidecar's legs meet: concurrent
// requests, chunked responses, trailers, informational answers.
func TestTransportWithServer(t *testing.T) {
	addr, _, conns := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunks":
			for i := range 3 {
				fmt.Fprintf(w, "c%d", i)
				w.(http.Flusher).Flush()
			}
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		case "/early-hints":
			w.Header().Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.WriteHeader(http.StatusAccepted)
			_, _ = io.WriteString(w, "done")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			echo(w, r)
		}
	}))
	tr := &h1.Transport{}
	defer tr.CloseIdleConnections()
	resp, body := do(t, tr, "GET", "http://"+addr+"/chunks", "", nil)
	if body != "c0c1c2" || resp.ContentLength != -1 || resp.Trailer.Get("Grpc-Status") != "0" {
		t.Errorf("chunks: %q length %d trailers %v", body, resp.ContentLength, resp.Trailer)
	}
	resp, body = do(t, tr, "GET", "http://"+addr+"/early-hints", "", nil)
	if resp.StatusCode != http.StatusAccepted || body != "done" {
		t.Errorf("early hints: %d %q", resp.StatusCode, body)
	}
	resp, body = do(t, tr, "DELETE", "http://"+addr+"/empty", "", nil)
	if resp.StatusCode != http.StatusNoContent || body != "" {
		t.Errorf("204: %d %q", resp.StatusCode, body)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16*20)
	for g := range 16 {
		wg.Go(func() {
			for i := range 20 {
				want := fmt.Sprintf("g%d-i%d", g, i)
				req, _ := http.NewRequest("POST", "http://"+addr+"/c", strings.NewReader(want))
				resp, err := tr.RoundTrip(req)
				if err != nil {
					errs <- err
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != want {
					errs <- fmt.Errorf("got %q, want %q", b, want)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := conns.Load(); n > 17 {
		t.Errorf("16 concurrent callers opened %d connections", n)
	}
}

// Bad input is answered with 400 and a reason, and the connection closes.
func TestServerRejectsMalformedRequests(t *testing.T) {
	addr, _, _ := serveH1(t, http.HandlerFunc(echo))
	for name, raw := range map[string]string{
		"garbage":         "HELLO\r\n\r\n",
		"no host":         "GET / HTTP/1.1\r\n\r\n",
		"two hosts":       "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"bad length":      "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
		"unknown expect":  "POST / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx",
		"header no colon": "GET / HTTP/1.1\r\nHost: a\r\nbroken\r\n\r\n",
		// Framing a proxy and the app behind it could read differently
		// (request smuggling, RFC 9112 §6.3, §11.2): refused, not guessed.
		"length and chunked": "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
		"two lengths":        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy",
		"chunked in 1.0":     "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"gzip coding":        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"folded header":      "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n",
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, raw)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		c.Close()
		if !strings.HasPrefix(string(b), "HTTP/1.1 400 Bad Request") || !strings.Contains(string(b), "Connection: close") {
			t.Errorf("%s: got %q", name, b)
		}
	}
}

// A request head past MaxHeaderBytes is refused with 431 before the server
// has read much more of it; one just under passes.
func TestServerBoundsTheRequestHead(t *testing.T) {
	addr, _, _ := serveH1(t, http.HandlerFunc(echo))
	send := func(head string) string {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go func() { _, _ = io.WriteString(c, head) }() // the server may stop reading early
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := bufio.NewReader(c).ReadString('\n')
		return b
	}
	big := "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("a", 4*h1.MaxHeaderBytes) + "\r\n\r\n"
	if got := send(big); !strings.HasPrefix(got, "HTTP/1.1 431 ") {
		t.Errorf("a %d-byte head: got %q, want 431", len(big), got)
	}
	fits := "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("a", h1.MaxHeaderBytes-100) + "\r\nConnection: close\r\n\r\n"
	if got := send(fits); !strings.HasPrefix(got, "HTTP/1.1 200 ") {
		t.Errorf("a head just under the limit: got %q, want 200", got)
	}
}

// A client that sends Expect: 100-continue gets the go-ahead when the
// handler reads the body.
func TestServerExpectContinue(t *testing.T) {
	addr, _, _ := serveH1(t, http.HandlerFunc(echo))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
	br := bufio.NewReader(c)
	line, _ := br.ReadString('\n')
	if line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("got %q before sending the body, want 100 Continue", line)
	}
	_, _ = br.ReadString('\n')
	_, _ = io.WriteString(c, "ok")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "ok" {
		t.Errorf("got %d %q", resp.StatusCode, b)
	}
}

// Header values cannot smuggle header lines, in either direction.
func TestNoHeaderInjection(t *testing.T) {
	addr, _, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Echo", r.Header.Get("X-Test"))
		w.Header().Set("X-Bad", "a\r\nX-Injected: yes")
	}))
	var seen http.Header
	app, _ := serveStd(t, http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { seen = r.Header.Clone() }), 0)
	tr := &h1.Transport{}
	defer tr.CloseIdleConnections()
	do(t, tr, "GET", "http://"+app+"/", "", http.Header{"X-Test": {"v\r\nX-Injected: yes"}})
	if seen.Get("X-Injected") != "" {
		t.Errorf("the transport let a header through a value: %v", seen)
	}
	resp, _ := do(t, &http.Transport{}, "GET", "http://"+addr+"/", "", nil)
	if resp.Header.Get("X-Injected") != "" {
		t.Errorf("the server let a header through a value: %v", resp.Header)
	}
}

// A kept-alive connection the app closed is noticed, and the request goes
// out on a new one.
func TestTransportStaleConnection(t *testing.T) {
	addr, conns := serveStd(t, http.HandlerFunc(echo), 100*time.Millisecond)
	tr := &h1.Transport{}
	defer tr.CloseIdleConnections()
	do(t, tr, "POST", "http://"+addr+"/", "one", nil)
	time.Sleep(300 * time.Millisecond) // the app closes the idle connection
	resp, body := do(t, tr, "POST", "http://"+addr+"/", "two", nil)
	if resp.StatusCode != 200 || body != "two" {
		t.Fatalf("after the app closed the idle connection: %d %q", resp.StatusCode, body)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("connections = %d, want 2", n)
	}
}

// A cancelled request ends promptly and its connection is not reused.
func TestTransportCancel(t *testing.T) {
	release := make(chan struct{})
	addr, conns := serveStd(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		_, _ = io.WriteString(w, "ok")
	}), 0)
	defer close(release)
	tr := &h1.Transport{}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/slow", nil)
	start := time.Now()
	_, err := tr.RoundTrip(req)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("got %v after %v, want the deadline promptly", err, time.Since(start))
	}
	if _, body := do(t, tr, "GET", "http://"+addr+"/", "", nil); body != "ok" {
		t.Errorf("next request: %q", body)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("connections = %d, want 2 (the cancelled one is not reused)", n)
	}
}

// A streaming request body that fails half-sent ends the exchange at
// once with the body's error (the upstream, left waiting for the rest,
// sees its connection close), not at the upstream's or caller's timeout.
func TestTransportFailingRequestBody(t *testing.T) {
	got := make(chan error, 1)
	addr, _ := serveStd(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.Copy(io.Discard, r.Body)
		got <- err
	}), 0)
	tr := &h1.Transport{}
	defer tr.CloseIdleConnections()
	broken := errors.New("the caller's body broke")
	body := io.MultiReader(strings.NewReader("half"), iotest.ErrReader(broken))
	req, _ := http.NewRequest("POST", "http://"+addr+"/", io.NopCloser(body))
	req.ContentLength = -1 // streams, chunked
	start := time.Now()
	_, err := tr.RoundTrip(req)
	if !errors.Is(err, broken) || time.Since(start) > 2*time.Second {
		t.Fatalf("got %v after %v, want the body's error promptly", err, time.Since(start))
	}
	select {
	case err := <-got:
		if err == nil {
			t.Error("the upstream read the truncated body as whole")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the upstream still waits for the rest of the body")
	}
}

// A response body abandoned half-read closes its connection; the next
// request is unaffected.
func TestTransportAbandonedBody(t *testing.T) {
	addr, _ := serveStd(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("x", 1<<20))
	}), 0)
	tr := &h1.Transport{}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = resp.Body.Read(make([]byte, 10))
	resp.Body.Close()
	if _, body := do(t, tr, "GET", "http://"+addr+"/", "", nil); len(body) != 1<<20 {
		t.Errorf("next request got %d bytes", len(body))
	}
}

// HTTP/2 with prior knowledge (gRPC from the app) goes to the H2 server.
func TestServerHandsH2CToNetHTTP(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto)
	})
	h2 := &http.Server{Handler: h, Protocols: new(http.Protocols)}
	h2.Protocols.SetUnencryptedHTTP2(true)
	addr, _, _ := serveH1(t, h, func(s *h1.Server) { s.H2 = h2 })
	c := &http.Transport{Protocols: new(http.Protocols)}
	c.Protocols.SetUnencryptedHTTP2(true)
	defer c.CloseIdleConnections()
	if _, body := do(t, c, "GET", "http://"+addr+"/", "", nil); body != "HTTP/2.0" {
		t.Errorf("h2c request served as %q", body)
	}
	if _, body := do(t, &http.Transport{}, "GET", "http://"+addr+"/", "", nil); body != "HTTP/1.1" {
		t.Errorf("HTTP/1.1 request served as %q", body)
	}
}

// Shutdown lets the request in flight finish, then stops.
func TestServerShutdown(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	addr, s, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		_, _ = io.WriteString(w, "finished")
	}))
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-started
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	close(release)
	if b := <-got; b != "finished" {
		t.Errorf("request in flight got %q", b)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("still accepting after Shutdown")
	}
}

// A handler (the proxy) may hand the server a header map whole instead of
// filling Header(); after WriteHeader the header is fixed.
func TestServerReplaceHeader(t *testing.T) {
	type replacer interface{ ReplaceHeader(http.Header) }
	url, _, _ := serveH1(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Dropped", "1")
		w.(replacer).ReplaceHeader(http.Header{"X-Adopted": {"yes"}, "Content-Length": {"2"}})
		w.WriteHeader(http.StatusAccepted)
		w.(replacer).ReplaceHeader(http.Header{"X-Late": {"no"}})
		_, _ = w.Write([]byte("ok"))
	}))
	resp, body := do(t, http.DefaultTransport, "GET", "http://"+url+"/", "", nil)
	if resp.StatusCode != http.StatusAccepted || body != "ok" || resp.Header.Get("X-Adopted") != "yes" ||
		resp.Header.Get("X-Dropped") != "" || resp.Header.Get("X-Late") != "" || resp.ContentLength != 2 {
		t.Fatalf("%d %q %v", resp.StatusCode, body, resp.Header)
	}
}
