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

// builder holds one build's inputs.
type builder struct {
	mesh  *Mesh
	proxy Proxy
	// own is the proxy's own service, looked up once (ownService).
	own       *Service
	ownLooked bool
}

// ErrInvalidProxy is wrapped by errors about a proxy's own description.
var ErrInvalidProxy = errors.New("invalid proxy")

// Shared holds the resources every proxy of one kind in one namespace gets
// alike: what it may call. A control plane builds it once per change and
// hands the same values to each such proxy.
type Shared struct {
	Namespace string
	Kind      string
	// APIListeners are the proxyless kind's listeners, one per host name.
	APIListeners []*listener.Listener
	Route        *route.RouteConfiguration
	Clusters     []*cluster.Cluster
	Endpoints    []*endpoint.ClusterLoadAssignment
}

// Build returns the resources of proxy p in mesh m. p may call the services
// of its own namespace and the platform services (namespace micromesh).
func Build(m *Mesh, p Proxy) (*Resources, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	m = WithDefaults(m)
	return BuildFor(m, p, BuildShared(m, p.Namespace, p.Kind))
}

// WithDefaults returns m with the default policy on services that set
// none (m itself when all do).
func WithDefaults(m *Mesh) *Mesh {
	var c *Mesh
	for i := range m.Services {
		if m.Services[i].Policy != (Policy{}) {
			continue
		}
		if c == nil {
			cp := *m
			cp.Services = slices.Clone(m.Services)
			c = &cp
		}
		c.Services[i].Policy = DefaultPolicy
	}
	if c == nil {
		return m
	}
	return c
}

// BuildShared builds what proxies of kind in namespace ns share. m must
// have its defaults applied (WithDefaults).
func BuildShared(m *Mesh, ns, kind string) *Shared {
	b := &builder{mesh: m, proxy: Proxy{Namespace: ns, Kind: kind}}
	reachable := b.reachable()
	externals := b.externals()
	sh := &Shared{Namespace: ns, Kind: kind, Route: b.outboundRoute(reachable)}
	for _, e := range externals {
		sh.Route.VirtualHosts = append(sh.Route.VirtualHosts, externalVirtualHost(ns, e))
		sh.Clusters = append(sh.Clusters, externalCluster(e))
	}
	for _, s := range reachable {
		sh.Clusters = append(sh.Clusters, b.outboundCluster(s, ClusterName(s.Namespace, s.Name)))
		sh.Endpoints = append(sh.Endpoints, b.endpoints(s, ClusterName(s.Namespace, s.Name)))
		// Every version the split names has its cluster, a share of 0
		// too: moving shares between them then changes only the route,
		// and callers never wait for a cluster's endpoints.
		for _, v := range s.Split {
			sub := s.ofVersion(v.Version)
			name := VersionClusterName(s.Namespace, s.Name, v.Version)
			sh.Clusters = append(sh.Clusters, b.outboundCluster(sub, name))
			sh.Endpoints = append(sh.Endpoints, b.endpoints(sub, name))
		}
		if kind == KindProxyless {
			for _, host := range hostNames(ns, s.Namespace, s.Name) {
				sh.APIListeners = append(sh.APIListeners, apiListener(host))
			}
		}
	}
	slices.SortFunc(sh.APIListeners, func(a, b *listener.Listener) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(sh.Clusters, func(a, b *cluster.Cluster) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(sh.Endpoints, func(a, b *endpoint.ClusterLoadAssignment) int { return cmp.Compare(a.ClusterName, b.ClusterName) })
	return sh
}

// Own holds a proxy's resources that are its alone: its listeners (sidecars),
// the local app's cluster, its secrets. Whether it also gets the Shared
// route, clusters and endpoints is UsesShared.
type Own struct {
	Listeners  []*listener.Listener
	Clusters   []*cluster.Cluster
	Secrets    []*tlsv3.Secret
	UsesShared bool
}

// BuildOwn builds proxy p's own resources.
func BuildOwn(m *Mesh, p Proxy) (*Own, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	b := &builder{mesh: m, proxy: p}
	o := &Own{UsesShared: p.Kind == KindProxyless || p.OutboundPort != 0 || len(p.Upstreams) > 0}
	if p.Kind == KindProxyless {
		return o, nil
	}
	if p.OutboundPort != 0 {
		o.Listeners = append(o.Listeners, b.outboundListener())
	}
	for _, u := range p.Upstreams {
		o.Listeners = append(o.Listeners, b.upstreamListener(u))
	}
	if p.InboundPort != 0 {
		o.Listeners = append(o.Listeners, b.inboundListener())
		if p.Kind == KindBuiltin {
			o.Listeners = append(o.Listeners, b.inboundQUICListener())
		}
		o.Clusters = append(o.Clusters, b.appCluster())
	}
	o.Secrets = append(o.Secrets, b.certSecret(), b.rootSecret())
	return o, nil
}

// BuildFor returns proxy p's resources around sh, which must be the
// Shared of p's namespace and kind in the same mesh.
func BuildFor(m *Mesh, p Proxy, sh *Shared) (*Resources, error) {
	if sh.Namespace != p.Namespace || sh.Kind != p.Kind {
		return nil, fmt.Errorf("%w %s: shared resources are for %s/%s, the proxy is %s/%s", ErrInvalidProxy, p.NodeID, sh.Namespace, sh.Kind, p.Namespace, p.Kind)
	}
	own, err := BuildOwn(m, p)
	if err != nil {
		return nil, err
	}
	r := &Resources{Listeners: own.Listeners, Clusters: own.Clusters, Secrets: own.Secrets}
	if own.UsesShared {
		r.Listeners = append(r.Listeners, sh.APIListeners...)
		r.Routes = append(r.Routes, sh.Route)
		r.Clusters = append(r.Clusters, sh.Clusters...)
		r.Endpoints = append(r.Endpoints, sh.Endpoints...)
	}
	r.sort()
	return r, nil
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
	case p.Kind == KindProxyless && len(p.Upstreams) > 0:
		return bad("upstreams need a sidecar: a proxyless client has no listeners")
	case p.Kind == KindProxyless:
		return nil
	case p.InboundPort == 0 && p.OutboundPort == 0 && len(p.Upstreams) == 0:
		return bad("a %s proxy needs an inbound or an outbound port", p.Kind)
	case p.InboundPort != 0 && p.AppPort == 0:
		return bad("an inbound port needs the app's port")
	case p.CertDir == "":
		return bad("a %s proxy needs the directory of its certificate files (cert_dir)", p.Kind)
	}
	ports := map[uint32]string{}
	for _, own := range []struct {
		port uint32
		what string
	}{{p.OutboundPort, "the outbound port"}, {p.InboundPort, "the inbound port"}, {p.AppPort, "the app's port"}} {
		if own.port != 0 {
			ports[own.port] = own.what
		}
	}
	services := map[string]bool{}
	for _, u := range p.Upstreams {
		ns := cmp.Or(u.Namespace, p.Namespace)
		full := u.Service + "." + ns
		switch {
		case u.Service == "":
			return bad("an upstream names no service")
		case u.Port == 0:
			return bad("upstream %s has no port", full)
		case ports[u.Port] != "":
			return bad("upstream %s: port %d is %s", full, u.Port, ports[u.Port])
		case services[full]:
			return bad("upstream %s is named twice", full)
		}
		ports[u.Port] = "upstream " + full + "'s"
		services[full] = true
	}
	return nil
}

// reachable lists the services proxies of the namespace may call, sorted:
// those of their namespace, the platform's, and those whose allow_from
// names the namespace or a service of it (the service's RBAC then admits
// only the callers it names). The platform's own proxies (the API
// gateway, `meshctl call --as` a platform service) reach every service:
// every service's RBAC admits the platform's identities (inboundRBAC),
// unless its deny_from names them.
func (b *builder) reachable() []*Service {
	var out []*Service
	for i := range b.mesh.Services {
		s := &b.mesh.Services[i]
		if s.Namespace == b.proxy.Namespace || s.Namespace == SystemNamespace || b.proxy.Namespace == SystemNamespace || admitsNamespace(s, b.proxy.Namespace) {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b *Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// admitsNamespace reports whether s's allow_from, or one of its paths',
// names namespace ns or a service of it.
func admitsNamespace(s *Service, ns string) bool {
	if allowsNamespace(s.Policy.AllowFrom, ns) {
		return true
	}
	for _, rp := range s.Routes {
		if allowsNamespace(rp.AllowFrom, ns) {
			return true
		}
	}
	return false
}

// allowsNamespace reports whether a list of callers names namespace ns or
// a service of it.
func allowsNamespace(list, ns string) bool {
	services, namespaces := Callers(list)
	if slices.Contains(namespaces, ns) {
		return true
	}
	for _, s := range services {
		if s[0] == ns {
			return true
		}
	}
	return false
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

// ValidateShared runs ValidateAll on the shared resources and checks the
// references among them, once for all the proxies that get them.
func (sh *Shared) ValidateShared() error {
	r := &Resources{Listeners: sh.APIListeners, Routes: []*route.RouteConfiguration{sh.Route}, Clusters: sh.Clusters, Endpoints: sh.Endpoints}
	return r.Validate()
}

// Validate runs ValidateAll on a proxy's own resources and checks their
// references into sh (which has passed ValidateShared): listeners' route
// configurations exist, every EDS cluster has endpoints.
func (o *Own) Validate(sh *Shared) error {
	var errs []error
	for _, l := range o.Listeners {
		if err := l.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("listener %q: %w", l.Name, err))
		}
		for _, name := range rdsNames(l) {
			if !o.UsesShared || name != sh.Route.Name {
				errs = append(errs, fmt.Errorf("listener %q refers to route %q, which is missing", l.Name, name))
			}
		}
	}
	for _, c := range o.Clusters {
		if err := c.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("cluster %q: %w", c.Name, err))
		}
		if c.GetType() == cluster.Cluster_EDS {
			errs = append(errs, fmt.Errorf("cluster %q is EDS but not shared: it has no endpoints resource", c.Name))
		}
	}
	for _, x := range o.Secrets {
		if err := x.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("secret %q: %w", x.Name, err))
		}
	}
	return errors.Join(errs...)
}

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
				names := []string{rt.GetRoute().GetCluster()}
				for _, wc := range rt.GetRoute().GetWeightedClusters().GetClusters() {
					names = append(names, wc.GetName())
				}
				for _, c := range names {
					if c != "" && !clusters[c] {
						errs = append(errs, fmt.Errorf("route %q refers to cluster %q, which is missing", rc.Name, c))
					}
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
