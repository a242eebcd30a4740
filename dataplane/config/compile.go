package config

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbacfilter "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	quicv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/quic/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Resources are the xDS resources in force, by type.
type Resources struct {
	Listeners []*listener.Listener
	Routes    []*route.RouteConfiguration
	Clusters  []*cluster.Cluster
	Endpoints []*endpoint.ClusterLoadAssignment
	Secrets   []*tlsv3.Secret
}

// Secret names the proxy looks up.
const (
	certSecret = "default"
	rootSecret = "ROOTCA"
)

// Compile builds a Config from resources. References to resources not
// received yet (a route configuration, endpoints) are allowed — the proxy
// answers 503 for them until they arrive — but anything the proxy cannot
// honour is an error naming the resource.
func Compile(r Resources) (*Config, error) {
	c := &Config{Routes: map[string]*RouteTable{}, Clusters: map[string]*Cluster{}}
	var errs []error
	for _, rc := range r.Routes {
		t, err := compileRouteTable(rc)
		if err != nil {
			errs = append(errs, fmt.Errorf("route %q: %w", rc.GetName(), err))
			continue
		}
		c.Routes[rc.GetName()] = t
	}
	endpoints := map[string]*endpoint.ClusterLoadAssignment{}
	for _, cla := range r.Endpoints {
		endpoints[cla.GetClusterName()] = cla
	}
	for _, cl := range r.Clusters {
		cc, err := compileCluster(cl, endpoints)
		if err != nil {
			errs = append(errs, fmt.Errorf("cluster %q: %w", cl.GetName(), err))
			continue
		}
		c.Clusters[cc.Name] = cc
	}
	for _, l := range r.Listeners {
		if err := c.addListener(l); err != nil {
			errs = append(errs, fmt.Errorf("listener %q: %w", l.GetName(), err))
		}
	}
	for _, s := range r.Secrets {
		if err := c.addSecret(s); err != nil {
			errs = append(errs, fmt.Errorf("secret %q: %w", s.GetName(), err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) addListener(l *listener.Listener) error {
	if l.GetApiListener() != nil {
		return errors.New("API listeners are for proxyless gRPC clients, not sidecars")
	}
	sa := l.GetAddress().GetSocketAddress()
	if sa == nil {
		return errors.New("it has no socket address")
	}
	addr := hostPort(sa.GetAddress(), sa.GetPortValue())
	udp := sa.GetProtocol() == core.SocketAddress_UDP
	if len(l.GetFilterChains()) != 1 {
		return fmt.Errorf("it has %d filter chains; the built-in proxy takes exactly one", len(l.GetFilterChains()))
	}
	fc := l.GetFilterChains()[0]
	if fc.GetFilterChainMatch() != nil {
		return errors.New("filter chain matches are not supported")
	}
	if len(fc.GetFilters()) != 1 {
		return fmt.Errorf("it has %d network filters; the built-in proxy takes one HTTP connection manager", len(fc.GetFilters()))
	}
	m := &hcm.HttpConnectionManager{}
	if err := unpack(fc.GetFilters()[0].GetTypedConfig(), m); err != nil {
		return fmt.Errorf("network filter %q: %w", fc.GetFilters()[0].GetName(), err)
	}
	filters, err := compileHTTPFilters(m.GetHttpFilters())
	if err != nil {
		return err
	}
	ts := fc.GetTransportSocket()
	if ts == nil {
		// Plaintext: the app's outbound listener, on loopback only.
		if udp {
			return errors.New("a plaintext listener must be TCP")
		}
		if ip := net.ParseIP(sa.GetAddress()); ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("a plaintext listener must be on loopback, not %s", sa.GetAddress())
		}
		if c.Outbound != nil {
			return fmt.Errorf("a second plaintext listener (the outbound one is %q)", c.Outbound.Name)
		}
		rds := m.GetRds().GetRouteConfigName()
		if rds == "" {
			return errors.New("the outbound listener must take its routes by RDS")
		}
		c.Outbound = &Outbound{Name: l.GetName(), Address: addr, Route: rds}
		return nil
	}
	in := &Inbound{Name: l.GetName(), Address: addr, UDP: udp, RBAC: filters.rbac}
	var tlsCtx *tlsv3.DownstreamTlsContext
	switch {
	case udp:
		q := &quicv3.QuicDownstreamTransport{}
		if err := unpack(ts.GetTypedConfig(), q); err != nil {
			return fmt.Errorf("transport socket: %w", err)
		}
		tlsCtx = q.GetDownstreamTlsContext()
	default:
		tlsCtx = &tlsv3.DownstreamTlsContext{}
		if err := unpack(ts.GetTypedConfig(), tlsCtx); err != nil {
			return fmt.Errorf("transport socket: %w", err)
		}
	}
	if !tlsCtx.GetRequireClientCertificate().GetValue() {
		return errors.New("a mesh listener must require client certificates")
	}
	in.RequireClientCert = true
	in.ALPN = tlsCtx.GetCommonTlsContext().GetAlpnProtocols()
	if err := checkSDS(tlsCtx.GetCommonTlsContext()); err != nil {
		return err
	}
	rc := m.GetRouteConfig()
	if rc == nil {
		return errors.New("an inbound listener must carry its route configuration inline")
	}
	if in.Route, err = compileRouteTable(rc); err != nil {
		return err
	}
	if udp {
		if c.InboundQUIC != nil {
			return errors.New("a second QUIC listener")
		}
		c.InboundQUIC = in
	} else {
		if c.Inbound != nil {
			return errors.New("a second TLS listener")
		}
		c.Inbound = in
	}
	return nil
}

// checkSDS requires the proxy's certificate and the bundle by SDS, by the
// names it knows.
func checkSDS(ctc *tlsv3.CommonTlsContext) error {
	sds := ctc.GetTlsCertificateSdsSecretConfigs()
	if len(sds) != 1 || sds[0].GetName() != certSecret {
		return fmt.Errorf("the certificate must come by SDS as %q", certSecret)
	}
	if len(ctc.GetTlsCertificates()) != 0 {
		return errors.New("inline certificates are not accepted; use SDS")
	}
	return nil
}

type httpFilters struct {
	rbac *RBAC
}

func compileHTTPFilters(fs []*hcm.HttpFilter) (httpFilters, error) {
	var out httpFilters
	if len(fs) == 0 || fs[len(fs)-1].GetTypedConfig().GetTypeUrl() != typeURL(&routerv3.Router{}) {
		return out, errors.New("the last HTTP filter must be the router")
	}
	for _, f := range fs[:len(fs)-1] {
		switch f.GetTypedConfig().GetTypeUrl() {
		case typeURL(&rbacfilter.RBAC{}):
			r := &rbacfilter.RBAC{}
			if err := unpack(f.GetTypedConfig(), r); err != nil {
				return out, err
			}
			if r.GetShadowRules() != nil {
				return out, errors.New("RBAC shadow rules are not supported")
			}
			compiled, err := compileRBAC(r.GetRules())
			if err != nil {
				return out, err
			}
			out.rbac = compiled
		default:
			if f.GetIsOptional() {
				continue
			}
			return out, fmt.Errorf("HTTP filter %q (%s) is not supported", f.GetName(), f.GetTypedConfig().GetTypeUrl())
		}
	}
	return out, nil
}

func compileRouteTable(rc *route.RouteConfiguration) (*RouteTable, error) {
	t := &RouteTable{Name: rc.GetName(), exact: map[string]*Route{}}
	for _, vh := range rc.GetVirtualHosts() {
		if len(vh.GetRoutes()) != 1 {
			return nil, fmt.Errorf("virtual host %q has %d routes; the built-in proxy takes one per host", vh.GetName(), len(vh.GetRoutes()))
		}
		rt := vh.GetRoutes()[0]
		switch p := rt.GetMatch().GetPathSpecifier().(type) {
		case *route.RouteMatch_Prefix:
			if p.Prefix != "/" && p.Prefix != "" {
				return nil, fmt.Errorf("virtual host %q: only the prefix \"/\" is supported, not %q", vh.GetName(), p.Prefix)
			}
		default:
			return nil, fmt.Errorf("virtual host %q: path match %T is not supported", vh.GetName(), p)
		}
		action := rt.GetRoute()
		if action == nil || action.GetCluster() == "" {
			return nil, fmt.Errorf("virtual host %q: only routes to a named cluster are supported", vh.GetName())
		}
		r := &Route{VirtualHost: vh.GetName(), Cluster: action.GetCluster(), Timeout: action.GetTimeout().AsDuration()}
		if action.GetTimeout() == nil {
			r.Timeout = defaultRouteTimeout
		}
		if rp := action.GetRetryPolicy(); rp != nil {
			retry, err := compileRetry(rp)
			if err != nil {
				return nil, fmt.Errorf("virtual host %q: %w", vh.GetName(), err)
			}
			r.Retry = retry
		}
		r.HeadersToRemove = append(append([]string(nil), vh.GetRequestHeadersToRemove()...), rt.GetRequestHeadersToRemove()...)
		for _, hv := range append(append([]*core.HeaderValueOption(nil), vh.GetRequestHeadersToAdd()...), rt.GetRequestHeadersToAdd()...) {
			if v := hv.GetHeader().GetValue(); strings.Contains(v, "%") && v != PeerURISAN {
				return nil, fmt.Errorf("virtual host %q: header value %q: only %s is supported", vh.GetName(), v, PeerURISAN)
			}
			r.HeadersToAdd = append(r.HeadersToAdd, HeaderValue{Key: strings.ToLower(hv.GetHeader().GetKey()), Value: hv.GetHeader().GetValue()})
		}
		for _, d := range vh.GetDomains() {
			switch {
			case d == "*":
				t.wildcard = r
			case strings.Contains(d, "*"):
				return nil, fmt.Errorf("virtual host %q: wildcard domain %q is not supported (only \"*\")", vh.GetName(), d)
			default:
				t.exact[strings.ToLower(d)] = r
			}
			t.Hosts = append(t.Hosts, d)
		}
	}
	sort.Strings(t.Hosts)
	return t, nil
}

// defaultLimits are Envoy's circuit-breaker thresholds when a cluster sets
// none.
var defaultLimits = Limits{MaxConnections: 1024, MaxPendingRequests: 1024, MaxRequests: 1024, MaxRetries: 3}

// defaultRouteTimeout is Envoy's route timeout when none is set.
const defaultRouteTimeout = 15 * time.Second

func compileRetry(rp *route.RetryPolicy) (*RetryPolicy, error) {
	out := &RetryPolicy{NumRetries: 1, BaseInterval: 25e6, MaxInterval: 250e6}
	if rp.GetNumRetries() != nil {
		out.NumRetries = rp.GetNumRetries().GetValue()
	}
	out.PerTryTimeout = rp.GetPerTryTimeout().AsDuration()
	if b := rp.GetRetryBackOff(); b != nil {
		out.BaseInterval = b.GetBaseInterval().AsDuration()
		if b.GetMaxInterval() != nil {
			out.MaxInterval = b.GetMaxInterval().AsDuration()
		} else {
			out.MaxInterval = 10 * out.BaseInterval
		}
	}
	for _, cond := range strings.Split(rp.GetRetryOn(), ",") {
		switch strings.TrimSpace(cond) {
		case "":
		case "connect-failure":
			out.On.ConnectFailure = true
		case "reset":
			out.On.Reset = true
		case "503":
			out.On.Status503 = true
		case "unavailable":
			out.On.GRPCUnavailable = true
		case "5xx", "gateway-error":
			out.On.Status503, out.On.ConnectFailure, out.On.Reset = true, true, true
		default:
			return nil, fmt.Errorf("retry condition %q is not supported", cond)
		}
	}
	return out, nil
}

func compileCluster(cl *cluster.Cluster, endpoints map[string]*endpoint.ClusterLoadAssignment) (*Cluster, error) {
	c := &Cluster{Name: cl.GetName(), ConnectTimeout: cl.GetConnectTimeout().AsDuration()}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 5e9
	}
	switch cl.GetLbPolicy() {
	case cluster.Cluster_ROUND_ROBIN:
	case cluster.Cluster_LEAST_REQUEST:
		c.LeastRequest = true
	default:
		return nil, fmt.Errorf("load-balancing policy %v is not supported", cl.GetLbPolicy())
	}
	var cla *endpoint.ClusterLoadAssignment
	switch cl.GetType() {
	case cluster.Cluster_EDS:
		c.EDS = cl.GetEdsClusterConfig().GetServiceName()
		if c.EDS == "" {
			c.EDS = cl.GetName()
		}
		cla = endpoints[c.EDS] // nil until it arrives: no endpoints yet
		c.Waiting = cla == nil
	case cluster.Cluster_STATIC:
		cla = cl.GetLoadAssignment()
	default:
		return nil, fmt.Errorf("discovery type %v is not supported (EDS or STATIC)", cl.GetType())
	}
	// Thresholds not set are Envoy's defaults, as for a cluster with no
	// circuit breakers at all.
	c.Limits = defaultLimits
	for _, t := range cl.GetCircuitBreakers().GetThresholds() {
		if t.GetPriority() != core.RoutingPriority_DEFAULT {
			continue
		}
		c.Limits = Limits{
			MaxConnections:     valueOr(t.GetMaxConnections().GetValue(), t.GetMaxConnections() != nil, defaultLimits.MaxConnections),
			MaxPendingRequests: valueOr(t.GetMaxPendingRequests().GetValue(), t.GetMaxPendingRequests() != nil, defaultLimits.MaxPendingRequests),
			MaxRequests:        valueOr(t.GetMaxRequests().GetValue(), t.GetMaxRequests() != nil, defaultLimits.MaxRequests),
			MaxRetries:         valueOr(t.GetMaxRetries().GetValue(), t.GetMaxRetries() != nil, defaultLimits.MaxRetries),
		}
	}
	if od := cl.GetOutlierDetection(); od != nil {
		c.Outlier = &Outlier{
			Consecutive5xx:          valueOr(od.GetConsecutive_5Xx().GetValue(), od.GetConsecutive_5Xx() != nil, 5),
			ConsecutiveLocalFailure: valueOr(od.GetConsecutiveLocalOriginFailure().GetValue(), od.GetConsecutiveLocalOriginFailure() != nil, 5),
			Interval:                durOr(od.GetInterval().AsDuration(), 10e9),
			BaseEjectionTime:        durOr(od.GetBaseEjectionTime().AsDuration(), 30e9),
			MaxEjectionTime:         durOr(od.GetMaxEjectionTime().AsDuration(), 300e9),
			MaxEjectionPercent:      valueOr(od.GetMaxEjectionPercent().GetValue(), od.GetMaxEjectionPercent() != nil, 10),
		}
	}
	if err := c.setTransport(cl); err != nil {
		return nil, err
	}
	for _, loc := range cla.GetEndpoints() {
		for _, lb := range loc.GetLbEndpoints() {
			sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
			if sa == nil {
				return nil, errors.New("an endpoint has no socket address")
			}
			if udp := sa.GetProtocol() == core.SocketAddress_UDP; udp != (c.Transport == TransportQUIC) {
				return nil, fmt.Errorf("endpoint %s: a %s cluster needs %s addresses", sa.GetAddress(), c.Transport, map[bool]string{true: "UDP", false: "TCP"}[!udp])
			}
			c.Endpoints = append(c.Endpoints, Endpoint{
				Address: hostPort(sa.GetAddress(), sa.GetPortValue()),
				Weight:  max(lb.GetLoadBalancingWeight().GetValue(), 1),
				Healthy: healthy(lb.GetHealthStatus()),
				Region:  loc.GetLocality().GetRegion(),
				Zone:    loc.GetLocality().GetZone(),
			})
		}
	}
	return c, nil
}

func healthy(h core.HealthStatus) bool {
	switch h {
	case core.HealthStatus_UNKNOWN, core.HealthStatus_HEALTHY, core.HealthStatus_DEGRADED:
		return true
	}
	return false
}

// setTransport reads the cluster's transport socket and protocol options.
func (c *Cluster) setTransport(cl *cluster.Cluster) error {
	if opts, ok := cl.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; ok {
		po := &httpv3.HttpProtocolOptions{}
		if err := unpack(opts, po); err != nil {
			return err
		}
		c.HTTP2 = po.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
	}
	ts := cl.GetTransportSocket()
	if ts == nil {
		c.Transport = TransportPlain
		if cl.GetType() != cluster.Cluster_STATIC {
			return errors.New("a plaintext cluster must be a static one (the local app)")
		}
		for _, loc := range cl.GetLoadAssignment().GetEndpoints() {
			for _, lb := range loc.GetLbEndpoints() {
				if ip := net.ParseIP(lb.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()); ip == nil || !ip.IsLoopback() {
					return errors.New("a plaintext cluster may only reach loopback")
				}
			}
		}
		return nil
	}
	var up *tlsv3.UpstreamTlsContext
	switch ts.GetTypedConfig().GetTypeUrl() {
	case typeURL(&quicv3.QuicUpstreamTransport{}):
		q := &quicv3.QuicUpstreamTransport{}
		if err := unpack(ts.GetTypedConfig(), q); err != nil {
			return err
		}
		c.Transport, up = TransportQUIC, q.GetUpstreamTlsContext()
	case typeURL(&tlsv3.UpstreamTlsContext{}):
		up = &tlsv3.UpstreamTlsContext{}
		if err := unpack(ts.GetTypedConfig(), up); err != nil {
			return err
		}
		c.Transport = TransportTLS
	default:
		return fmt.Errorf("transport socket %s is not supported", ts.GetTypedConfig().GetTypeUrl())
	}
	ctc := up.GetCommonTlsContext()
	if err := checkSDS(ctc); err != nil {
		return err
	}
	var sans []*tlsv3.SubjectAltNameMatcher
	switch v := ctc.GetValidationContextType().(type) {
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		if v.CombinedValidationContext.GetValidationContextSdsSecretConfig().GetName() != rootSecret {
			return fmt.Errorf("the trust bundle must come by SDS as %q", rootSecret)
		}
		sans = v.CombinedValidationContext.GetDefaultValidationContext().GetMatchTypedSubjectAltNames()
	default:
		return errors.New("the upstream validation context must combine SDS ROOTCA with a SAN matcher")
	}
	if len(sans) != 1 || sans[0].GetSanType() != tlsv3.SubjectAltNameMatcher_URI || sans[0].GetMatcher().GetExact() == "" {
		return errors.New("the upstream must be matched by exactly one exact URI SAN (its SPIFFE ID)")
	}
	c.SAN = sans[0].GetMatcher().GetExact()
	return nil
}

func (c *Config) addSecret(s *tlsv3.Secret) error {
	switch t := s.GetType().(type) {
	case *tlsv3.Secret_TlsCertificate:
		chain, key := t.TlsCertificate.GetCertificateChain().GetFilename(), t.TlsCertificate.GetPrivateKey().GetFilename()
		if chain == "" || key == "" {
			return errors.New("the certificate must name its files (the control plane never sends keys)")
		}
		c.Certificate = &CertFiles{Chain: chain, Key: key, Dir: t.TlsCertificate.GetWatchedDirectory().GetPath()}
	case *tlsv3.Secret_ValidationContext:
		roots := t.ValidationContext.GetTrustedCa().GetInlineBytes()
		if len(roots) == 0 {
			return errors.New("the trust bundle must be inline")
		}
		c.Roots = roots
	default:
		return fmt.Errorf("secret type %T is not supported", t)
	}
	return nil
}

func unpack(a *anypb.Any, into proto.Message) error {
	if a == nil {
		return errors.New("typed config is missing")
	}
	if a.GetTypeUrl() != typeURL(into) {
		return fmt.Errorf("typed config is %s, want %s", a.GetTypeUrl(), typeURL(into))
	}
	return a.UnmarshalTo(into)
}

func typeURL(m proto.Message) string {
	return "type.googleapis.com/" + string(m.ProtoReflect().Descriptor().FullName())
}

func valueOr(v uint32, set bool, def uint32) uint32 {
	if set {
		return v
	}
	return def
}

func durOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
