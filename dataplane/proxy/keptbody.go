package proxy

import (
	"errors"
	"io"
	"sync"
	"sync/atomic"
)

var errBodyNotKept = errors.New("the request body was longer than the proxy keeps for a retry or a mirror")

// errBodyLeft ends a mirror's copy of a body the original stopped reading
// (its answer came before the whole body was sent).
var errBodyLeft = errors.New("the original request ended before its body was read")

// keptStream is a streaming request body kept as it is read, up to
// maxReplayBody, so that a retry can send it again from its start while the
// caller may still be sending the rest (Envoy keeps request bodies the same
// way, up to its per-request buffer limit). gRPC calls need it: an HTTP/2
// client sends no content-length, so their bodies stream.
//
// Each try reads through a cursor of its own. One cursor at a time pulls
// from the incoming body (a try given up may still be blocked in that
// read); the others read what is kept, or wait for the puller.
type keptStream struct {
	src io.Reader

	mu       sync.Mutex
	cond     sync.Cond
	kept     []byte // bytes [0, total) while !overflow
	total    int
	pulling  bool
	err      error // how the incoming body ended (io.EOF), once read
	overflow bool  // more than maxReplayBody came: nothing is kept
	left     bool  // the original is done: followers get no more
}

func newKeptStream(src io.Reader) *keptStream {
	k := &keptStream{src: src}
	k.cond.L = &k.mu
	return k
}

// replayable reports whether a new try can send the body from its start.
func (k *keptStream) replayable() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return !k.overflow
}

// leave ends the original's reading: followers waiting for more get
// errBodyLeft.
func (k *keptStream) leave() {
	k.mu.Lock()
	k.left = true
	k.cond.Broadcast()
	k.mu.Unlock()
}

// keptCursor is one try's reading of a keptStream, or a mirror's: a
// follower never pulls from the incoming body, it reads what the tries
// have pulled (so a mirror neither paces the original nor is the reader
// when the body grows past what is kept).
type keptCursor struct {
	k      *keptStream
	pos    int
	follow bool
	// cut is set once the cursor fell behind a body that outgrew what is
	// kept (errBodyNotKept): what a mirror's copy counts, whichever way its
	// transport reports the broken body.
	cut atomic.Bool
}

func (c *keptCursor) Read(p []byte) (int, error) {
	k := c.k
	k.mu.Lock()
	for {
		if c.pos < k.total {
			if k.overflow {
				k.mu.Unlock()
				c.cut.Store(true)
				return 0, errBodyNotKept
			}
			n := copy(p, k.kept[c.pos:k.total])
			c.pos += n
			k.mu.Unlock()
			return n, nil
		}
		if k.err != nil {
			err := k.err
			k.mu.Unlock()
			return 0, err
		}
		if c.follow && k.left {
			k.mu.Unlock()
			return 0, errBodyLeft
		}
		if !k.pulling && !c.follow {
			break
		}
		k.cond.Wait()
	}
	k.pulling = true
	k.mu.Unlock()
	n, err := k.src.Read(p) // unlocked: the caller may be slow to send
	k.mu.Lock()
	k.pulling = false
	if n > 0 {
		if !k.overflow {
			if len(k.kept)+n > maxReplayBody {
				k.overflow, k.kept = true, nil
			} else {
				k.kept = append(k.kept, p[:n]...)
			}
		}
		k.total += n
		c.pos += n
	}
	if err != nil {
		k.err = err
	}
	k.cond.Broadcast()
	k.mu.Unlock()
	return n, err
}

// Close leaves the incoming body open: a retry may still read it, and the
// server closes it.
func (c *keptCursor) Close() error { return nil }
