package xds

import (
	"cmp"
	"slices"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// endpoints is the EDS resource, named name, of service s as proxy p sees it: QUIC ports
// when p reaches s over QUIC, TCP ports otherwise; grouped by locality, each
// locality weighted by the sum of its endpoints' weights (gRPC ignores
// localities without a weight).
func (b *builder) endpoints(s *Service, name string) *endpoint.ClusterLoadAssignment {
	quic := transportFor(b.proxy, s) == transportQUIC
	type key struct{ region, zone string }
	groups := map[key][]Endpoint{}
	for _, e := range s.Endpoints {
		k := key{e.Region, e.Zone}
		groups[k] = append(groups[k], e)
	}
	keys := make([]key, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b key) int { return cmp.Or(cmp.Compare(a.region, b.region), cmp.Compare(a.zone, b.zone)) })

	cla := &endpoint.ClusterLoadAssignment{ClusterName: name}
	for _, k := range keys {
		loc := &endpoint.LocalityLbEndpoints{Locality: &core.Locality{Region: k.region, Zone: k.zone}}
		var total uint32
		for _, e := range groups[k] {
			port := e.Port
			if quic {
				port = e.QUICPort
			}
			w := max(e.Weight, 1)
			total += w
			loc.LbEndpoints = append(loc.LbEndpoints, &endpoint.LbEndpoint{
				HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{
					Address: socketAddress(e.Address, port, quic),
				}},
				HealthStatus:        healthStatus(e.Health),
				LoadBalancingWeight: u32(w),
			})
		}
		loc.LoadBalancingWeight = u32(total)
		cla.Endpoints = append(cla.Endpoints, loc)
	}
	return cla
}

func healthStatus(h string) core.HealthStatus {
	switch h {
	case HealthPassing:
		return core.HealthStatus_HEALTHY
	case HealthWarning:
		return core.HealthStatus_DEGRADED
	case HealthCritical:
		return core.HealthStatus_UNHEALTHY
	default:
		return core.HealthStatus_UNKNOWN
	}
}

// staticAssignment is a one-endpoint assignment for a STATIC cluster.
func staticAssignment(name, addr string, port uint32) *endpoint.ClusterLoadAssignment {
	return &endpoint.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints: []*endpoint.LocalityLbEndpoints{{LbEndpoints: []*endpoint.LbEndpoint{{
			HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: socketAddress(addr, port, false)}},
		}}}},
	}
}
