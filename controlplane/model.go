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
// API refused invalid ones), else xds.DefaultPolicy; its split, from the
// registry's splits.
func buildMesh(td string, roots []byte, snap registry.Snapshot) *xds.Mesh {
	m := &xds.Mesh{TrustDomain: td, Roots: roots}
	byKey := map[[2]string]int{}
	for _, in := range snap.Instances {
		key := [2]string{in.Namespace, in.Service}
		i, ok := byKey[key]
		if !ok {
			i = len(m.Services)
			byKey[key] = i
			m.Services = append(m.Services, xds.Service{Name: in.Service, Namespace: in.Namespace, Protocol: in.Protocol})
		}
		if m.Services[i].Policy == (xds.Policy{}) && policymeta.Has(in.Metadata) {
			if p, routes, err := xds.PolicyFromMetadata(in.Metadata); err == nil {
				m.Services[i].Policy, m.Services[i].Routes = p, routes
			}
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
	return m
}
