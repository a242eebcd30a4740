package consul

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/controlplane/registry/registrytest"
	"github.com/micromesh/micromesh/internal/consultest"
)

func TestSuite(t *testing.T) {
	agent := consultest.Start(t)
	registrytest.Run(t, func(t *testing.T) registry.Registry {
		r, err := New(context.Background(), agent.Addr)
		if err != nil {
			t.Fatal(err)
		}
		return r
	})
}

func TestUnreachableAtStartNamesTheAddress(t *testing.T) {
	_, err := New(context.Background(), "127.0.0.1:1")
	if !errors.Is(err, registry.ErrUnavailable) || !strings.Contains(err.Error(), "127.0.0.1:1") || !strings.Contains(err.Error(), "consul agent -dev") {
		t.Fatalf("error = %v; want ErrUnavailable naming the address and how to start Consul", err)
	}
}

// The watch keeps its last snapshot while the agent is away and picks up
// what is registered once it is back.
func TestWatchSurvivesAgentRestart(t *testing.T) {
	agent := consultest.Start(t)
	ctx := consultest.Ctx(t)
	r, err := New(ctx, agent.Addr)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := r.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	web := registry.Instance{ID: "web-1", Service: "web", Address: "127.0.0.1", Port: 8443}
	if err := r.Register(ctx, web); err != nil {
		t.Fatal(err)
	}
	waitInstances(t, ch, 1, time.Second)

	if st := r.State(); st.Backend != "consul" || st.Address != agent.Addr || st.Unreachable {
		t.Errorf("state while Consul answers: %+v", st)
	}

	agent.Stop()
	select {
	case s := <-ch:
		t.Fatalf("the watch reported %d instances while Consul was down; it must keep the last state", len(s.Instances))
	case <-time.After(500 * time.Millisecond):
	}
	// The registry says so (what meshctl check shows).
	for deadline := time.Now().Add(10 * time.Second); !r.State().Unreachable; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the registry's state does not say Consul is unreachable")
		}
	}
	if st := r.State(); st.Since.IsZero() || st.Error == "" {
		t.Errorf("state while Consul is down: %+v; want since when and the error", st)
	}
	agent.Restart() // a dev agent comes back empty; the instance registers again
	if err := r.Register(ctx, web); err != nil {
		t.Fatal(err)
	}
	db := registry.Instance{ID: "db-1", Service: "db", Address: "127.0.0.1", Port: 5432}
	if err := r.Register(ctx, db); err != nil {
		t.Fatal(err)
	}
	waitInstances(t, ch, 2, 10*time.Second) // reconnect backoff is at most 5s
	if st := r.State(); st.Unreachable {
		t.Errorf("state after Consul came back: %+v", st)
	}
}

func waitInstances(t *testing.T, ch <-chan registry.Snapshot, n int, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case s := <-ch:
			if len(s.Instances) == n {
				return
			}
		case <-deadline:
			t.Fatalf("watch did not show %d instances within %v", n, within)
		}
	}
}
