package proxy

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// An up-front body's buffer goes back to the pool only when forward and
// every transport that got a reader are done with it, however often a
// transport closes its reader; a reader still reads the request's bytes
// after forward has let go.
func TestUpFrontBodyOutlivesForwardUntilEveryReaderCloses(t *testing.T) {
	payload := strings.Repeat("x", 1000) + "end"
	r, _ := http.NewRequest("POST", "http://b/", strings.NewReader(payload))
	b, err := newReplayable(r, false, false)
	if err != nil || b.buf == nil {
		t.Fatalf("a small body is read up front: %v", err)
	}
	first, second := b.reader(), b.reader() // a try, and GetBody's resend
	if got := b.refs.Load(); got != 3 {
		t.Fatalf("refs = %d, want forward + 2 readers", got)
	}
	b.release() // forward returned
	_ = first.Close()
	_ = first.Close() // a transport closing twice
	if got := b.refs.Load(); got != 1 {
		t.Fatalf("refs = %d after forward and one reader (closed twice) let go, want 1", got)
	}
	if got, _ := io.ReadAll(second); string(got) != payload {
		t.Fatalf("the open reader read %d bytes, not the request", len(got))
	}
	_ = second.Close()
	if got := b.refs.Load(); got != 0 {
		t.Fatalf("refs = %d, want 0", got)
	}
}

func TestBodiesPastTheInlineLimitStream(t *testing.T) {
	big := bytes.Repeat([]byte("y"), maxInlineBody+1)
	r, _ := http.NewRequest("POST", "http://b/", bytes.NewReader(big))
	b, err := newReplayable(r, false, false)
	if err != nil || b.buf != nil || b.stream == nil {
		t.Fatalf("a body past %d bytes without retries streams: buf %d, err %v", maxInlineBody, len(b.buf), err)
	}
	b.release() // nothing pooled: a no-op
	r, _ = http.NewRequest("POST", "http://b/", bytes.NewReader(big))
	if b, err = newReplayable(r, true, false); err != nil || len(b.buf) != len(big) || cap(*b.pooled) != maxReplayBody {
		t.Fatalf("with retries it is kept, in a 64 KiB buffer: %v", err)
	}
	b.release()
}
