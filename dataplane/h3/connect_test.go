package h3

import (
	"bytes"
	"io"
	"net/http"
	"testing"
	"time"
)

// closeWriter is what a CONNECT handler ends its half of a tunnel with.
type closeWriter interface{ CloseWrite() error }

// connect opens a tunnel to authority through tr and returns the writer
// of its upstream half and the response.
func connect(t *testing.T, tr *Transport, addr, authority string) (*io.PipeWriter, *http.Response) {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodConnect, "https://"+addr, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = authority
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pw.Close(); _ = resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT answered %s", resp.Status)
	}
	return pw, resp
}

// A CONNECT tunnel carries bytes both ways as they are written, and each
// side's end (a FIN) reaches the other while it goes on: the peer's end
// first, then the server's.
func TestConnectTunnelsBytesAndHalfCloses(t *testing.T) {
	ts, tr := startServer(t, ours, "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect || r.Host != "db.default" || r.URL.Host != "db.default" || r.RequestURI != "db.default" {
			http.Error(w, "want CONNECT db.default, got "+r.Method+" "+r.Host+" "+r.RequestURI, http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		buf := make([]byte, 1024)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				_, _ = w.Write(bytes.ToUpper(buf[:n]))
				w.(http.Flusher).Flush()
			}
			if err != nil {
				break // io.EOF: the peer ended its half
			}
		}
		_, _ = w.Write([]byte("bye"))
		if err := w.(closeWriter).CloseWrite(); err != nil {
			t.Errorf("CloseWrite: %v", err)
		}
		if _, err := w.Write([]byte("late")); err == nil {
			t.Error("a write after CloseWrite succeeded")
		}
	}))
	defer tr.Close()
	up, resp := connect(t, tr, ts.addr, "db.default")
	for _, word := range []string{"hello", "again"} {
		if _, err := up.Write([]byte(word)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(word))
		if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != string(bytes.ToUpper([]byte(word))) {
			t.Fatalf("echo of %q: %q, %v", word, got, err)
		}
	}
	_ = up.Close() // our FIN
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "bye" {
		t.Fatalf("after our end: %q, %v; want \"bye\", then the server's end", rest, err)
	}
}

// The server may end its half first and still read the peer's bytes.
func TestConnectServerEndsFirst(t *testing.T) {
	got := make(chan string, 1)
	ts, tr := startServer(t, ours, "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("hi"))
		_ = w.(closeWriter).CloseWrite()
		b, _ := io.ReadAll(r.Body)
		got <- string(b)
	}))
	defer tr.Close()
	up, resp := connect(t, tr, ts.addr, "cache.default:6379")
	if b, err := io.ReadAll(resp.Body); err != nil || string(b) != "hi" {
		t.Fatalf("server's half: %q, %v", b, err)
	}
	if _, err := up.Write([]byte("after")); err != nil {
		t.Fatal(err)
	}
	_ = up.Close()
	select {
	case s := <-got:
		if s != "after" {
			t.Fatalf("the server read %q after its end, want \"after\"", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the server never saw our end")
	}
}
