package broker_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/internal/meshtest"
	client "github.com/micromesh/micromesh/service/broker"
)

// through connects to the primitive through a sidecar's outbound.
func through(t *testing.T, outbound string) *client.Client {
	return client.NewClient(meshtest.DialThrough(t, outbound, client.ServiceName))
}

// subscribe retries while the broker is not yet in the caller's config.
func subscribe(ctx context.Context, t *testing.T, c *client.Client, topic string, opts ...client.Option) *client.Subscription {
	t.Helper()
	var err error
	for range 200 {
		var sub *client.Subscription
		if sub, err = c.Subscribe(ctx, topic, opts...); err == nil {
			return sub
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatal(err)
	return nil
}

func TestBrokerOnTheMesh(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	cp.StartPlatform()
	a := through(t, cp.StartSidecar("team-a", "web").Info.Outbound)
	b := through(t, cp.StartSidecar("team-b", "web").Info.Outbound)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// A plain subscriber gets every message, with its metadata and
	// publisher; b's namespace hears nothing of a's topic.
	all := subscribe(ctx, t, a, "orders.created")
	other := subscribe(ctx, t, b, "orders.created")

	// A queue group of three: each message reaches exactly one member.
	const n = 300
	var members []*client.Subscription
	for range 3 {
		members = append(members, subscribe(ctx, t, a, "orders.created", client.Queue("billing")))
	}
	got := make(chan string, 4*n)
	var wg sync.WaitGroup
	perMember := make([]int, 3)
	for i, m := range members {
		wg.Go(func() {
			for {
				msg, err := m.Next()
				if err != nil {
					return
				}
				perMember[i]++
				got <- string(msg.Body)
			}
		})
	}
	for i := range n {
		if err := a.Publish(ctx, "orders.created", []byte(fmt.Sprint(i)), client.Metadata(map[string]string{"seq": fmt.Sprint(i)})); err != nil {
			t.Fatal(err)
		}
	}
	first, err := all.Next()
	if err != nil || string(first.Body) != "0" || first.Metadata["seq"] != "0" || first.Publisher != "spiffe://micromesh.local/ns/team-a/svc/web" || first.Time.IsZero() {
		t.Fatalf("plain subscriber: %+v %v", first, err)
	}
	for i := 1; i < n; i++ {
		msg, err := all.Next()
		if err != nil || string(msg.Body) != fmt.Sprint(i) {
			t.Fatalf("plain subscriber, message %d: %+v %v", i, msg, err)
		}
	}
	seen := map[string]int{}
	deadline := time.After(20 * time.Second)
	for len(seen) < n {
		select {
		case body := <-got:
			seen[body]++
		case <-deadline:
			t.Fatalf("queue group received %d of %d distinct messages", len(seen), n)
		}
	}
	time.Sleep(200 * time.Millisecond) // any duplicate would have arrived
	for body, c := range seen {
		if c != 1 {
			t.Errorf("message %s delivered %d times in the queue group", body, c)
		}
	}
	if extra := len(got); extra != 0 {
		t.Errorf("%d extra deliveries in the queue group", extra)
	}
	t.Logf("queue group split: %v", perMember)

	// Namespace b heard none of it: its subscriber, there all along, gets
	// b's own message first.
	if err := b.Publish(ctx, "orders.created", []byte("for b")); err != nil {
		t.Fatal(err)
	}
	msg, err := other.Next()
	if err != nil || string(msg.Body) != "for b" {
		t.Fatalf("b's subscriber got %+v %v; want only b's own message", msg, err)
	}

	// A workload cannot name another namespace; bad topics are refused.
	if err := a.Publish(ctx, "x", nil, client.Namespace("team-b")); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a publishing in b: %v", err)
	}
	for _, topic := range []string{"", "a..b", ".a", "with space", "wild.*", strings.Repeat("t", 256)} {
		if err := a.Publish(ctx, topic, nil); status.Code(err) != codes.InvalidArgument {
			t.Errorf("topic %q: %v", topic, err)
		}
	}
	if err := a.Publish(ctx, "big", make([]byte, 1<<20+1)); status.Code(err) != codes.InvalidArgument {
		t.Errorf("oversized message: %v", err)
	}
	if _, err := a.Subscribe(ctx, "x", client.Queue("bad queue")); status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad queue: %v", err)
	}
	cancel()
	wg.Wait()
}
