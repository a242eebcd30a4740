package tap

import (
	"context"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/micromesh/micromesh/identity"
	tapv1 "github.com/micromesh/micromesh/proto/tap/v1"
)

// watchBuffer is how many requests a watcher may fall behind by before
// the next are dropped (and counted in the one after).
const watchBuffer = 1024

// Hub hands each service's requests to its watchers, and tells the
// control plane which services have watchers: their proxies send their
// requests (Tapped) for as long as someone watches, and no longer.
type Hub struct {
	mu       sync.Mutex
	watchers map[string]map[*watcher]struct{} // by "name.namespace"
	changed  chan struct{}                    // a service gained its first watcher or lost its last
}

// NewHub returns a hub with no watchers.
func NewHub() *Hub {
	return &Hub{watchers: map[string]map[*watcher]struct{}{}, changed: make(chan struct{}, 1)}
}

// Changed is signalled when the set of watched services changes (once for
// any number of changes not yet read).
func (h *Hub) Changed() <-chan struct{} { return h.changed }

// Tapped reports whether a service ("name.namespace") has watchers.
func (h *Hub) Tapped(service string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.watchers[service]) > 0
}

// signal notes a change of the watched services; under h.mu.
func (h *Hub) signal() {
	select {
	case h.changed <- struct{}{}:
	default: // one is pending: the reader reads the latest
	}
}

type watcher struct {
	ch     chan *tapv1.WatchResponse
	missed uint64 // under Hub.mu
}

func (h *Hub) publish(service string, rs []*tapv1.WatchResponse) {
	if len(rs) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.watchers[service] {
		for _, r := range rs {
			if w.missed > 0 {
				r = cloneWithMissed(r, w.missed)
			}
			select {
			case w.ch <- r:
				w.missed = 0
			default:
				w.missed++
			}
		}
	}
}

// cloneWithMissed is r telling its watcher how many requests it missed
// before it (r is shared by every watcher of the service).
func cloneWithMissed(r *tapv1.WatchResponse, missed uint64) *tapv1.WatchResponse {
	c := proto.Clone(r).(*tapv1.WatchResponse)
	c.Missed = missed
	return c
}

func (h *Hub) subscribe(service string) (*watcher, func()) {
	w := &watcher{ch: make(chan *tapv1.WatchResponse, watchBuffer)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.watchers[service] == nil {
		h.watchers[service] = map[*watcher]struct{}{}
		h.signal()
	}
	h.watchers[service][w] = struct{}{}
	return w, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.watchers[service], w)
		if len(h.watchers[service]) == 0 {
			delete(h.watchers, service)
			h.signal()
		}
	}
}

// API is micromesh.tap.v1.TapService.
type API struct {
	tapv1.UnimplementedTapServiceServer
	hub    *Hub
	caller Caller
}

// NewAPI returns the tap API over hub.
func NewAPI(hub *Hub, caller Caller) *API { return &API{hub: hub, caller: caller} }

// Watch streams a service's requests until the caller ends the call.
func (a *API) Watch(req *tapv1.WatchRequest, stream tapv1.TapService_WatchServer) error {
	ctx := stream.Context()
	id, err := a.caller(ctx)
	if err != nil {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	if id.Namespace != identity.SystemNamespace {
		return status.Errorf(codes.PermissionDenied, "the tap API is for identities of namespace %s; %s is not one", identity.SystemNamespace, id)
	}
	ns := req.GetNamespace()
	if ns == "" {
		ns = identity.DefaultNamespace
	}
	if err := identity.ValidateName("namespace", ns); err != nil {
		return status.Errorf(codes.InvalidArgument, "namespace %q: %v", ns, err)
	}
	if err := identity.ValidateName("service name", req.GetService()); err != nil {
		return status.Errorf(codes.InvalidArgument, "service %q: %v", req.GetService(), err)
	}
	w, stop := a.hub.subscribe(req.GetService() + "." + ns)
	defer stop()
	// The headers go out at once: the caller knows it is watching before
	// the first request arrives (the remote proxy passes them on:
	// TestRemoteEnvironment).
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	return watch(ctx, w, stream.Send)
}

func watch(ctx context.Context, w *watcher, send func(*tapv1.WatchResponse) error) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-w.ch:
			if err := send(r); err != nil {
				return err
			}
		}
	}
}
