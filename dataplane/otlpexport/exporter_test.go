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
}

func (c *conn) Invoke(_ context.Context, m string, args, _ any, _ ...grpc.CallOption) error {
	if m != method {
		return status.Errorf(codes.Unimplemented, "%s", m)
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
