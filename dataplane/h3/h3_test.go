package h3

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/quic-go/quicvarint"
)

// testTLS returns a server certificate for 127.0.0.1 and a pool trusting it.
func testTLS(t testing.TB) (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

var sharedTLS = sync.OnceValues(func() (tls.Certificate, *x509.CertPool) { return testTLS(nil) })

type testServer struct {
	udp   net.PacketConn
	addr  string
	conns atomic.Int64
	srv   interface {
		Serve(net.PacketConn) error
		Shutdown(context.Context) error
		Close() error
	}
}

// serverKind names the HTTP/3 server a test runs against: ours, or
// quic-go's (the client must work with a server it did not grow up with).
type serverKind string

const (
	ours   serverKind = "micromesh"
	quicGo serverKind = "quic-go"
)

// eachServer runs test against both servers.
func eachServer(t *testing.T, test func(t *testing.T, kind serverKind)) {
	for _, kind := range []serverKind{ours, quicGo} {
		t.Run(string(kind), func(t *testing.T) { test(t, kind) })
	}
}

// startServer runs a kind of HTTP/3 server with h on a loopback port
// (addr "" picks one), and returns it with a client transport trusting it.
func startServer(t testing.TB, kind serverKind, addr string, h http.Handler, opts ...func(*Server)) (*testServer, *Transport) {
	t.Helper()
	cert, pool := sharedTLS()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	udp, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{udp: udp, addr: udp.LocalAddr().String()}
	tlsConf := &tls.Config{Certificates: []tls.Certificate{cert}}
	switch kind {
	case ours:
		s := &Server{Handler: h, TLSConfig: tlsConf, ConnState: func(_ *quic.Conn, open bool) {
			if open {
				ts.conns.Add(1)
			}
		}}
		for _, o := range opts {
			o(s)
		}
		ts.srv = s
	default:
		ts.srv = &http3.Server{
			Handler:   h,
			TLSConfig: http3.ConfigureTLSConfig(tlsConf),
			ConnContext: func(ctx context.Context, c *quic.Conn) context.Context {
				ts.conns.Add(1)
				return ctx
			},
		}
	}
	go func() { _ = ts.srv.Serve(udp) }()
	t.Cleanup(func() { ts.close() })
	tr := &Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, QUICConfig: &quic.Config{HandshakeIdleTimeout: 5 * time.Second}}
	t.Cleanup(func() { _ = tr.Close() })
	return ts, tr
}

func (ts *testServer) close() {
	_ = ts.srv.Close()
	_ = ts.udp.Close()
}

func (ts *testServer) url(path string) string { return "https://" + ts.addr + path }

func TestRequestAndResponse(t *testing.T) {
	eachServer(t, func(t *testing.T, kind serverKind) {
		ts, tr := startServer(t, kind, "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("X-Method", r.Method)
			w.Header().Set("X-Host", r.Host)
			w.Header().Set("X-Path", r.URL.RequestURI())
			w.Header().Set("X-Custom", r.Header.Get("X-Custom"))
			w.Header().Set("X-Te", r.Header.Get("Te"))
			w.Header().Set("X-Content-Length", fmt.Sprint(r.ContentLength))
			w.Header().Add("X-Multi", "a")
			w.Header().Add("X-Multi", "b")
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Date", "Fri, 27 Nov 2026 21:00:00 GMT")
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write(append([]byte("got:"), body...))
		}))
		cases := []struct {
			name string
			req  func() *http.Request
			want string
			cl   string
		}{
			{"get", func() *http.Request {
				r, _ := http.NewRequest("GET", ts.url("/a/b?q=1"), nil)
				return r
			}, "got:", map[serverKind]string{ours: "0", quicGo: "-1"}[kind]}, // ours sees the stream end with the headers
			{"in-memory body", func() *http.Request {
				r, _ := http.NewRequest("POST", ts.url("/post"), strings.NewReader("hello"))
				return r
			}, "got:hello", "5"},
			{"streaming body", func() *http.Request {
				r, _ := http.NewRequest("PUT", ts.url("/put"), io.NopCloser(strings.NewReader("streamed")))
				return r
			}, "got:streamed", "-1"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				req := tc.req()
				req.Host = "svc.example"
				req.Header.Set("X-Custom", "v1")
				req.Header.Set("Te", "trailers, gzip")
				req.Header.Set("Connection", "close")
				resp, err := tr.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != http.StatusCreated || string(body) != tc.want || resp.Proto != "HTTP/3.0" {
					t.Fatalf("got %d %q %s", resp.StatusCode, body, resp.Proto)
				}
				h := resp.Header
				for k, want := range map[string]string{"X-Method": req.Method, "X-Host": "svc.example", "X-Custom": "v1", "X-Te": "trailers", "X-Content-Length": tc.cl} {
					if h.Get(k) != want {
						t.Errorf("%s = %q, want %q", k, h.Get(k), want)
					}
				}
				// Eleven fields: the decoder's shared backing array refills,
				// and a repeated field must not overwrite its neighbours.
				if got := h.Values("X-Multi"); len(got) != 2 || got[0] != "a" || got[1] != "b" {
					t.Errorf("X-Multi = %q", got)
				}
				if h.Get("Content-Type") == "" || h.Get("Date") == "" {
					t.Errorf("common fields lost: %v", h)
				}
				if tc.name == "get" && h.Get("X-Path") != "/a/b?q=1" {
					t.Errorf("path %q", h.Get("X-Path"))
				}
			})
		}
		if n := ts.conns.Load(); n != 1 {
			t.Errorf("%d connections, want 1 (pooled)", n)
		}
	})
}

func TestLargeStreamingBodiesBothWays(t *testing.T) {
	eachServer(t, func(t *testing.T, kind serverKind) {
		ts, tr := startServer(t, kind, "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := sha256.New()
			n, _ := io.Copy(h, r.Body)
			w.Header().Set("X-Sum", fmt.Sprintf("%x", h.Sum(nil)))
			w.Header().Set("X-Len", fmt.Sprint(n))
			// Echo a body of the same size back, in pieces.
			chunk := bytes.Repeat([]byte("z"), 10_000)
			for left := n; left > 0; left -= int64(len(chunk)) {
				_, _ = w.Write(chunk[:min(int64(len(chunk)), left)])
			}
		}))
		payload := make([]byte, 3<<20+17)
		_, _ = rand.Read(payload)
		pr, pw := io.Pipe()
		go func() {
			for b := payload; len(b) > 0; {
				n := min(len(b), 7777)
				_, _ = pw.Write(b[:n])
				b = b[n:]
			}
			_ = pw.Close()
		}()
		req, _ := http.NewRequest("POST", ts.url("/"), pr)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		want := sha256.Sum256(payload)
		if resp.Header.Get("X-Sum") != fmt.Sprintf("%x", want) || resp.Header.Get("X-Len") != fmt.Sprint(len(payload)) || n != int64(len(payload)) {
			t.Fatalf("server saw %s bytes (%s), we read %d", resp.Header.Get("X-Len"), resp.Header.Get("X-Sum"), n)
		}
	})
}

func TestTrailersBothWays(t *testing.T) {
	eachServer(t, func(t *testing.T, kind serverKind) {
		ts, tr := startServer(t, kind, "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Trailer", "X-Echo")
			_, _ = w.Write([]byte("body"))
			w.Header().Set("X-Echo", r.Trailer.Get("X-Req-Trailer"))
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		}))
		for _, inline := range []bool{true, false} {
			var body io.Reader = strings.NewReader("payload")
			if !inline {
				body = io.NopCloser(body)
			}
			req, _ := http.NewRequest("POST", ts.url("/"), body)
			req.Trailer = http.Header{"X-Req-Trailer": {"from-client"}}
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || string(b) != "body" {
				t.Fatalf("inline=%v: %q %v", inline, b, err)
			}
			if resp.Trailer.Get("X-Echo") != "from-client" || resp.Trailer.Get("Grpc-Status") != "0" {
				t.Fatalf("inline=%v: trailers %v", inline, resp.Trailer)
			}
		}
	})
}

func TestCancellationReachesTheServer(t *testing.T) {
	eachServer(t, func(t *testing.T, kind serverKind) {
		// One channel per path, made before the server starts: the
		// handlers only read the map (a variable written per path raced
		// with a handler still reading it).
		paths := []string{"/before-headers", "/headers-first"}
		cancelled, closeOnce := map[string]chan struct{}{}, map[string]func(){}
		for _, p := range paths {
			ch := make(chan struct{})
			cancelled[p], closeOnce[p] = ch, sync.OnceFunc(func() { close(ch) })
		}
		ts, tr := startServer(t, kind, "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/headers-first" {
				w.WriteHeader(200)
				w.(http.Flusher).Flush()
			}
			<-r.Context().Done()
			if f := closeOnce[r.URL.Path]; f != nil {
				f()
			}
		}))
		for _, path := range paths {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			req, _ := http.NewRequestWithContext(ctx, "GET", ts.url(path), nil)
			start := time.Now()
			resp, err := tr.RoundTrip(req)
			if path == "/headers-first" {
				if err != nil {
					t.Fatal(err)
				}
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			cancel()
			if err == nil || time.Since(start) > 5*time.Second {
				t.Fatalf("%s: err %v after %v", path, err, time.Since(start))
			}
			if path == "/before-headers" && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("%s: %v, want the deadline", path, err)
			}
			select {
			case <-cancelled[path]:
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: the server never saw the cancellation", path)
			}
		}
	})
}

func TestClosingTheBodyEarlyResetsTheStream(t *testing.T) {
	eachServer(t, func(t *testing.T, kind serverKind) {
		writeErr := make(chan error, 1)
		ts, tr := startServer(t, kind, "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			chunk := make([]byte, 32<<10)
			for range 10_000 {
				if _, err := w.Write(chunk); err != nil {
					writeErr <- err
					return
				}
				w.(http.Flusher).Flush()
			}
			writeErr <- nil
		}))
		req, _ := http.NewRequest("GET", ts.url("/"), nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.ReadFull(resp.Body, make([]byte, 1000))
		resp.Body.Close()
		if _, err := resp.Body.Read(make([]byte, 1)); err == nil {
			t.Fatal("read after close succeeded")
		}
		select {
		case err := <-writeErr:
			if err == nil {
				t.Fatal("the server wrote everything")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the server kept writing")
		}
	})
}

func TestConcurrentRequestsShareOneConnection(t *testing.T) {
	eachServer(t, func(t *testing.T, kind serverKind) {
		ts, tr := startServer(t, kind, "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(w, r.Body)
		}))
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for i := range 64 {
			wg.Go(func() {
				msg := fmt.Sprintf("request %d", i)
				req, _ := http.NewRequest("POST", ts.url("/"), strings.NewReader(msg))
				resp, err := tr.RoundTrip(req)
				if err != nil {
					errs <- err
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(b) != msg {
					errs <- fmt.Errorf("%q %v", b, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if n := ts.conns.Load(); n != 1 {
			t.Errorf("%d connections, want 1", n)
		}
	})
}

func TestReconnectsAfterTheServerRestarts(t *testing.T) {
	eachServer(t, func(t *testing.T, kind serverKind) {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
		ts, tr := startServer(t, kind, "", h)
		get := func() error {
			req, _ := http.NewRequest("GET", ts.url("/"), nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			_, err = io.ReadAll(resp.Body)
			return err
		}
		if err := get(); err != nil {
			t.Fatal(err)
		}
		ts.close()
		startServer(t, kind, ts.addr, h)
		var err error
		for range 3 {
			if err = get(); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("after the restart: %v", err)
		}
	})
}

// rawServer accepts one QUIC connection speaking h3 and answers every
// request stream with the bytes answer returns.
func rawServer(t *testing.T, answer func() []byte) (*Transport, string) {
	t.Helper()
	cert, pool := testTLS(t)
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{NextProto}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		c, err := ln.Accept(context.Background())
		if err != nil {
			return
		}
		ctrl, _ := c.OpenUniStream()
		_, _ = ctrl.Write(appendFrameHeader(quicvarint.Append(nil, streamControl), frameSettings, 0))
		for {
			str, err := c.AcceptStream(context.Background())
			if err != nil {
				return
			}
			go func() {
				_, _ = str.Write(answer())
				_ = str.Close()
			}()
		}
	}()
	tr := &Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(func() { _ = tr.Close() })
	return tr, "https://" + ln.Addr().String() + "/"
}

func headersFrame(t *testing.T, fields ...string) []byte {
	e := getEncoder()
	defer putEncoder(e)
	for i := 0; i < len(fields); i += 2 {
		e.field(fields[i], fields[i+1])
	}
	return append(appendFrameHeader(nil, frameHeaders, uint64(len(e.w.b))), e.w.b...)
}

func TestMalformedResponsesAreErrors(t *testing.T) {
	data := func(s string) []byte { return append(appendFrameHeader(nil, frameData, uint64(len(s))), s...) }
	cases := []struct {
		name   string
		answer func(t *testing.T) []byte
		want   string
	}{
		{"data before headers", func(t *testing.T) []byte { return data("x") }, "DATA before HEADERS"},
		{"no status", func(t *testing.T) []byte { return headersFrame(t, "content-type", "text/plain") }, `status ""`},
		{"bad status", func(t *testing.T) []byte { return headersFrame(t, ":status", "2000") }, `status "2000"`},
		{"upper-case name", func(t *testing.T) []byte { return headersFrame(t, ":status", "200", "X-Bad", "1") }, "not lower-case"},
		{"pseudo after regular", func(t *testing.T) []byte { return headersFrame(t, "x-a", "1", ":status", "200") }, "after regular"},
		{"stream ends early", func(t *testing.T) []byte { return nil }, "ended before the response headers"},
		{"settings on a request stream", func(t *testing.T) []byte { return appendFrameHeader(nil, frameSettings, 0) }, "frame type 0x4"},
		{"body longer than content-length", func(t *testing.T) []byte {
			return append(headersFrame(t, ":status", "200", "content-length", "1"), data("toolong")...)
		}, "longer than content-length"},
		{"body shorter than content-length", func(t *testing.T) []byte {
			return append(headersFrame(t, ":status", "200", "content-length", "10"), data("short")...)
		}, "content-length 10"},
		{"frames after trailers", func(t *testing.T) []byte {
			b := append(headersFrame(t, ":status", "200"), headersFrame(t, "x-t", "1")...)
			return append(b, data("late")...)
		}, "after the trailers"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr, url := rawServer(t, func() []byte { return tc.answer(t) })
			req, _ := http.NewRequest("GET", url, nil)
			resp, err := tr.RoundTrip(req)
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestUnknownFramesAreSkipped(t *testing.T) {
	tr, url := rawServer(t, func() []byte {
		b := appendFrameHeader(nil, 0x21, 3) // a reserved frame type (0x1f*N+0x21)
		b = append(b, "abc"...)
		b = append(b, headersFrame(t, ":status", "200")...)
		b = appendFrameHeader(b, 0x21, 0)
		return append(appendFrameHeader(b, frameData, 2), "ok"...)
	})
	req, _ := http.NewRequest("GET", url, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(b) != "ok" {
		t.Fatalf("%q %v", b, err)
	}
}

func TestBadRequestsAreRefusedBeforeSending(t *testing.T) {
	tr := &Transport{}
	for _, tc := range []struct {
		name string
		req  *http.Request
		want string
	}{
		{"http scheme", mustReq("GET", "http://127.0.0.1:1/", nil), "https URL"},
		{"bad header value", func() *http.Request {
			r := mustReq("GET", "https://127.0.0.1:1/", nil)
			r.Header.Set("X-Bad", "a\r\nInjected: 1")
			return r
		}(), "invalid value"},
		{"extended connect", func() *http.Request {
			r := mustReq("CONNECT", "https://127.0.0.1:1/", nil)
			r.Header.Set(":protocol", "websocket")
			return r
		}(), "extended CONNECT"},
	} {
		_, err := tr.RoundTrip(tc.req)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func mustReq(method, url string, body io.Reader) *http.Request {
	r, err := http.NewRequest(method, url, body)
	if err != nil {
		panic(err)
	}
	return r
}

func TestUntrustedServerIsRefused(t *testing.T) {
	eachServer(t, func(t *testing.T, kind serverKind) {
		ts, _ := startServer(t, kind, "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		_, otherPool := testTLS(t)
		tr := &Transport{TLSClientConfig: &tls.Config{RootCAs: otherPool}}
		defer tr.Close()
		_, err := tr.RoundTrip(mustReq("GET", ts.url("/"), nil))
		if err == nil || !strings.Contains(err.Error(), "connecting to") {
			t.Fatalf("err = %v", err)
		}
	})
}

// A draining server sends GOAWAY; the client closes its idle connection at
// once (and a busy one after its last request), so Shutdown need not wait
// out its deadline.
func TestGoAwayClosesTheConnectionWhenIdle(t *testing.T) {
	eachServer(t, func(t *testing.T, kind serverKind) {
		release, entered := make(chan struct{}), make(chan struct{})
		ts, tr := startServer(t, kind, "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				close(entered)
				<-release
			}
			_, _ = w.Write([]byte("ok"))
		}))
		get := func(path string) error {
			resp, err := tr.RoundTrip(mustReq("GET", ts.url(path), nil))
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			_, err = io.ReadAll(resp.Body)
			return err
		}
		if err := get("/"); err != nil {
			t.Fatal(err)
		}
		slow := make(chan error, 1)
		go func() { slow <- get("/slow") }()
		<-entered // in flight when the server starts draining
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut := make(chan error, 1)
		start := time.Now()
		go func() { shut <- ts.srv.Shutdown(ctx) }()
		time.Sleep(200 * time.Millisecond) // the GOAWAY on its way (the test holds either way)
		close(release)                     // the request in flight finishes; then the client closes
		if err := <-slow; err != nil {
			t.Fatalf("the request in flight failed: %v", err)
		}
		if err := <-shut; err != nil || time.Since(start) > 5*time.Second {
			t.Fatalf("Shutdown: %v after %v", err, time.Since(start))
		}
	})
}
