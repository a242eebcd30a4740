package service_test

import (
	"testing"

	"google.golang.org/grpc"

	"github.com/micromesh/micromesh/internal/envconfig"
	"github.com/micromesh/micromesh/service"
)

func TestDialOnceDialsOnceAndRemembersTheOutcome(t *testing.T) {
	calls := 0
	newClient := func(grpc.ClientConnInterface) *int { calls++; return &calls }

	t.Setenv(envconfig.Proxy, "")
	failing := service.DialOnce("store.micromesh", newClient)
	if _, err := failing(); err == nil {
		t.Fatal("no $MESH_PROXY: want an error")
	}
	t.Setenv(envconfig.Proxy, "127.0.0.1:1")
	if _, err := failing(); err == nil {
		t.Fatal("the first outcome is kept: want the same error")
	}

	get := service.DialOnce("store.micromesh", newClient)
	a, err := get()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := get()
	if a != b || calls != 1 {
		t.Fatalf("want one client made once; got %d calls, same client %v", calls, a == b)
	}
}
