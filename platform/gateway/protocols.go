package gateway

import (
	"context"
	"fmt"
	"sync"
	"time"

	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
	"github.com/micromesh/micromesh/xds"
)

// Protocols tells what a service speaks: xds.ProtocolGRPC,
// xds.ProtocolHTTP, or "" when no instance says.
type Protocols interface {
	Protocol(ctx context.Context, ns, name string) (string, error)
}

// protocolsTTL is how long a namespace's listing is used. A service not
// in it is listed again at once (the gateway asks only for services its
// sidecar routes, so a miss is a service registered since the listing: a
// gRPC one would otherwise be forwarded as HTTP); listings of one
// namespace are never two at a time, and a request joins the one under way.
const protocolsTTL = 5 * time.Second

// RegistryProtocols reads the protocols from the registry API (the
// instances' registrations), one listing per namespace every few seconds.
func RegistryProtocols(c registryv1.RegistryServiceClient) Protocols {
	return &registryProtocols{client: c, byNS: map[string]*nsProtocols{}, listing: map[string]chan struct{}{}}
}

type registryProtocols struct {
	client  registryv1.RegistryServiceClient
	mu      sync.Mutex
	byNS    map[string]*nsProtocols
	listing map[string]chan struct{} // closed when the namespace's listing under way ends
}

type nsProtocols struct {
	at     time.Time
	byName map[string]string
}

func (p *registryProtocols) Protocol(ctx context.Context, ns, name string) (string, error) {
	joined := false
	for {
		p.mu.Lock()
		if cur := p.byNS[ns]; cur != nil && time.Since(cur.at) < protocolsTTL {
			if proto, ok := cur.byName[name]; ok {
				p.mu.Unlock()
				return proto, nil
			}
		}
		if ch := p.listing[ns]; ch != nil && !joined {
			// A listing is under way: it may have begun before the
			// service registered, so a miss after it lists once more.
			p.mu.Unlock()
			joined = true
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		if ch := p.listing[ns]; ch != nil {
			p.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return "", ctx.Err()
			}
			p.mu.Lock()
			proto := ""
			if cur := p.byNS[ns]; cur != nil {
				proto = cur.byName[name]
			}
			p.mu.Unlock()
			return proto, nil
		}
		ch := make(chan struct{})
		p.listing[ns] = ch
		p.mu.Unlock()
		next, err := p.list(ctx, ns)
		p.mu.Lock()
		if err == nil {
			p.byNS[ns] = next
		}
		delete(p.listing, ns)
		close(ch)
		p.mu.Unlock()
		if err != nil {
			return "", err
		}
		return next.byName[name], nil
	}
}

// list lists namespace ns's services with their protocols.
func (p *registryProtocols) list(ctx context.Context, ns string) (*nsProtocols, error) {
	resp, err := p.client.ListServices(ctx, &registryv1.ListServicesRequest{Namespace: ns})
	if err != nil {
		return nil, fmt.Errorf("listing the services of namespace %s: %w", ns, err)
	}
	next := &nsProtocols{at: time.Now(), byName: map[string]string{}}
	for _, s := range resp.GetServices() {
		proto := ""
		for _, in := range s.GetInstances() {
			if proto = in.GetProtocol(); proto == xds.ProtocolGRPC {
				break
			}
		}
		next.byName[s.GetName()] = proto
	}
	return next, nil
}
