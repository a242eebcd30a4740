package xds

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// Resources are one proxy's resources, each list sorted by name.
type Resources struct {
	Listeners []*listener.Listener
	Routes    []*route.RouteConfiguration
	Clusters  []*cluster.Cluster
	Endpoints []*endpoint.ClusterLoadAssignment
	Secrets   []*tlsv3.Secret
}

// builder holds one Build's inputs.
type builder struct {
	mesh  *Mesh
	proxy Proxy
}

// ErrInvalidProxy is wrapped by errors about a proxy's own description.
var ErrInvalidProxy = errors.New("invalid proxy")

// Build returns the resources of proxy p in mesh m. p may call the services
// of its own namespace and the platform services (namespace micromesh).
func Build(m *Mesh, p Proxy) (*Resources, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	b := &builder{mesh: m, proxy: p}
	for _, s := range m.Services {
		if s.Policy == (Policy{}) {
			return b.build(withDefaults(m)), nil
		}
	}
	return b.build(m), nil
}

// withDefaults returns a copy of m whose services without a policy have the default.
func withDefaults(m *Mesh) *Mesh {
	c := *m
	c.Services = slices.Clone(m.Services)
	for i := range c.Services {
		if c.Services[i].Policy == (Policy{}) {
			c.Services[i].Policy = DefaultPolicy
		}
	}
	return &c
}

func (p Proxy) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w %s: %s", ErrInvalidProxy, p.NodeID, fmt.Sprintf(format, args...))
	}
	switch {
	case p.Namespace == "" || p.Service == "":
		return bad("namespace and service are required")
	case p.Kind != KindBuiltin && p.Kind != KindEnvoy && p.Kind != KindProxyless:
		return bad("kind %q is not %s, %s or %s", p.Kind, KindBuiltin, KindEnvoy, KindProxyless)
	case p.Kind == KindProxyless:
		return nil
	case p.InboundPort == 0 && p.OutboundPort == 0:
		return bad("a %s proxy needs an inbound or an outbound port", p.Kind)
	case p.InboundPort != 0 && p.AppPort == 0:
		return bad("an inbound port needs the app's port")
	case p.CertDir == "":
		return bad("a %s proxy needs the directory of its certificate files (cert_dir)", p.Kind)
	}
	return nil
}

func (b *builder) build(m *Mesh) *Resources {
	b.mesh = m
	p := b.proxy
	reachable := b.reachable()
	r := &Resources{}
	addOutbound := func() {
		r.Routes = append(r.Routes, b.outboundRoute(reachable))
		for _, s := range reachable {
			r.Clusters = append(r.Clusters, b.outboundCluster(s))
			r.Endpoints = append(r.Endpoints, b.endpoints(s))
		}
	}
	if p.Kind == KindProxyless {
		for _, s := range reachable {
			for _, host := range hostNames(p.Namespace, s.Namespace, s.Name) {
				r.Listeners = append(r.Listeners, apiListener(host))
			}
		}
		addOutbound()
	} else {
		if p.OutboundPort != 0 {
			r.Listeners = append(r.Listeners, b.outboundListener())
			addOutbound()
		}
		if p.InboundPort != 0 {
			r.Listeners = append(r.Listeners, b.inboundListener())
			if p.Kind == KindBuiltin {
				r.Listeners = append(r.Listeners, b.inboundQUICListener())
			}
			r.Clusters = append(r.Clusters, b.appCluster())
		}
		r.Secrets = append(r.Secrets, b.certSecret(), b.rootSecret())
	}
	r.sort()
	return r
}

// reachable lists the services proxy p may call, sorted.
func (b *builder) reachable() []*Service {
	var out []*Service
	for i := range b.mesh.Services {
		s := &b.mesh.Services[i]
		if s.Namespace == b.proxy.Namespace || s.Namespace == SystemNamespace {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b *Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

func (r *Resources) sort() {
	slices.SortFunc(r.Listeners, func(a, b *listener.Listener) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Routes, func(a, b *route.RouteConfiguration) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Clusters, func(a, b *cluster.Cluster) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Endpoints, func(a, b *endpoint.ClusterLoadAssignment) int { return cmp.Compare(a.ClusterName, b.ClusterName) })
	slices.SortFunc(r.Secrets, func(a, b *tlsv3.Secret) int { return cmp.Compare(a.Name, b.Name) })
}

// validatable is every generated resource type.
type validatable interface{ ValidateAll() error }

// Validate runs each resource's ValidateAll (protoc-gen-validate rules)
// and checks that every reference resolves: listeners' route configs
// (API listeners included, which go-control-plane's Snapshot.Consistent
// does not follow), routes' clusters, EDS clusters' endpoints.
func (r *Resources) Validate() error {
	var errs []error
	check := func(kind, name string, v validatable) {
		if err := v.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", kind, name, err))
		}
	}
	routes := map[string]bool{}
	clusters := map[string]bool{}
	endpoints := map[string]bool{}
	for _, x := range r.Routes {
		check("route", x.Name, x)
		routes[x.Name] = true
	}
	for _, x := range r.Clusters {
		check("cluster", x.Name, x)
		clusters[x.Name] = true
	}
	for _, x := range r.Endpoints {
		check("endpoints", x.ClusterName, x)
		endpoints[x.ClusterName] = true
	}
	for _, x := range r.Secrets {
		check("secret", x.Name, x)
	}
	for _, l := range r.Listeners {
		check("listener", l.Name, l)
		for _, name := range rdsNames(l) {
			if !routes[name] {
				errs = append(errs, fmt.Errorf("listener %q refers to route %q, which is missing", l.Name, name))
			}
		}
	}
	for _, rc := range r.Routes {
		for _, vh := range rc.VirtualHosts {
			for _, rt := range vh.Routes {
				if c := rt.GetRoute().GetCluster(); c != "" && !clusters[c] {
					errs = append(errs, fmt.Errorf("route %q refers to cluster %q, which is missing", rc.Name, c))
				}
			}
		}
	}
	for _, c := range r.Clusters {
		if c.GetType() == cluster.Cluster_EDS && !endpoints[c.Name] {
			errs = append(errs, fmt.Errorf("cluster %q has no endpoints resource", c.Name))
		}
	}
	return errors.Join(errs...)
}

// rdsNames returns the route configurations a listener asks for over RDS.
func rdsNames(l *listener.Listener) []string {
	var anys []*hcm.HttpConnectionManager
	if a := l.GetApiListener().GetApiListener(); a != nil {
		m := &hcm.HttpConnectionManager{}
		if a.UnmarshalTo(m) == nil {
			anys = append(anys, m)
		}
	}
	for _, fc := range l.FilterChains {
		for _, f := range fc.Filters {
			m := &hcm.HttpConnectionManager{}
			if f.GetTypedConfig() != nil && f.GetTypedConfig().UnmarshalTo(m) == nil {
				anys = append(anys, m)
			}
		}
	}
	var names []string
	for _, m := range anys {
		if n := m.GetRds().GetRouteConfigName(); n != "" {
			names = append(names, n)
		}
	}
	return names
}
