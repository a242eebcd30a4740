package events_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/internal/meshtest"
	client "github.com/micromesh/micromesh/service/events"
)

// through connects to the primitive through a sidecar's outbound.
func through(t *testing.T, outbound string) *client.Client {
	return client.NewClient(meshtest.DialThrough(t, outbound, client.ServiceName))
}

func next(t *testing.T, c *client.Consumer) *client.Event {
	t.Helper()
	type res struct {
		ev  *client.Event
		err error
	}
	ch := make(chan res, 1)
	go func() {
		ev, err := c.Next()
		ch <- res{ev, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10 s")
		return nil
	}
}

func TestEventsOnTheMesh(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	cp.StartPlatform()
	a := through(t, cp.StartSidecar("team-a", "web").Info.Outbound)
	b := through(t, cp.StartSidecar("team-b", "web").Info.Outbound)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	var err error
	for range 200 { // until the events service is in the caller's config
		if _, err = a.Read(ctx, "orders"); err == nil {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		seq, err := a.Publish(ctx, "orders", []byte(fmt.Sprint("order ", i)), client.Metadata(map[string]string{"n": fmt.Sprint(i)}))
		if err != nil || seq != uint64(i) {
			t.Fatalf("publish %d: seq %d, %v", i, seq, err)
		}
	}

	// Read: by sequence, without consuming.
	evs, err := a.Read(ctx, "orders", client.Offset(2), client.Limit(2))
	if err != nil || len(evs) != 2 || evs[0].Sequence != 2 || string(evs[1].Payload) != "order 3" || evs[1].Metadata["n"] != "3" ||
		evs[0].Publisher != "spiffe://micromesh.local/ns/team-a/svc/web" || evs[0].Time.IsZero() {
		t.Fatalf("read = %+v, %v", evs, err)
	}
	if _, err := a.Read(ctx, "orders", client.Offset(7)); status.Code(err) != codes.OutOfRange {
		t.Errorf("offset beyond the stream: %v", err)
	}

	// A group consumes all, in order; a later event too.
	g, err := a.Consume(ctx, "orders", client.Group("billing"), client.AutoAck())
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		if ev := next(t, g); ev.Sequence != uint64(i) || ev.Deliveries != 1 {
			t.Fatalf("group event %d: %+v", i, ev)
		}
	}
	if _, err := a.Publish(ctx, "orders", []byte("order 6")); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, g); ev.Sequence != 6 {
		t.Fatalf("late event: %+v", ev)
	}
	_ = g.Close()

	// A group keeps its position: acked events do not come again.
	m1, err := a.Consume(ctx, "orders", client.Group("audit"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		ev := next(t, m1)
		if err := m1.Ack(ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := m1.Close(); err != nil { // returns once the acks are in
		t.Fatal(err)
	}
	m2, err := a.Consume(ctx, "orders", client.Group("audit"), client.AckWait(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, m2); ev.Sequence < 4 {
		t.Fatalf("the group started again at %d after acking 1-3", ev.Sequence)
	}
	_ = m2.Close()

	// From an offset, with a new group.
	off, err := a.Consume(ctx, "orders", client.Group("late"), client.Offset(5), client.AutoAck())
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, off); ev.Sequence != 5 {
		t.Fatalf("offset 5 started at %d", ev.Sequence)
	}
	_ = off.Close()
	if _, err := a.Consume(ctx, "orders", client.Group("late2"), client.Offset(99)); status.Code(err) != codes.OutOfRange {
		t.Errorf("consume beyond the stream: %v", err)
	}

	// Never acked: redelivered after the ack wait, then dead-lettered.
	if _, err := a.Publish(ctx, "jobs", []byte("poison")); err != nil {
		t.Fatal(err)
	}
	w, err := a.Consume(ctx, "jobs", client.Group("workers"), client.AckWait(300*time.Millisecond), client.RetryLimit(1))
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, w); ev.Deliveries != 1 {
		t.Fatalf("first delivery: %+v", ev)
	}
	if ev := next(t, w); ev.Deliveries != 2 {
		t.Fatalf("redelivery: %+v", ev)
	}
	var dead []*client.Event
	for range 100 {
		if dead, err = a.Read(ctx, "jobs.dead"); err == nil && len(dead) == 1 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(dead) != 1 || string(dead[0].Payload) != "poison" || dead[0].Metadata["dead_sequence"] != "1" || dead[0].Metadata["dead_topic"] != "jobs" {
		t.Fatalf("dead letters: %+v %v", dead, err)
	}
	_ = w.Close()

	// Nack: again at once; ack: never again.
	if _, err := a.Publish(ctx, "retry", []byte("x")); err != nil {
		t.Fatal(err)
	}
	r, err := a.Consume(ctx, "retry", client.Group("r"))
	if err != nil {
		t.Fatal(err)
	}
	ev := next(t, r)
	if err := r.Nack(ev, 0); err != nil {
		t.Fatal(err)
	}
	ev = next(t, r)
	if ev.Deliveries != 2 {
		t.Fatalf("after a nack: %+v", ev)
	}
	_ = r.Ack(ev)
	_ = r.Close()

	// Namespaces are apart.
	if _, err := b.Read(ctx, "orders", client.Namespace("team-a")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("b reading a's events: %v", err)
	}
	if evs, err := b.Read(ctx, "orders"); err != nil || len(evs) != 0 {
		t.Errorf("b's own orders: %v %v", evs, err)
	}
	// Bad input.
	for name, f := range map[string]func() error{
		"bad topic":        func() error { _, err := a.Publish(ctx, "a b", nil); return err },
		"big payload":      func() error { _, err := a.Publish(ctx, "t", make([]byte, 1<<20+1)); return err },
		"bad group":        func() error { _, err := a.Consume(ctx, "t", client.Group("a.b")); return err },
		"ack wait too low": func() error { _, err := a.Consume(ctx, "t", client.AckWait(time.Millisecond)); return err },
		"read limit":       func() error { _, err := a.Read(ctx, "t", client.Limit(5000)); return err },
	} {
		if err := f(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v", name, err)
		}
	}
}
