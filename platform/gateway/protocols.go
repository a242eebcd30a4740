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

// protocolsTTL is how long a namespace's listing is used; a service not in
// it is looked up again after protocolsRetry (the gateway asks only for
// services its sidecar routes, so a miss is a service registered since
// the listing: a gRPC one would otherwise be forwarded as HTTP).
const (
	protocolsTTL   = 5 * time.Second
	protocolsRetry = 20 * time.Millisecond
)

// RegistryProtocols reads the protocols from the registry API (the
// instances' registrations), one listing per namespace every few seconds.
func RegistryProtocols(c registryv1.RegistryServiceClient) Protocols {
	return &registryProtocols{client: c, byNS: map[string]*nsProtocols{}}
}

type registryProtocols struct {
	client registryv1.RegistryServiceClient
	mu     sync.Mutex
	byNS   map[string]*nsProtocols
}

type nsProtocols struct {
	at     time.Time
	byName map[string]string
}

func (p *registryProtocols) Protocol(ctx context.Context, ns, name string) (string, error) {
	p.mu.Lock()
	cur := p.byNS[ns]
	p.mu.Unlock()
	if cur != nil {
		proto, ok := cur.byName[name]
		if age := time.Since(cur.at); age < protocolsTTL && (ok || age < protocolsRetry) {
			return proto, nil
		}
	}
	resp, err := p.client.ListServices(ctx, &registryv1.ListServicesRequest{Namespace: ns})
	if err != nil {
		return "", fmt.Errorf("listing the services of namespace %s: %w", ns, err)
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
	p.mu.Lock()
	p.byNS[ns] = next
	p.mu.Unlock()
	return next.byName[name], nil
}
