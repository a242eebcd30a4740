package h1_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/micromesh/micromesh/dataplane/h1"
)

// The server closes a connection whose request head stalls past the
// header timeout, and one idle past the idle timeout; a body that comes
// after both has no deadline on it.
func TestServerTimeouts(t *testing.T) {
	addr, _, _ := serveH1(t, http.HandlerFunc(echo), func(s *h1.Server) {
		s.ReadHeaderTimeout = 200 * time.Millisecond
		s.IdleTimeout = time.Second
	})
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		return c
	}
	closedWithin := func(c net.Conn, what string, max time.Duration) {
		t.Helper()
		start := time.Now()
		b, err := io.ReadAll(c)
		if took := time.Since(start); err != nil || took > max {
			t.Errorf("%s: read %q, %v after %v; want the server to close within %v", what, b, err, took, max)
		}
	}

	c := dial()
	_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n") // and nothing more
	closedWithin(c, "stalled head", 2*time.Second)

	c = dial()
	closedWithin(c, "idle connection", 3*time.Second)

	// A whole head, then the body 1.2 s later (past both timeouts).
	c = dial()
	_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n")
	time.Sleep(1200 * time.Millisecond)
	_, _ = io.WriteString(c, "late")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("slow body: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "late" {
		t.Fatalf("slow body: %d %q", resp.StatusCode, b)
	}

	// A request whose head and body came in one piece, then a second one
	// on the same connection after a pause shorter than the idle timeout.
	c = dial()
	br := bufio.NewReader(c)
	for i := range 2 {
		_, _ = io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d on a kept connection: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != "hi" {
			t.Fatalf("request %d: %q", i, b)
		}
		time.Sleep(150 * time.Millisecond)
	}
}
