package controlplane

import (
	"cmp"
	"slices"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/xds"
	"github.com/micromesh/micromesh/xds/policymeta"
)

// buildMesh turns a registry snapshot into the model xds translates:
// instances grouped into services, sorted, with the trust bundle. A
// service's traffic policy, its paths' included, comes from its instances'
// policy_* metadata (the first instance by ID that sets any; the registry
// API refused invalid ones) with an operator's policy over it, key by key
// (an operator policy that no longer fits what the instances registered —
// the API checked it against the instances of its day — is left out),
// else xds.DefaultPolicy; its split, from the registry's splits. The
// registry's external services come as they are.
func buildMesh(td string, roots []byte, snap registry.Snapshot) *xds.Mesh {
	m := &xds.Mesh{TrustDomain: td, Roots: roots}
	byKey := map[[2]string]int{}
	var registered []map[string]string // by service: the policy its instances registered
	for _, in := range snap.Instances {
		key := [2]string{in.Namespace, in.Service}
		i, ok := byKey[key]
		if !ok {
			i = len(m.Services)
			byKey[key] = i
			m.Services = append(m.Services, xds.Service{Name: in.Service, Namespace: in.Namespace, Protocol: in.Protocol})
			registered = append(registered, nil)
		}
		if registered[i] == nil && policymeta.Has(in.Metadata) { // the first by ID
			registered[i] = in.Metadata
		}
		m.Services[i].Endpoints = append(m.Services[i].Endpoints, xds.Endpoint{
			ID:       in.ID,
			Address:  in.Address,
			Port:     uint32(in.Port),
			QUICPort: uint32(in.QUICPort),
			Kind:     in.Kind,
			Version:  in.Version,
			Health:   string(in.Health),
			Region:   in.Region,
			Zone:     in.Zone,
			Weight:   in.Weight,
		})
	}
	operator := map[[2]string]map[string]string{}
	for _, p := range snap.Policies {
		operator[[2]string{p.Namespace, p.Service}] = p.Keys
	}
	for i := range m.Services {
		s := &m.Services[i]
		p, routes, ok, err := effectivePolicy(registered[i], operator[[2]string{s.Namespace, s.Name}])
		if err != nil {
			p, routes, ok, _ = effectivePolicy(registered[i], nil)
		}
		if ok {
			s.Policy, s.Routes = p, routes
		}
	}
	for _, sp := range snap.Splits {
		i, ok := byKey[[2]string{sp.Namespace, sp.Service}]
		if !ok {
			continue // a split of a service with no instance: nothing to call
		}
		for _, v := range sp.Versions {
			m.Services[i].Split = append(m.Services[i].Split, xds.VersionWeight{Version: v.Version, Weight: v.Weight})
		}
		m.Services[i].SplitHeader = sp.Header
	}
	slices.SortFunc(m.Services, func(a, b xds.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for i := range m.Services {
		slices.SortFunc(m.Services[i].Endpoints, func(a, b xds.Endpoint) int { return cmp.Compare(a.ID, b.ID) })
	}
	for _, e := range snap.Externals { // sorted by namespace, name
		x := xds.External{Name: e.Name, Namespace: e.Namespace, Host: e.Host, Port: uint32(e.Port), Protocol: e.Protocol}
		if e.CA != "" {
			x.CA = []byte(e.CA)
		}
		m.Externals = append(m.Externals, x)
	}
	return m
}
