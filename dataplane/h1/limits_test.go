package h1_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/micromesh/micromesh/dataplane/h1"
	"github.com/micromesh/micromesh/internal/poll"
)

// roundTrip sends a GET and reads the answer; it reports the body or the
// error on done.
func roundTrip(ctx context.Context, tr *h1.Transport, url string, done chan<- string) {
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		done <- "error: " + err.Error()
		return
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	done <- string(b)
}

// With MaxConns connections busy, a request waits for one (no new
// connection is opened) and goes on it when it is free; past MaxPending
// waiting requests, RoundTrip fails at once; a waiting request that gives
// up leaves its place.
func TestTransportConnectionLimits(t *testing.T) {
	entered := make(chan struct{}, 8)
	release := make(chan struct{}, 8)
	addr, conns := serveStd(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
		_, _ = io.WriteString(w, "ok")
	}), 0)
	tr := &h1.Transport{MaxConns: 2, MaxPending: 1}
	defer tr.CloseIdleConnections()
	url := "http://" + addr + "/"
	done := make(chan string, 8)
	for range 2 {
		go roundTrip(context.Background(), tr, url, done)
		<-entered
	}

	// Both connections busy: the third waits, and nothing is dialled.
	go roundTrip(context.Background(), tr, url, done)
	waitUntil(t, "the third request waits", func() bool { return tr.Waiting() == 1 })
	select {
	case <-entered:
		t.Fatal("a third request reached the server past MaxConns 2")
	case got := <-done:
		t.Fatalf("the third request ended (%q) instead of waiting", got)
	case <-time.After(100 * time.Millisecond):
	}

	// One waits already: a fourth is refused at once.
	req, _ := http.NewRequest("GET", url, nil)
	if _, err := tr.RoundTrip(req); !errors.Is(err, h1.ErrPendingOverflow) {
		t.Fatalf("fourth request: %v, want ErrPendingOverflow", err)
	}

	// The first finishes: the waiting one goes on its connection.
	release <- struct{}{}
	if got := <-done; got != "ok" {
		t.Fatalf("first request: %q", got)
	}
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting request did not get the freed connection")
	}
	release <- struct{}{}
	release <- struct{}{}
	for range 2 {
		if got := <-done; got != "ok" {
			t.Fatalf("answer %q", got)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Fatalf("the server saw %d connections, want 2 (MaxConns)", n)
	}

	// A waiting request that gives up frees its place for another.
	for range 2 {
		go roundTrip(context.Background(), tr, url, done)
		<-entered
	}
	ctx, cancel := context.WithCancel(context.Background())
	go roundTrip(ctx, tr, url, done)
	waitUntil(t, "the request to cancel waits", func() bool { return tr.Waiting() == 1 })
	cancel()
	if got := <-done; got != "error: "+context.Canceled.Error() {
		t.Fatalf("cancelled waiting request: %q, want the cancellation", got)
	}
	if n := tr.Waiting(); n != 0 {
		t.Fatalf("%d requests still wait after the only waiting one gave up", n)
	}
	go roundTrip(context.Background(), tr, url, done)
	waitUntil(t, "a request after the cancelled one waits in its place", func() bool { return tr.Waiting() == 1 })
	for range 3 {
		release <- struct{}{}
	}
	for range 3 {
		if got := <-done; got != "ok" {
			t.Fatalf("answer %q", got)
		}
	}
}

// A connection that fails makes room too: the waiting request dials.
func TestTransportLimitFreedByAFailedConnection(t *testing.T) {
	entered := make(chan struct{}, 4)
	addr, _ := serveStd(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		if r.URL.Path == "/break" {
			panic(http.ErrAbortHandler) // the server drops the connection
		}
		_, _ = io.WriteString(w, "ok")
	}), 0)
	tr := &h1.Transport{MaxConns: 1}
	defer tr.CloseIdleConnections()
	done := make(chan string, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go roundTrip(ctx, tr, "http://"+addr+"/break", done)
	<-entered
	if got := <-done; got == "ok" {
		t.Fatal("the broken exchange answered")
	}
	go roundTrip(ctx, tr, "http://"+addr+"/", done)
	if got := <-done; got != "ok" {
		t.Fatalf("the request after the broken connection: %q, want it through on a new one", got)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, what, 10*time.Second, time.Millisecond, cond)
}
