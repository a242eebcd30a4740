package otlpexport

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const method = "/test.Collector/Export"

// conn answers Export with the next of errs (nil: accepted), counting the
// records of accepted calls (the test's encoding: a byte per record).
type conn struct {
	errs     []error
	accepted int
	during   func() // if set, runs during each call
}

func (c *conn) Invoke(_ context.Context, m string, args, _ any, _ ...grpc.CallOption) error {
	if m != method {
		return status.Errorf(codes.Unimplemented, "%s", m)
	}
	if c.during != nil {
		c.during()
	}
	var err error
	if len(c.errs) > 0 {
		err, c.errs = c.errs[0], c.errs[1:]
	}
	if err == nil {
		c.accepted += len(*args.(*[]byte))
	}
	return err
}

func (*conn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, status.Error(codes.Unimplemented, "no streams")
}

// Records of different sizes (an app's spans) are bounded in bytes too:
// the queue refuses what would pass its bound, a batch stops at its own
// (a record larger than that goes alone), and a batch put back after a
// failure keeps within the bound.
func TestExporterByteBounds(t *testing.T) {
	e := New("records", method, func(batch [][]byte) []byte {
		var b []byte
		for _, r := range batch {
			b = append(b, r...)
		}
		return b
	}, nil)
	e.LimitBytes(100, 40, func(r []byte) int { return len(r) })
	for _, n := range []int{30, 30, 35} {
		if !e.Offer(make([]byte, n)) {
			t.Fatalf("a record of %d refused with %d bytes waiting", n, e.bytes)
		}
	}
	if e.Offer(make([]byte, 10)) {
		t.Fatal("a record past 100 bytes queued")
	}
	c := &conn{errs: []error{nil, status.Error(codes.Unavailable, "down")}}
	e.conn = c
	ctx := context.Background()
	if err := e.Flush(ctx); err != nil || c.accepted != 30 {
		t.Fatalf("first batch: %d bytes, %v; want one record of 30 (two would pass 40)", c.accepted, err)
	}
	// The next batch (30) fails and goes back; meanwhile a record took
	// the room it left, so it does not fit and is dropped.
	c.during = func() {
		if !e.Offer(make([]byte, 40)) {
			t.Error("a record refused with room for it")
		}
	}
	if err := e.Flush(ctx); err == nil {
		t.Fatal("Flush over an unavailable collector did not fail")
	}
	c.during = nil
	if e.bytes != 75 || e.pending() != 2 {
		t.Errorf("%d bytes in %d records waiting after the put-back, want 75 in 2", e.bytes, e.pending())
	}
	if _, dropped, _ := e.Stats(); dropped != 2 {
		t.Errorf("dropped %d, want 2 (the refused record and the one put back past the bound)", dropped)
	}
	for e.pending() > 0 {
		if err := e.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// A record larger than a batch goes alone.
	if !e.Offer(make([]byte, 50)) {
		t.Fatal("a 50-byte record refused by an empty queue")
	}
	if err := e.Flush(ctx); err != nil || c.accepted != 30+35+40+50 || e.bytes != 0 {
		t.Errorf("the collector has %d bytes, %d waiting, %v", c.accepted, e.bytes, err)
	}
}

func TestExporterBoundsAndRetries(t *testing.T) {
	e := New("records", method, func(batch []int) []byte { return make([]byte, len(batch)) }, nil)
	for i := range MaxQueue + 10 {
		e.Record(i)
	}
	if _, dropped, _ := e.Stats(); dropped != 10 {
		t.Fatalf("dropped %d past the queue's bound, want 10", dropped)
	}
	// Unavailable: the batch stays for the next try; refused for good:
	// dropped and counted.
	c := &conn{errs: []error{status.Error(codes.Unavailable, "down"), nil, status.Error(codes.PermissionDenied, "not yours")}}
	e.conn = c
	ctx := context.Background()
	if err := e.Flush(ctx); err == nil {
		t.Fatal("Flush over an unavailable collector did not fail")
	}
	if e.pending() != MaxQueue {
		t.Fatalf("%d pending after a retriable failure, want all %d", e.pending(), MaxQueue)
	}
	if err := e.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if c.accepted != BatchSize {
		t.Fatalf("the collector got %d records, want a batch of %d", c.accepted, BatchSize)
	}
	_ = e.Flush(ctx)
	exported, dropped, failed := e.Stats()
	if exported != BatchSize || failed != BatchSize || dropped != 10 || e.pending() != MaxQueue-2*BatchSize {
		t.Errorf("exported %d, failed %d, dropped %d, pending %d", exported, failed, dropped, e.pending())
	}
}
