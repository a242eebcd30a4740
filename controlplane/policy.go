package controlplane

import (
	"maps"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/xds"
	"github.com/micromesh/micromesh/xds/policymeta"
)

// registeredPolicy is the policy metadata a service's instances registered:
// the first instance by ID that sets any key (instances of one version
// should carry one policy); nil for none.
func registeredPolicy(snap registry.Snapshot, ns, service string) map[string]string {
	for _, in := range snap.Instances { // sorted by namespace, service, ID
		if in.Namespace == ns && in.Service == service && policymeta.Has(in.Metadata) {
			return in.Metadata
		}
	}
	return nil
}

// effectivePolicy is the traffic policy the control plane applies to a
// service whose instances registered md, with an operator's keys op over
// it, key by key (either may be nil). ok is false when neither sets a key.
func effectivePolicy(md, op map[string]string) (p xds.Policy, routes []xds.RoutePolicy, ok bool, err error) {
	flags := policymeta.Flags(md)
	if len(op) > 0 {
		if flags == nil {
			flags = map[string]string{}
		}
		maps.Copy(flags, op)
	}
	if len(flags) == 0 {
		return xds.Policy{}, nil, false, nil
	}
	p, routes, err = xds.PolicyFromMetadata(policymeta.Metadata(flags))
	return p, routes, err == nil, err
}
