package gateway

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
)

// listings answers ListServices with what is registered, slowly, and
// counts the calls (the other methods are not called).
type listings struct {
	registryv1.RegistryServiceClient
	calls      atomic.Int32
	registered atomic.Bool
}

func (l *listings) ListServices(ctx context.Context, _ *registryv1.ListServicesRequest, _ ...grpc.CallOption) (*registryv1.ListServicesResponse, error) {
	l.calls.Add(1)
	time.Sleep(50 * time.Millisecond) // long enough for concurrent requests to find it under way
	resp := &registryv1.ListServicesResponse{Services: []*registryv1.Service{{Name: "web", Instances: []*registryv1.Instance{{Protocol: "http"}}}}}
	if l.registered.Load() {
		resp.Services = append(resp.Services, &registryv1.Service{Name: "orders", Instances: []*registryv1.Instance{{Protocol: "http"}, {Protocol: "grpc"}}})
	}
	return resp, nil
}

// A service registered after a listing is found by the next request, not
// after the listing expires; concurrent requests share listings.
func TestProtocolsListAgainOnAMiss(t *testing.T) {
	l := &listings{}
	p := RegistryProtocols(l)
	ctx := context.Background()
	if got, err := p.Protocol(ctx, "default", "web"); err != nil || got != "http" {
		t.Fatalf("web: %q %v", got, err)
	}
	if got, _ := p.Protocol(ctx, "default", "web"); got != "http" || l.calls.Load() != 1 {
		t.Errorf("a listed service asked again: %q after %d listings, want 1", got, l.calls.Load())
	}
	l.registered.Store(true)
	if got, _ := p.Protocol(ctx, "default", "orders"); got != "grpc" {
		t.Errorf("orders, registered since the listing: %q, want grpc", got)
	}

	// Fifty requests for a service the registry does not know: a few
	// listings, not fifty.
	before := l.calls.Load()
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got, err := p.Protocol(ctx, "default", "ghost"); err != nil || got != "" {
				t.Errorf("ghost: %q %v", got, err)
			}
		}()
	}
	wg.Wait()
	if n := l.calls.Load() - before; n > 10 { // two in the common case; a late waker may start one more
		t.Errorf("50 concurrent misses made %d listings", n)
	}
}
