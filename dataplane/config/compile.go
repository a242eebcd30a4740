package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/micromesh/micromesh/dataplane/xdswire"
	"github.com/micromesh/micromesh/identity"
)

// Resources are the xDS resources in force, by type.
type Resources struct {
	Listeners []*xdswire.Listener
	Routes    []*xdswire.RouteConfiguration
	Clusters  []*xdswire.Cluster
	Endpoints []*xdswire.ClusterLoadAssignment
	Secrets   []*xdswire.Secret
	// ClustersReceived: the control plane has answered for clusters (maybe
	// with none). Until it has, a tunnel's cluster may be on its way;
	// after, one missing is not in the mesh.
	ClustersReceived bool
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
	c := &Config{Routes: map[string]*RouteTable{}, Clusters: map[string]*Cluster{}, clustersReceived: r.ClustersReceived}
	var errs []error
	for _, rc := range r.Routes {
		t, err := compileRouteTable(rc)
		if err != nil {
			errs = append(errs, fmt.Errorf("route %q: %w", rc.Name, err))
			continue
		}
		c.Routes[rc.Name] = t
	}
	endpoints := map[string]*xdswire.ClusterLoadAssignment{}
	for _, cla := range r.Endpoints {
		endpoints[cla.ClusterName] = cla
	}
	for _, cl := range r.Clusters {
		cc, err := compileCluster(cl, endpoints)
		if err != nil {
			errs = append(errs, fmt.Errorf("cluster %q: %w", cl.Name, err))
			continue
		}
		c.Clusters[cc.Name] = cc
	}
	for _, l := range r.Listeners {
		if err := c.addListener(l); err != nil {
			errs = append(errs, fmt.Errorf("listener %q: %w", l.Name, err))
		}
	}
	for _, s := range r.Secrets {
		if err := c.addSecret(s); err != nil {
			errs = append(errs, fmt.Errorf("secret %q: %w", s.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) addListener(l *xdswire.Listener) error {
	if l.APIListener != nil {
		return errors.New("API listeners are for proxyless gRPC clients, not sidecars")
	}
	if l.Refused != "" {
		return fmt.Errorf("%s is not supported", l.Refused)
	}
	sa, err := socketAddress(l.Address)
	if err != nil {
		return err
	}
	addr := hostPort(sa.Address, sa.PortValue)
	udp := sa.Protocol == xdswire.UDP
	if udp && (l.UDPListenerConfig == nil || l.UDPListenerConfig.QUICOptions == nil) {
		// Envoy runs such a listener as raw UDP, with UDP listener filters
		// (on a TCP listener, Envoy ignores udp_listener_config).
		return errors.New("a UDP listener needs udp_listener_config.quic_options (the built-in proxy's UDP listeners are QUIC)")
	}
	if len(l.FilterChains) != 1 {
		return fmt.Errorf("it has %d filter chains; the built-in proxy takes exactly one", len(l.FilterChains))
	}
	fc := l.FilterChains[0]
	if fc.FilterChainMatch != nil {
		return errors.New("filter chain matches are not supported")
	}
	if len(fc.Filters) != 1 {
		return fmt.Errorf("it has %d network filters; the built-in proxy takes one HTTP connection manager or one TCP proxy", len(fc.Filters))
	}
	if tc := fc.Filters[0].TypedConfig; tc != nil && tc.TypeURL == xdswire.TCPProxyType {
		return c.addTunnel(l.Name, sa, fc)
	}
	m, err := typed[*xdswire.HTTPConnectionManager](fc.Filters[0].TypedConfig, xdswire.HTTPConnectionManagerType)
	if err != nil {
		return fmt.Errorf("network filter %q: %w", fc.Filters[0].Name, err)
	}
	if m.Refused != "" {
		return fmt.Errorf("network filter %q: %s is not supported", fc.Filters[0].Name, m.Refused)
	}
	if m.Unsupported != "" {
		return fmt.Errorf("network filter %q: %s is not supported", fc.Filters[0].Name, m.Unsupported)
	}
	filters, err := compileHTTPFilters(m.HTTPFilters)
	if err != nil {
		return err
	}
	// Envoy sets x-request-id where it is missing unless told not to (with
	// use_remote_address off — refused otherwise — it keeps one a request
	// brings: preserve_external_request_id changes nothing then).
	requestID := m.GenerateRequestID == nil || *m.GenerateRequestID
	tracing, err := compileTracing(m.Tracing)
	if err != nil {
		return fmt.Errorf("network filter %q: %w", fc.Filters[0].Name, err)
	}
	accessLog, tap, err := compileAccessLogs(m.AccessLogs)
	if err != nil {
		return fmt.Errorf("network filter %q: %w", fc.Filters[0].Name, err)
	}
	ts := fc.TransportSocket
	if ts == nil {
		// Plaintext: the app's outbound listener, on loopback only.
		if udp {
			return errors.New("a plaintext listener must be TCP")
		}
		if ip := net.ParseIP(sa.Address); ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("a plaintext listener must be on loopback, not %s", sa.Address)
		}
		if c.Outbound != nil {
			return fmt.Errorf("a second plaintext listener (the outbound one is %q)", c.Outbound.Name)
		}
		if m.RDS == nil || m.RDS.RouteConfigName == "" {
			return errors.New("the outbound listener must take its routes by RDS")
		}
		if filters.jwt != nil {
			return errors.New("a jwt_authn filter on the outbound listener is not supported (services verify their callers' tokens)")
		}
		if m.ConnectEnabled() {
			return errors.New("CONNECT on the outbound listener is not supported (the app reaches TCP services through tcp_proxy listeners)")
		}
		c.Outbound = &Outbound{Name: l.Name, Address: addr, Route: m.RDS.RouteConfigName, RequestID: requestID, Tracing: tracing, AccessLog: accessLog, Tap: tap,
			RateLimit: filters.rateLimit, RateLimitFilter: filters.rateLimitFilter, RateLimitBeforeRBAC: filters.rateLimitBeforeRBAC,
			Fault: filters.fault, FaultFilter: filters.faultFilter, FaultFirst: filters.faultFirst}
		return nil
	}
	if filters.faultFilter != "" {
		// Faults are the caller's to inject (as Istio and gRPC do).
		return fmt.Errorf("HTTP filter %q: fault injection on an inbound listener is not supported (only on the outbound one)", filters.faultFilter)
	}
	in := &Inbound{Name: l.Name, Address: addr, UDP: udp, RBAC: filters.rbac, JWT: filters.jwt, RequestID: requestID, Tracing: tracing, AccessLog: accessLog, Tap: tap,
		RateLimit: filters.rateLimit, RateLimitFilter: filters.rateLimitFilter, RateLimitBeforeRBAC: filters.rateLimitBeforeRBAC, Connect: m.ConnectEnabled()}
	switch m.ForwardClientCertDetails {
	case xdswire.XFCCSanitize:
	case xdswire.XFCCSanitizeSet:
		in.SetXFCC = true
		if d := m.SetCurrentClientCertDetails; d != nil {
			if (d.Subject != nil && *d.Subject) || d.Cert || d.Chain || d.DNS || d.Issuer || d.Format != 0 {
				return errors.New("set_current_client_cert_details other than uri is not supported")
			}
			in.XFCCURI = d.URI
		}
	default:
		return fmt.Errorf("forward_client_cert_details %v is not supported (SANITIZE or SANITIZE_SET: the proxy does not pass on a client's own header)", m.ForwardClientCertDetails)
	}
	var tlsCtx *xdswire.DownstreamTLSContext
	switch {
	case udp:
		q, err := typed[*xdswire.QUICDownstreamTransport](ts.TypedConfig, xdswire.QUICDownstreamType)
		if err != nil {
			return fmt.Errorf("transport socket: %w", err)
		}
		tlsCtx = q.DownstreamTLSContext
	default:
		if tlsCtx, err = typed[*xdswire.DownstreamTLSContext](ts.TypedConfig, xdswire.DownstreamTLSType); err != nil {
			return fmt.Errorf("transport socket: %w", err)
		}
	}
	if tlsCtx == nil || tlsCtx.RequireClientCertificate == nil || !*tlsCtx.RequireClientCertificate {
		return errors.New("a mesh listener must require client certificates")
	}
	in.RequireClientCert = true
	if tlsCtx.Refused != "" {
		return fmt.Errorf("%s is not supported", tlsCtx.Refused)
	}
	if err := checkCommonTLS(tlsCtx.CommonTLSContext, udp, true); err != nil {
		return err
	}
	if err := checkClientValidation(tlsCtx.CommonTLSContext); err != nil {
		return err
	}
	in.ALPN = tlsCtx.CommonTLSContext.ALPNProtocols
	if m.RouteConfig == nil {
		return errors.New("an inbound listener must carry its route configuration inline")
	}
	if in.Route, err = compileRouteTable(m.RouteConfig); err != nil {
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

// addTunnel adds a tcp_proxy listener: loopback, plaintext (the app's
// side), every connection tunnelled in CONNECT to a cluster of the mesh.
func (c *Config) addTunnel(name string, sa *xdswire.SocketAddress, fc *xdswire.FilterChain) error {
	f := fc.Filters[0]
	tp, err := typed[*xdswire.TCPProxy](f.TypedConfig, xdswire.TCPProxyType)
	if err != nil {
		return fmt.Errorf("network filter %q: %w", f.Name, err)
	}
	switch {
	case tp.Refused != "":
		return fmt.Errorf("network filter %q: %s is not supported", f.Name, tp.Refused)
	case tp.Cluster == "" && tp.WeightedClusters == nil:
		return fmt.Errorf("network filter %q: the TCP proxy names no cluster", f.Name)
	case tp.TunnelingConfig == nil || tp.TunnelingConfig.Hostname == "":
		return fmt.Errorf("network filter %q: a TCP proxy without tunneling_config.hostname is not supported (the mesh carries TCP in CONNECT streams, never raw)", f.Name)
	case fc.TransportSocket != nil:
		return errors.New("a TCP proxy listener with a transport socket is not supported (it takes the app's plaintext on loopback)")
	case sa.Protocol == xdswire.UDP:
		return errors.New("a TCP proxy listener must be TCP")
	}
	if ip := net.ParseIP(sa.Address); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("a plaintext listener must be on loopback, not %s", sa.Address)
	}
	t := &Tunnel{Name: name, Address: hostPort(sa.Address, sa.PortValue), Cluster: tp.Cluster, Authority: tp.TunnelingConfig.Hostname,
		IdleTimeout: DefaultTunnelIdleTimeout, ConnectAttempts: 1}
	if tp.IdleTimeout != nil {
		t.IdleTimeout = tp.IdleTimeout.D()
	}
	if wc := tp.WeightedClusters; wc != nil {
		// As the routes' weighted clusters, but Envoy's validation wants
		// every weight of a TCP proxy's at least 1.
		split := &xdswire.WeightedCluster{}
		for _, c := range wc.Clusters {
			if c.Weight == 0 {
				return fmt.Errorf("network filter %q: weighted cluster %q has weight 0 (at least 1)", f.Name, c.Name)
			}
			split.Clusters = append(split.Clusters, &xdswire.ClusterWeight{Name: c.Name, Weight: &c.Weight})
		}
		sp, err := compileSplit(split)
		if err != nil {
			return fmt.Errorf("network filter %q: %w", f.Name, err)
		}
		t.Split = sp
	}
	if n := tp.MaxConnectAttempts; n != nil {
		if *n == 0 {
			return fmt.Errorf("network filter %q: max_connect_attempts 0 (at least 1, as Envoy's validation says)", f.Name)
		}
		t.ConnectAttempts = *n
	}
	i, found := slices.BinarySearchFunc(c.Tunnels, name, func(t *Tunnel, name string) int { return strings.Compare(t.Name, name) })
	if found {
		return errors.New("a second listener of that name")
	}
	c.Tunnels = slices.Insert(c.Tunnels, i, t)
	return nil
}

// socketAddress returns an address's socket address, or why there is none.
func socketAddress(a *xdswire.Address) (*xdswire.SocketAddress, error) {
	switch {
	case a != nil && a.Unsupported != "":
		return nil, fmt.Errorf("%s addresses are not supported", a.Unsupported)
	case a == nil || a.SocketAddress == nil:
		return nil, errors.New("it has no socket address")
	}
	return a.SocketAddress, nil
}

// checkCommonTLS requires the proxy's certificate by SDS, by the name it
// knows, and a handshake the proxy makes as Envoy would: TLS 1.3 (QUIC's
// only version; over TCP the parameters must pin it, as Envoy's defaults
// allow TLS 1.2), Go's curves and signature algorithms. Cipher suites
// are TLS 1.2's: Envoy ignores them for TLS 1.3 as the proxy does.
func checkCommonTLS(ctc *xdswire.CommonTLSContext, quic, server bool) error {
	if ctc == nil {
		return errors.New("the TLS context has no common TLS context")
	}
	if ctc.Refused != "" {
		return fmt.Errorf("%s is not supported", ctc.Refused)
	}
	sds := ctc.TLSCertificateSDSSecretConfigs
	if len(sds) != 1 || sds[0].Name != certSecret {
		return fmt.Errorf("the certificate must come by SDS as %q", certSecret)
	}
	if len(ctc.TLSCertificates) != 0 {
		return errors.New("inline certificates are not accepted; use SDS")
	}
	var p xdswire.TLSParameters
	if ctc.TLSParams != nil {
		p = *ctc.TLSParams
	}
	switch {
	case len(p.ECDHCurves) > 0:
		return errors.New("tls_params ecdh_curves is not supported (the proxy offers Go's: X25519MLKEM768, X25519, P-256, P-384, P-521)")
	case len(p.SignatureAlgorithms) > 0:
		return errors.New("tls_params signature_algorithms is not supported")
	case p.MaximumVersion != xdswire.TLSAuto && p.MaximumVersion < xdswire.TLSv1_3,
		!quic && p.MinimumVersion != xdswire.TLSv1_3,
		!quic && !server && p.MaximumVersion != xdswire.TLSv1_3:
		which := "minimum and maximum"
		if server {
			which = "minimum"
		}
		return fmt.Errorf("TLS versions %v to %v are not supported: the proxy speaks TLS 1.3 only (set tls_params' %s to TLSv1_3; Envoy's defaults allow TLS 1.2)",
			p.MinimumVersion, p.MaximumVersion, which)
	}
	return nil
}

// checkClientValidation requires an inbound listener to verify clients
// against the trust bundle by SDS (authorization by identity is the RBAC
// filter's: client SAN matchers at the handshake are not supported).
func checkClientValidation(ctc *xdswire.CommonTLSContext) error {
	bad := fmt.Errorf("an inbound listener must verify clients against the trust bundle by SDS as %q, and nothing else", rootSecret)
	switch v := ctc.CombinedValidationContext; {
	case ctc.Unsupported != "":
		return fmt.Errorf("%s is not supported: %w", ctc.Unsupported, bad)
	case ctc.ValidationContext != nil:
		return fmt.Errorf("an inline validation_context is not supported: %w", bad)
	case ctc.ValidationContextSDSSecretConfig != nil:
		if ctc.ValidationContextSDSSecretConfig.Name != rootSecret {
			return bad
		}
	case v != nil:
		if v.ValidationContextSDSSecretConfig == nil || v.ValidationContextSDSSecretConfig.Name != rootSecret {
			return bad
		}
		if d := v.DefaultValidationContext; d != nil {
			if r := refusedCheck(d); r != "" {
				return fmt.Errorf("client certificate check %s is not supported", r)
			}
			if len(d.MatchTypedSubjectAltNames) > 0 || d.TrustedCA != nil {
				return fmt.Errorf("client SAN matchers and other roots are not supported: %w", bad)
			}
		}
	default:
		return bad
	}
	return nil
}

type httpFilters struct {
	jwt                 *JWT
	rbac                *RBAC
	rateLimit           *RateLimit
	rateLimitFilter     string
	rateLimitBeforeRBAC bool
	fault               *Fault
	faultFilter         string
	faultFirst          bool // before the rate limit filter
}

func compileHTTPFilters(fs []*xdswire.HTTPFilter) (httpFilters, error) {
	var out httpFilters
	if len(fs) == 0 || typeURL(fs[len(fs)-1].TypedConfig) != xdswire.RouterType {
		return out, errors.New("the last HTTP filter must be the router")
	}
	if r, err := typed[*xdswire.Router](fs[len(fs)-1].TypedConfig, xdswire.RouterType); err != nil {
		return out, err
	} else if r.Refused != "" {
		return out, fmt.Errorf("router %s is not supported", r.Refused)
	}
	for _, f := range fs[:len(fs)-1] {
		switch typeURL(f.TypedConfig) {
		case xdswire.JWTAuthenticationType:
			if out.jwt != nil || out.rbac != nil || out.rateLimitFilter != "" || out.faultFilter != "" {
				return out, errors.New("a jwt_authn filter is supported once, ahead of the other HTTP filters")
			}
			m, err := typed[*xdswire.JWTAuthentication](f.TypedConfig, xdswire.JWTAuthenticationType)
			if err != nil {
				return out, err
			}
			if out.jwt, err = compileJWT(m); err != nil {
				return out, fmt.Errorf("HTTP filter %q: %w", f.Name, err)
			}
		case xdswire.RBACFilterType:
			r, err := typed[*xdswire.RBACFilter](f.TypedConfig, xdswire.RBACFilterType)
			if err != nil {
				return out, err
			}
			if r.ShadowRules != nil {
				return out, errors.New("RBAC shadow rules are not supported")
			}
			if r.Unsupported != "" {
				return out, fmt.Errorf("RBAC %s is not supported", r.Unsupported)
			}
			compiled, err := compileRBAC(r.Rules)
			if err != nil {
				return out, err
			}
			if out.rbac == nil {
				out.rbac = compiled
				break
			}
			// Another RBAC filter: both decide (it was once read as
			// replacing the first, which dropped the first's rules).
			if out.rateLimitFilter != "" && !out.rateLimitBeforeRBAC {
				return out, errors.New("a local_ratelimit filter between RBAC filters is not supported")
			}
			out.rbac.then(compiled)
		case xdswire.LocalRateLimitType:
			if out.rateLimitFilter != "" {
				return out, errors.New("a second local_ratelimit filter is not supported")
			}
			if f.Name == "" {
				return out, errors.New("a local_ratelimit filter needs a name (routes' settings refer to it)")
			}
			l, err := typed[*xdswire.LocalRateLimit](f.TypedConfig, xdswire.LocalRateLimitType)
			if err != nil {
				return out, err
			}
			// The listener's token bucket may be left out: only routes
			// with settings of their own are limited then.
			if out.rateLimit, err = compileRateLimit(l, false); err != nil {
				return out, fmt.Errorf("HTTP filter %q: %w", f.Name, err)
			}
			out.rateLimitFilter, out.rateLimitBeforeRBAC = f.Name, out.rbac == nil
		case xdswire.HTTPFaultType:
			if out.faultFilter != "" {
				return out, errors.New("a second fault filter is not supported")
			}
			if f.Name == "" {
				return out, errors.New("a fault filter needs a name (routes' settings refer to it)")
			}
			m, err := typed[*xdswire.HTTPFault](f.TypedConfig, xdswire.HTTPFaultType)
			if err != nil {
				return out, err
			}
			if out.fault, err = compileFault(m); err != nil {
				return out, fmt.Errorf("HTTP filter %q: %w", f.Name, err)
			}
			if out.fault.Delay == 0 && !out.fault.Abort {
				out.fault = nil // the control plane's: only routes' own settings inject
			}
			out.faultFilter, out.faultFirst = f.Name, out.rateLimitFilter == ""
		default:
			if f.IsOptional {
				continue
			}
			return out, fmt.Errorf("HTTP filter %q (%s) is not supported", f.Name, typeURL(f.TypedConfig))
		}
	}
	return out, nil
}

// allOrNone reads a share Envoy applies to a fraction of requests (0 to
// 1; above 1 reads as 1), which the proxy applies to all or none: 0 is
// off, all is on, anything between is refused.
func allOrNone(what string, share float64) (bool, error) {
	switch {
	case share == 0:
		return false, nil
	case share >= 1:
		return true, nil
	default:
		return false, fmt.Errorf("%s of %g%% is not supported (0 or 100)", what, share*100)
	}
}

// compileRateLimit reads a local rate limit filter as Envoy runs it: off
// unless filter_enabled says 100 %, refusing only when filter_enforced
// says 100 % too (a runtime key changes nothing: the proxy has no
// runtime, and Envoy uses the default when the key is unset); shares
// between 0 and 100 % are refused. nil: the filter is off.
func compileRateLimit(l *xdswire.LocalRateLimit, needBucket bool) (*RateLimit, error) {
	if l.Refused != "" {
		return nil, fmt.Errorf("local_ratelimit %s is not supported", l.Refused)
	}
	all := func(name string, p *xdswire.RuntimeFractionalPercent) (bool, error) {
		if p == nil || p.DefaultValue == nil {
			return false, nil
		}
		return allOrNone("local_ratelimit "+name, p.DefaultValue.Of())
	}
	enabled, err := all("filter_enabled", l.FilterEnabled)
	if err != nil {
		return nil, err
	}
	enforced, err := all("filter_enforced", l.FilterEnforced)
	if err != nil {
		return nil, err
	}
	tb := l.TokenBucket
	if tb == nil && !needBucket {
		return nil, nil
	}
	if tb == nil || tb.MaxTokens == 0 || tb.FillInterval.D() <= 0 {
		return nil, errors.New("local_ratelimit needs a token bucket with max_tokens and fill_interval")
	}
	if tb.FillInterval.D() < 50*time.Millisecond {
		return nil, fmt.Errorf("local_ratelimit fill_interval %v is under Envoy's minimum of 50ms", tb.FillInterval.D())
	}
	rl := &RateLimit{Name: l.StatPrefix, MaxTokens: tb.MaxTokens, TokensPerFill: valueOr(tb.TokensPerFill, 1),
		FillInterval: tb.FillInterval.D(), Status: 429, Enforced: enforced,
		ResourceExhausted: l.RateLimitedAsResourceExhausted}
	if rl.TokensPerFill == 0 {
		return nil, errors.New("local_ratelimit tokens_per_fill 0 never refills the bucket")
	}
	if l.Status != nil && l.Status.Code != 0 {
		if l.Status.Code < 400 || l.Status.Code > 599 {
			return nil, fmt.Errorf("local_ratelimit status %d is not an error status", l.Status.Code)
		}
		rl.Status = int(l.Status.Code)
	}
	if !enabled {
		return nil, nil
	}
	return rl, nil
}

func compileRouteTable(rc *xdswire.RouteConfiguration) (*RouteTable, error) {
	if rc.Refused != "" {
		return nil, fmt.Errorf("%s is not supported", rc.Refused)
	}
	t := &RouteTable{Name: rc.Name, exact: map[string][]*Route{}}
	for _, vh := range rc.VirtualHosts {
		if len(vh.Routes) == 0 {
			return nil, fmt.Errorf("virtual host %q has no routes", vh.Name)
		}
		if vh.Refused != "" {
			return nil, fmt.Errorf("virtual host %q: %s is not supported", vh.Name, vh.Refused)
		}
		routes := make([]*Route, 0, len(vh.Routes))
		for i, rt := range vh.Routes {
			r, err := compileRoute(rc, vh, rt)
			if err != nil {
				return nil, fmt.Errorf("virtual host %q, route %d: %w", vh.Name, i, err)
			}
			routes = append(routes, r)
			t.HeaderConditions = t.HeaderConditions || readsHeaders(rt.Match)
		}
		for _, d := range vh.Domains {
			switch {
			case d == "*":
				t.wildcard = routes
			case strings.Contains(d, "*"):
				return nil, fmt.Errorf("virtual host %q: wildcard domain %q is not supported (only \"*\")", vh.Name, d)
			default:
				t.exact[strings.ToLower(d)] = routes
			}
			t.Hosts = append(t.Hosts, d)
		}
	}
	sort.Strings(t.Hosts)
	return t, nil
}

func compileRoute(rc *xdswire.RouteConfiguration, vh *xdswire.VirtualHost, rt *xdswire.Route) (*Route, error) {
	m := rt.Match
	switch {
	case m == nil:
		return nil, errors.New("the route has no match")
	case m.Unsupported != "":
		return nil, fmt.Errorf("path match %s is not supported", m.Unsupported)
	case m.Conditions != "":
		return nil, fmt.Errorf("matching on %s is not supported", m.Conditions)
	}
	r := &Route{VirtualHost: vh.Name}
	var err error
	if r.Match, err = compilePathMatch(m); err != nil {
		return nil, err
	}
	if r.Conditions, err = compileConditions(m); err != nil {
		return nil, err
	}
	action := rt.Route
	if rt.Unsupported != "" || action == nil || action.Unsupported != "" || (action.Cluster == "" && action.WeightedClusters == nil) {
		return nil, errors.New("only routes to a named cluster or to weighted clusters are supported")
	}
	if rt.Refused != "" {
		return nil, fmt.Errorf("%s is not supported", rt.Refused)
	}
	if action.Refused != "" {
		return nil, fmt.Errorf("%s is not supported", action.Refused)
	}
	for name, a := range rt.TypedPerFilterConfig {
		switch m := a.Msg.(type) {
		case *xdswire.LocalRateLimit:
			if r.RateLimitFilter != "" {
				return nil, errors.New("typed_per_filter_config: a second local rate limit is not supported")
			}
			rl, err := compileRateLimit(m, true) // a route's settings need their bucket, as Envoy's
			if err != nil {
				return nil, fmt.Errorf("typed_per_filter_config %q: %w", name, err)
			}
			r.RateLimitFilter, r.RateLimit = name, rl
		case *xdswire.HTTPFault:
			if r.FaultFilter != "" {
				return nil, errors.New("typed_per_filter_config: a second fault is not supported")
			}
			f, err := compileFault(m)
			if err != nil {
				return nil, fmt.Errorf("typed_per_filter_config %q: %w", name, err)
			}
			r.FaultFilter, r.Fault = name, f
		default:
			return nil, fmt.Errorf("typed_per_filter_config %q (%s) is not supported (only a local rate limit's or a fault's)", name, a.TypeURL)
		}
	}
	r.Cluster, r.Timeout, r.HostRewrite = action.Cluster, action.Timeout.D(), action.HostRewriteLiteral
	if wc := action.WeightedClusters; wc != nil {
		split, err := compileSplit(wc)
		if err != nil {
			return nil, err
		}
		r.Split = split
	}
	if action.Timeout == nil {
		r.Timeout = defaultRouteTimeout
	}
	for _, u := range action.UpgradeConfigs {
		if u.Enabled == nil || *u.Enabled { // CONNECT with connect_config: the decoder refused the rest
			r.Tunnel = true
		}
	}
	switch {
	case r.Tunnel && !r.Match.Connect:
		return nil, errors.New("connect_config on a route without connect_matcher is not supported (only CONNECT requests are tunnelled)")
	case r.Match.Connect && !r.Tunnel:
		return nil, errors.New("a connect_matcher route without an enabled CONNECT upgrade with connect_config is not supported (the proxy ends tunnels, it does not forward CONNECT)")
	case r.Tunnel && (action.WeightedClusters != nil || len(action.RequestMirrorPolicies) > 0 || action.RetryPolicy != nil):
		return nil, errors.New("a tunnel route to weighted clusters, with mirrors or with retries is not supported")
	case r.Tunnel:
		r.IdleTimeout = 5 * time.Minute // the connection manager's stream_idle_timeout
		if action.IdleTimeout != nil {
			r.IdleTimeout = action.IdleTimeout.D()
		}
	}
	if msd := action.MaxStreamDuration; msd != nil {
		if msd.GRPCTimeoutHeader {
			return nil, errors.New("max_stream_duration grpc_timeout_header_max/offset is not supported (the caller's grpc-timeout travels to the app, which enforces it)")
		}
		// A bound on the whole stream, as the route timeout is: the
		// sooner wins.
		if d := msd.MaxStreamDuration.D(); d > 0 && (r.Timeout == 0 || d < r.Timeout) {
			r.Timeout = d
		}
	}
	// The most specific non-empty set of mirrors wins, not merged:
	// the route's, else its host's, else the configuration's (Envoy's).
	mirrors := action.RequestMirrorPolicies
	if len(mirrors) == 0 {
		mirrors = vh.RequestMirrorPolicies
	}
	if len(mirrors) == 0 && rc != nil {
		mirrors = rc.RequestMirrorPolicies
	}
	for _, mp := range mirrors {
		switch {
		case mp.Refused != "":
			return nil, fmt.Errorf("request_mirror_policies %s is not supported", mp.Refused)
		case mp.Cluster == "":
			return nil, errors.New("a request mirror policy has no cluster")
		}
		m := Mirror{Cluster: mp.Cluster, Share: Share{Numerator: 1, Denominator: 1}, Host: mp.HostRewriteLiteral, KeepHost: mp.DisableShadowHostSuffixAppend}
		if rf := mp.RuntimeFraction; rf != nil {
			m.Share = shareOf(rf.DefaultValue) // no runtime layer: the default, as Envoy without the key
		}
		r.Mirrors = append(r.Mirrors, m)
	}
	if rp := action.RetryPolicy; rp != nil {
		retry, err := compileRetry(rp)
		if err != nil {
			return nil, err
		}
		r.Retry = retry
	}
	r.HeadersToRemove = append(append([]string(nil), vh.RequestHeadersToRemove...), rt.RequestHeadersToRemove...)
	for _, hv := range append(append([]*xdswire.HeaderValueOption(nil), vh.RequestHeadersToAdd...), rt.RequestHeadersToAdd...) {
		if hv.Header == nil {
			return nil, errors.New("a header to add has no header")
		}
		if v := hv.Header.Value; strings.Contains(v, "%") && v != PeerURISAN {
			return nil, fmt.Errorf("header value %q: only %s is supported", v, PeerURISAN)
		}
		r.HeadersToAdd = append(r.HeadersToAdd, HeaderValue{Key: strings.ToLower(hv.Header.Key), Value: hv.Header.Value})
	}
	return r, nil
}

// maxSplitClusters bounds a route's weighted clusters (picking walks them).
const maxSplitClusters = 64

// compileSplit reads weighted_clusters as Envoy does: the weights' sum
// (above 0) is the total, a cluster of weight 0 gets nothing, and the
// deprecated total_weight, when set, must equal the sum.
func compileSplit(wc *xdswire.WeightedCluster) (*Split, error) {
	if wc.Refused != "" {
		return nil, fmt.Errorf("weighted_clusters %s is not supported (each request picks at random)", wc.Refused)
	}
	switch {
	case len(wc.Clusters) == 0:
		return nil, errors.New("weighted_clusters has no clusters")
	case len(wc.Clusters) > maxSplitClusters:
		return nil, fmt.Errorf("weighted_clusters has %d clusters; the limit is %d", len(wc.Clusters), maxSplitClusters)
	}
	s := &Split{}
	var sum uint64
	for _, c := range wc.Clusters {
		switch {
		case c.Refused != "":
			return nil, fmt.Errorf("weighted cluster %q: %s is not supported", c.Name, c.Refused)
		case c.Name == "":
			return nil, errors.New("a weighted cluster has no name")
		}
		var w uint32
		if c.Weight != nil {
			w = *c.Weight
		}
		sum += uint64(w)
		s.Clusters = append(s.Clusters, WeightedCluster{Name: c.Name, Weight: w})
	}
	switch {
	case sum == 0:
		return nil, errors.New("weighted_clusters: the weights add up to 0")
	case sum > math.MaxUint32:
		return nil, fmt.Errorf("weighted_clusters: the weights add up to %d, above %d", sum, uint32(math.MaxUint32))
	case wc.TotalWeight != nil && *wc.TotalWeight != 0 && uint64(*wc.TotalWeight) != sum:
		return nil, fmt.Errorf("weighted_clusters: total_weight %d is not the sum of the weights, %d", *wc.TotalWeight, sum)
	}
	s.Total = uint32(sum)
	return s, nil
}

// defaultLimits are Envoy's circuit-breaker thresholds when a cluster sets
// none.
var defaultLimits = Limits{MaxConnections: 1024, MaxPendingRequests: 1024, MaxRequests: 1024, MaxRetries: 3}

// defaultRouteTimeout is Envoy's route timeout when none is set.
const defaultRouteTimeout = 15 * time.Second

func compileRetry(rp *xdswire.RetryPolicy) (*RetryPolicy, error) {
	out := &RetryPolicy{NumRetries: valueOr(rp.NumRetries, 1), PerTryTimeout: rp.PerTryTimeout.D(), BaseInterval: 25e6, MaxInterval: 250e6}
	if b := rp.RetryBackOff; b != nil {
		out.BaseInterval = b.BaseInterval.D()
		if b.MaxInterval != nil {
			out.MaxInterval = b.MaxInterval.D()
		} else {
			out.MaxInterval = 10 * out.BaseInterval
		}
	}
	if rp.Unsupported != "" {
		return nil, fmt.Errorf("retry policy %s is not supported", rp.Unsupported)
	}
	// Envoy's conditions, with Envoy's meaning (router filter,
	// x-envoy-retry-on): 5xx and gateway-error include connect failures and
	// resets; reset includes connect failures.
	for _, cond := range strings.Split(rp.RetryOn, ",") {
		switch strings.TrimSpace(cond) {
		case "":
		case "connect-failure":
			out.On.ConnectFailure = true
		case "reset":
			out.On.Reset = true
		case "5xx":
			out.On.Status5xx, out.On.Reset = true, true
		case "gateway-error":
			out.On.GatewayError, out.On.Reset = true, true
		case "retriable-status-codes":
			out.On.StatusCodes = append(out.On.StatusCodes, rp.RetriableStatusCodes...)
		case "retriable-4xx":
			out.On.StatusCodes = append(out.On.StatusCodes, 409) // Envoy's: only 409 is safe to retry
		default:
			code, ok := GRPCConditions[strings.TrimSpace(cond)]
			if !ok {
				return nil, fmt.Errorf("retry condition %q is not supported (the proxy retries on connect-failure, reset, 5xx, gateway-error, retriable-4xx, retriable-status-codes, and the gRPC statuses cancelled, deadline-exceeded, internal, resource-exhausted and unavailable)", cond)
			}
			out.On.GRPCStatus |= 1 << code
		}
	}
	return out, nil
}

// compileOutlier reads outlier detection with Envoy's defaults and
// meaning: consecutive 5xx and local-origin failures, each enforced fully
// or not at all. Detection the proxy does not run (gateway failures, failure
// percentage, success rate when asked for explicitly) is refused; success
// rate left unset — on by default in Envoy, where it acts on clusters of at
// least 5 hosts with 100 requests each per interval — is not run (the
// control plane turns it off for Envoy too).
func compileOutlier(od *xdswire.OutlierDetection) (*Outlier, error) {
	enforced := func(name string, v *uint32, def uint32) (bool, error) {
		p := valueOr(v, def)
		if p > 100 {
			return false, fmt.Errorf("outlier detection %s of %d%% is not a percentage", name, p)
		}
		return allOrNone("outlier detection "+name, float64(p)/100)
	}
	for _, off := range []struct {
		name string
		v    *uint32
	}{
		{"enforcing_success_rate", od.EnforcingSuccessRate},
		{"enforcing_local_origin_success_rate", od.EnforcingLocalOriginSuccessRate},
		{"enforcing_consecutive_gateway_failure", od.EnforcingConsecutiveGatewayFailure},
		{"enforcing_failure_percentage", od.EnforcingFailurePercentage},
		{"enforcing_failure_percentage_local_origin", od.EnforcingFailurePercentageLocalOrigin},
	} {
		if off.v != nil && *off.v > 0 {
			return nil, fmt.Errorf("outlier detection %s is not supported (the proxy ejects on consecutive 5xx and local failures)", off.name)
		}
	}
	on5xx, err := enforced("enforcing_consecutive_5xx", od.EnforcingConsecutive5xx, 100)
	if err != nil {
		return nil, err
	}
	onLocal, err := enforced("enforcing_consecutive_local_origin_failure", od.EnforcingConsecutiveLocalOriginFailure, 100)
	if err != nil {
		return nil, err
	}
	o := &Outlier{
		Split:              od.SplitExternalLocalOriginErrors,
		Interval:           durOr(od.Interval.D(), 10e9),
		BaseEjectionTime:   durOr(od.BaseEjectionTime.D(), 30e9),
		MaxEjectionTime:    durOr(od.MaxEjectionTime.D(), 300e9),
		MaxEjectionPercent: valueOr(od.MaxEjectionPercent, 10),
	}
	if on5xx {
		o.Consecutive5xx = valueOr(od.Consecutive5xx, 5)
	}
	if onLocal && o.Split {
		o.ConsecutiveLocalFailure = valueOr(od.ConsecutiveLocalOriginFailure, 5)
	}
	return o, nil
}

func compileCluster(cl *xdswire.Cluster, endpoints map[string]*xdswire.ClusterLoadAssignment) (*Cluster, error) {
	c := &Cluster{Name: cl.Name, ConnectTimeout: cl.ConnectTimeout.D()}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 5e9
	}
	switch cl.LBPolicy {
	case xdswire.RoundRobin:
	case xdswire.LeastRequest:
		c.LeastRequest = true
		if lr := cl.LeastRequestLBConfig; lr != nil {
			if lr.Unsupported != "" {
				return nil, fmt.Errorf("cluster %s: least-request %s is not supported", cl.Name, lr.Unsupported)
			}
			if n := valueOr(lr.ChoiceCount, 2); n != 2 {
				return nil, fmt.Errorf("cluster %s: least-request choice_count %d is not supported (2)", cl.Name, n)
			}
		}
	default:
		return nil, fmt.Errorf("load-balancing policy %v is not supported", cl.LBPolicy)
	}
	if cl.Unsupported != "" {
		return nil, fmt.Errorf("%s is not supported (EDS or STATIC)", cl.Unsupported)
	}
	if cl.Refused != "" {
		return nil, fmt.Errorf("%s is not supported", cl.Refused)
	}
	var cla *xdswire.ClusterLoadAssignment
	switch cl.Type {
	case xdswire.EDS:
		if cl.EDSClusterConfig != nil {
			c.EDS = cl.EDSClusterConfig.ServiceName
		}
		if c.EDS == "" {
			c.EDS = cl.Name
		}
		cla = endpoints[c.EDS] // nil until it arrives: no endpoints yet
		c.Waiting = cla == nil
	case xdswire.Static:
		cla = cl.LoadAssignment
	case xdswire.LogicalDNS:
		cla = cl.LoadAssignment
		if n := countEndpoints(cla); n != 1 {
			return nil, fmt.Errorf("cluster %s: a LOGICAL_DNS cluster needs exactly one endpoint, the host name to resolve (it has %d)", cl.Name, n)
		}
	default:
		return nil, fmt.Errorf("discovery type %v is not supported (EDS, STATIC, or LOGICAL_DNS for a service outside the mesh)", cl.Type)
	}
	// Thresholds not set are Envoy's defaults, as for a cluster with no
	// circuit breakers at all.
	c.Limits = defaultLimits
	if cb := cl.CircuitBreakers; cb != nil {
		for _, t := range cb.Thresholds {
			if t.Refused != "" {
				return nil, fmt.Errorf("circuit breaker %s is not supported", t.Refused)
			}
			if t.Priority != xdswire.PriorityDefault {
				continue
			}
			c.Limits = Limits{
				MaxConnections:     valueOr(t.MaxConnections, defaultLimits.MaxConnections),
				MaxPendingRequests: valueOr(t.MaxPendingRequests, defaultLimits.MaxPendingRequests),
				MaxRequests:        valueOr(t.MaxRequests, defaultLimits.MaxRequests),
				MaxRetries:         valueOr(t.MaxRetries, defaultLimits.MaxRetries),
			}
		}
	}
	c.PanicThreshold = 50
	if cc := cl.CommonLBConfig; cc != nil && cc.HealthyPanicThreshold != nil {
		v := cc.HealthyPanicThreshold.Value
		if !(v >= 0 && v <= 100) {
			return nil, fmt.Errorf("cluster %s: healthy_panic_threshold %v is not a percentage", cl.Name, v)
		}
		c.PanicThreshold = v
	}
	if od := cl.OutlierDetection; od != nil {
		o, err := compileOutlier(od)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: %w", cl.Name, err)
		}
		c.Outlier = o
	}
	if err := c.setTransport(cl); err != nil {
		return nil, err
	}
	if cla != nil && cla.Refused != "" {
		return nil, fmt.Errorf("endpoints: %s is not supported", cla.Refused)
	}
	if c.EDS != "" && !c.Waiting && staleFor(cla, c.Transport) {
		// The assignment predates the cluster's transport (its instances
		// moved between QUIC and TCP: CDS and EDS arrive apart): not
		// arrived yet, as far as this cluster goes.
		c.Waiting, cla = true, nil
	}
	for _, loc := range endpointsOf(cla) {
		if loc.Refused != "" {
			return nil, fmt.Errorf("endpoints: %s is not supported", loc.Refused)
		}
		var region, zone string
		if loc.Locality != nil {
			region, zone = loc.Locality.Region, loc.Locality.Zone
		}
		for _, lb := range loc.LBEndpoints {
			var a *xdswire.Address
			if lb.Endpoint != nil {
				a = lb.Endpoint.Address
			}
			sa, err := socketAddress(a)
			if err != nil {
				return nil, fmt.Errorf("an endpoint: %w", err)
			}
			if cl.Type == xdswire.LogicalDNS && net.ParseIP(sa.Address) != nil {
				return nil, fmt.Errorf("cluster %s: a LOGICAL_DNS endpoint must be a host name, not %s", cl.Name, sa.Address)
			}
			if udp := sa.Protocol == xdswire.UDP; udp != (c.Transport == TransportQUIC) {
				return nil, fmt.Errorf("endpoint %s: a %s cluster needs %s addresses", sa.Address, c.Transport, map[bool]string{true: "UDP", false: "TCP"}[!udp])
			}
			c.Endpoints = append(c.Endpoints, Endpoint{
				Address: hostPort(sa.Address, sa.PortValue),
				Weight:  max(valueOr(lb.LoadBalancingWeight, 1), 1),
				Healthy: healthy(lb.HealthStatus),
				Region:  region,
				Zone:    zone,
			})
		}
	}
	return c, nil
}

// countEndpoints counts cla's endpoints.
func countEndpoints(cla *xdswire.ClusterLoadAssignment) int {
	n := 0
	for _, loc := range endpointsOf(cla) {
		n += len(loc.LBEndpoints)
	}
	return n
}

// staleFor reports whether an endpoint of cla has an address of the
// other protocol than transport's (UDP for QUIC, TCP otherwise).
func staleFor(cla *xdswire.ClusterLoadAssignment, transport string) bool {
	for _, loc := range endpointsOf(cla) {
		for _, lb := range loc.LBEndpoints {
			if lb.Endpoint == nil {
				continue
			}
			if sa, err := socketAddress(lb.Endpoint.Address); err == nil && (sa.Protocol == xdswire.UDP) != (transport == TransportQUIC) {
				return true
			}
		}
	}
	return false
}

func endpointsOf(cla *xdswire.ClusterLoadAssignment) []*xdswire.LocalityLBEndpoints {
	if cla == nil {
		return nil
	}
	return cla.Endpoints
}

func healthy(h xdswire.HealthStatus) bool {
	switch h {
	case xdswire.HealthUnknown, xdswire.HealthHealthy, xdswire.HealthDegraded:
		return true
	}
	return false
}

// setTransport reads the cluster's transport socket and protocol options.
func (c *Cluster) setTransport(cl *xdswire.Cluster) error {
	if opts, ok := cl.TypedExtensionProtocolOptions["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; ok {
		po, err := typed[*xdswire.HTTPProtocolOptions](opts, xdswire.HTTPProtocolOptionsType)
		if err != nil {
			return err
		}
		if po.Refused != "" || po.Unsupported != "" {
			return fmt.Errorf("HTTP protocol options %s is not supported", po.Refused+po.Unsupported)
		}
		if co := po.CommonHTTPProtocolOptions; co != nil && co.Refused != "" {
			return fmt.Errorf("HTTP protocol options %s is not supported", co.Refused)
		}
		c.HTTP2 = po.ExplicitHTTPConfig != nil && po.ExplicitHTTPConfig.HTTP2ProtocolOptions != nil
	}
	if cl.Type == xdswire.LogicalDNS {
		return c.setExternal(cl)
	}
	ts := cl.TransportSocket
	if ts == nil {
		c.Transport = TransportPlain
		if cl.Type != xdswire.Static {
			return errors.New("a plaintext cluster must be a static one (the local app)")
		}
		for _, loc := range endpointsOf(cl.LoadAssignment) {
			for _, lb := range loc.LBEndpoints {
				var host string
				if lb.Endpoint != nil && lb.Endpoint.Address != nil && lb.Endpoint.Address.SocketAddress != nil {
					host = lb.Endpoint.Address.SocketAddress.Address
				}
				if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
					return errors.New("a plaintext cluster may only reach loopback")
				}
			}
		}
		return nil
	}
	var up *xdswire.UpstreamTLSContext
	switch typeURL(ts.TypedConfig) {
	case xdswire.QUICUpstreamType:
		q, err := typed[*xdswire.QUICUpstreamTransport](ts.TypedConfig, xdswire.QUICUpstreamType)
		if err != nil {
			return err
		}
		c.Transport, up = TransportQUIC, q.UpstreamTLSContext
	case xdswire.UpstreamTLSType:
		var err error
		if up, err = typed[*xdswire.UpstreamTLSContext](ts.TypedConfig, xdswire.UpstreamTLSType); err != nil {
			return err
		}
		c.Transport = TransportTLS
	default:
		return fmt.Errorf("transport socket %s is not supported", typeURL(ts.TypedConfig))
	}
	if up == nil {
		return errors.New("the transport socket has no upstream TLS context")
	}
	ctc := up.CommonTLSContext
	if err := checkCommonTLS(ctc, c.Transport == TransportQUIC, false); err != nil {
		return err
	}
	v := ctc.CombinedValidationContext
	if v == nil || ctc.Unsupported != "" {
		return errors.New("the upstream validation context must combine SDS ROOTCA with a SAN matcher")
	}
	if v.ValidationContextSDSSecretConfig == nil || v.ValidationContextSDSSecretConfig.Name != rootSecret {
		return fmt.Errorf("the trust bundle must come by SDS as %q", rootSecret)
	}
	var sans []*xdswire.SubjectAltNameMatcher
	if d := v.DefaultValidationContext; d != nil {
		if r := refusedCheck(d); r != "" {
			return fmt.Errorf("upstream certificate check %s is not supported", r)
		}
		if d.TrustedCA != nil {
			return errors.New("the upstream's roots must be the trust bundle (SDS ROOTCA), not trusted_ca")
		}
		sans = d.MatchTypedSubjectAltNames
	}
	if len(sans) != 1 || sans[0].SANType != xdswire.SANURI || sans[0].Matcher == nil || sans[0].Matcher.Exact == nil || *sans[0].Matcher.Exact == "" {
		return errors.New("the upstream must be matched by exactly one exact URI SAN (its SPIFFE ID)")
	}
	c.SAN = *sans[0].Matcher.Exact
	return nil
}

// refusedCheck names the first check of a listener's or cluster's own
// validation context the proxy cannot honour: what the decoder refused,
// or a revocation list (the proxy takes the one in the trust bundle's
// secret, for every peer alike).
func refusedCheck(d *xdswire.CertificateValidationContext) string {
	switch {
	case d.Refused != "":
		return d.Refused
	case d.CRL != nil || d.OnlyVerifyLeafCertCRL:
		return "crl (outside the trust bundle's secret " + rootSecret + ")"
	case d.SystemRootCerts != nil:
		return "system_root_certs (mesh peers are checked against the trust bundle)"
	}
	return ""
}

func (c *Config) addSecret(s *xdswire.Secret) error {
	switch {
	case s.Unsupported != "":
		return fmt.Errorf("secret type %s is not supported", s.Unsupported)
	case s.TLSCertificate != nil:
		t := s.TLSCertificate
		if t.Refused != "" {
			return fmt.Errorf("certificate %s is not supported", t.Refused)
		}
		var chain, key string
		if t.CertificateChain != nil {
			chain = t.CertificateChain.Filename
		}
		if t.PrivateKey != nil {
			key = t.PrivateKey.Filename
		}
		if chain == "" || key == "" {
			return errors.New("the certificate must name its files (the control plane never sends keys)")
		}
		c.Certificate = &CertFiles{Chain: chain, Key: key}
		if t.WatchedDirectory != nil {
			c.Certificate.Dir = t.WatchedDirectory.Path
		}
	case s.ValidationContext != nil:
		if s.ValidationContext.Refused != "" {
			return fmt.Errorf("trust bundle check %s is not supported", s.ValidationContext.Refused)
		}
		if len(s.ValidationContext.MatchTypedSubjectAltNames) > 0 {
			return errors.New("SAN matchers in the trust bundle secret are not supported (the clusters carry them)")
		}
		var roots []byte
		if s.ValidationContext.TrustedCA != nil {
			roots = s.ValidationContext.TrustedCA.InlineBytes
		}
		if len(roots) == 0 {
			return errors.New("the trust bundle must be inline")
		}
		c.Roots = roots
		if crl := s.ValidationContext.CRL; crl != nil {
			if !s.ValidationContext.OnlyVerifyLeafCertCRL {
				return errors.New("a revocation list needs only_verify_leaf_cert_crl: the proxy checks peers' leaf certificates against it, Envoy without it every CA of the chain")
			}
			if len(crl.InlineBytes) == 0 {
				return errors.New("the revocation list must be inline bytes")
			}
			r, err := identity.NewRevocations(crl.InlineBytes)
			if err != nil {
				return err
			}
			c.Revocations = r
		}
	default:
		return errors.New("the secret holds neither a certificate nor a trust bundle")
	}
	return nil
}

// typed returns the message a typed config holds, which must be of type
// url.
func typed[T any](a *xdswire.Any, url string) (T, error) {
	var zero T
	if a == nil {
		return zero, errors.New("typed config is missing")
	}
	if a.TypeURL != url {
		return zero, fmt.Errorf("typed config is %s, want %s", a.TypeURL, url)
	}
	m, ok := a.Msg.(T)
	if !ok {
		return zero, fmt.Errorf("typed config %s was not decoded", url)
	}
	return m, nil
}

func typeURL(a *xdswire.Any) string {
	if a == nil {
		return ""
	}
	return a.TypeURL
}

// valueOr returns *v, or def when the field is not set.
func valueOr(v *uint32, def uint32) uint32 {
	if v != nil {
		return *v
	}
	return def
}

func durOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
