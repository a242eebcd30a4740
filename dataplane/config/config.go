// Package config compiles the Envoy resources a sidecar receives over xDS
// into the immutable routing table its proxy serves from. It is pure: no
// I/O, no clocks. What the built-in proxy cannot honour is an error, so the
// xDS client NACKs it instead of serving something else.
package config

import (
	"crypto/x509"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/micromesh/micromesh/identity"
)

// Transports to upstream clusters.
const (
	TransportTLS   = "tls"   // HTTP/2 over TLS 1.3, mTLS
	TransportQUIC  = "quic"  // HTTP/3 over QUIC, mTLS
	TransportPlain = "plain" // loopback to the local app: HTTP/1.1, or h2c
	// TransportExternal reaches a service outside the mesh: HTTP/1.1 (or
	// HTTP/2 for gRPC) over TLS 1.2 or 1.3, the server checked by its DNS
	// name (Cluster.External).
	TransportExternal = "external"
)

// Config is everything the proxy serves by, at one version. It is never
// modified after Compile returns; a new one replaces it.
type Config struct {
	Outbound    *Outbound
	Inbound     *Inbound // TCP + TLS
	InboundQUIC *Inbound // UDP + QUIC
	// Tunnels are the loopback listeners of the TCP services the app
	// reaches (Envoy's tcp_proxy with tunneling_config), sorted by name.
	Tunnels  []*Tunnel
	Routes   map[string]*RouteTable
	Clusters map[string]*Cluster
	// Certificate is the proxy's certificate files, from SDS.
	Certificate *CertFiles
	// Roots is the trust bundle (PEM), from SDS.
	Roots []byte
	// Revocations is the CA's revocation list, from the trust bundle's SDS
	// secret; nil: none.
	Revocations *identity.Revocations
	// clustersReceived: Resources.ClustersReceived.
	clustersReceived bool
}

// Missing names what the config refers to and has not received yet: the
// outbound listener's route configuration, the clusters routes send to,
// the endpoints of EDS clusters. A proxy holds the app's first calls until
// nothing is missing, as Envoy's listeners warm before they take traffic.
func (c *Config) Missing() []string {
	var out []string
	if c.Outbound != nil && c.Outbound.Route != "" && c.Routes[c.Outbound.Route] == nil {
		out = append(out, "route configuration "+c.Outbound.Route)
	}
	for _, cl := range c.Clusters {
		if cl.Waiting {
			out = append(out, "endpoints of "+cl.Name)
		}
	}
	if len(c.Tunnels) > 0 && !c.clustersReceived {
		// A tunnel's listener came before the clusters (each type is its
		// own response): hold the app's first connections for them, as
		// Envoy, which takes listeners only once it has its clusters.
		// Once they came, a tunnel's cluster that is not among them is a
		// service not in the mesh: its connections are closed at once.
		out = append(out, "clusters (the tunnels')")
	}
	unknown := map[string]bool{}
	for _, t := range c.Routes {
		for _, r := range t.Routes() {
			for _, name := range r.clusters() {
				if c.Clusters[name] == nil && !unknown[name] {
					unknown[name] = true
					out = append(out, "cluster "+name)
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

// Tunnel is a loopback listener whose connections each go to Cluster in
// a CONNECT stream to Authority: a TCP service reached through the mesh.
type Tunnel struct {
	Name    string
	Address string // host:port, loopback
	// Cluster is where connections go, or "" when Split picks one per
	// connection (a service's versions).
	Cluster   string
	Split     *Split
	Authority string
	// IdleTimeout ends a connection that carried nothing either way for
	// that long (0: never).
	IdleTimeout time.Duration
	// ConnectAttempts is how many times the tunnel is tried, on another
	// endpoint each if there is one, before the connection is given up
	// (Envoy's max_connect_attempts; at least 1).
	ConnectAttempts uint32
}

// TunnelAt returns the tunnel listening at addr, nil if none does.
func (c *Config) TunnelAt(addr string) *Tunnel {
	for _, t := range c.Tunnels {
		if t.Address == addr {
			return t
		}
	}
	return nil
}

// DefaultTunnelIdleTimeout is a tunnel's idle timeout when its tcp_proxy
// sets none (Envoy's).
const DefaultTunnelIdleTimeout = time.Hour

// Outbound is the loopback listener the app sends its calls to.
type Outbound struct {
	Name    string
	Address string // host:port
	Route   string // route configuration, by name (RDS)
	// RequestID: a request with no x-request-id gets one (a random UUID),
	// as Envoy's generate_request_id (on unless the listener turns it off).
	RequestID bool
	// Tracing, if set, traces the listener's requests (CLIENT spans).
	Tracing *Tracing
	// AccessLog: the listener logs every request (Envoy's stdout or
	// stderr access logger).
	AccessLog bool
	// Tap, if set, sends each request to the control plane as an OTLP
	// log record (Envoy's OpenTelemetry access logger).
	Tap *Tap
	// RateLimit is the listener's local rate limit, nil for none;
	// RateLimitFilter the rate limit filter's name ("" without one: routes'
	// own limits need it), RateLimitBeforeRBAC whether it comes before the
	// RBAC filter (requests the rules deny draw tokens too).
	RateLimit           *RateLimit
	RateLimitFilter     string
	RateLimitBeforeRBAC bool
	// Fault is the listener's fault injection, nil for none; FaultFilter
	// the fault filter's name ("" without one: routes' own settings need
	// it), FaultFirst whether it comes before the rate limit filter.
	Fault       *Fault
	FaultFilter string
	FaultFirst  bool
}

// RateLimit is Envoy's local rate limit filter on a listener: a token
// bucket of MaxTokens (full at the start), topped up with TokensPerFill
// every FillInterval; a request that finds it empty is answered Status.
// Each listener has its own bucket, as each Envoy filter instance does.
type RateLimit struct {
	Name          string // stat_prefix
	MaxTokens     uint32
	TokensPerFill uint32
	FillInterval  time.Duration
	Status        int
	// Enforced: an empty bucket refuses the request; if not (Envoy's
	// filter_enforced 0 %), it is only counted.
	Enforced bool
	// ResourceExhausted answers gRPC callers RESOURCE_EXHAUSTED (which
	// callers do not retry) instead of UNAVAILABLE.
	ResourceExhausted bool
}

// Inbound is a listener taking mTLS traffic from other proxies.
type Inbound struct {
	Name    string
	Address string
	UDP     bool
	// ALPN protocols offered ("h3"; or "h2", "http/1.1").
	ALPN []string
	// RequireClientCert is always true for mesh listeners.
	RequireClientCert bool
	RBAC              *RBAC // nil: no RBAC filter, everything allowed
	// JWT verifies accounts' access tokens ahead of RBAC (nil: no
	// jwt_authn filter).
	JWT   *JWT
	Route *RouteTable
	// XFCC: the x-forwarded-client-cert header a client sent is always
	// removed (Envoy's SANITIZE); with SetXFCC the proxy sets its own:
	// By (this workload), Hash (of the client certificate), URI (the
	// caller's SPIFFE ID) when XFCCURI (Envoy's SANITIZE_SET).
	SetXFCC bool
	XFCCURI bool
	// RequestID: as Outbound.RequestID (a caller's x-request-id is kept).
	RequestID bool
	// Tracing: as Outbound.Tracing (SERVER spans).
	Tracing *Tracing
	// AccessLog: as Outbound.AccessLog.
	AccessLog bool
	// Tap, if set, sends each request to the control plane as an OTLP
	// log record (Envoy's OpenTelemetry access logger).
	Tap *Tap
	// RateLimit, RateLimitFilter, RateLimitBeforeRBAC: as Outbound's.
	RateLimit           *RateLimit
	RateLimitFilter     string
	RateLimitBeforeRBAC bool
	// Connect: the listener takes CONNECT requests (its connection
	// manager's upgrade_configs); without it they are refused (403, as
	// Envoy's upgrade_failed).
	Connect bool
}

// RouteTable routes by authority, then path.
type RouteTable struct {
	Name     string
	exact    map[string][]*Route
	wildcard []*Route // "*"
	// Hosts lists the domains, for messages ("reachable: …").
	Hosts []string
	// HeaderConditions: some route's conditions read headers
	// (LookupRequest needs the request's).
	HeaderConditions bool
}

// Lookup returns the route of authority host (port already stripped) and
// path for a request without headers (LookupRequest).
func (t *RouteTable) Lookup(host, path string) (r *Route, known bool) {
	return t.LookupRequest(host, Request{Path: path})
}

// LookupRequest returns the route of authority host (port already
// stripped) for request q (its method, path and headers; Principal
// unused): the first of the host's routes whose match takes the path and
// whose header conditions hold, as Envoy does; nil if the host has none
// (known reports whether it is one of the table's hosts).
func (t *RouteTable) LookupRequest(host string, q Request) (r *Route, known bool) {
	routes, ok := t.exact[host]
	if !ok {
		if t.wildcard == nil {
			return nil, false
		}
		routes = t.wildcard
	}
	connect := q.Method == "CONNECT"
	for _, r := range routes {
		if r.Match.Connect == connect && (connect || r.Match.matches(q.Path)) && r.conditionsMatch(q) {
			return r, true
		}
	}
	return nil, true
}

// HasHost reports whether host is one of the table's domains (not one
// its "*" takes).
func (t *RouteTable) HasHost(host string) bool {
	_, ok := t.exact[host]
	return ok
}

// Routes returns every route of the table (for state kept per route).
func (t *RouteTable) Routes() []*Route {
	var out []*Route
	for _, rs := range t.exact {
		out = append(out, rs...)
	}
	return append(out, t.wildcard...)
}

// PathMatch is a route's condition on the path (without the query): an
// exact path, a prefix, a prefix of whole segments (Envoy's
// path_separated_prefix: "/api" takes "/api" and "/api/x", not "/apix"),
// with or without case; or a regular expression the whole path matches
// (Regex, with its source in Path).
//
// Connect (Envoy's connect_matcher) matches CONNECT requests, which no other
// path match takes.
type PathMatch struct {
	Path    string
	Prefix  bool // Path is a prefix
	Segment bool // Path is a prefix of whole segments
	Fold    bool // case-insensitive
	Regex   *regexp.Regexp
	Connect bool
}

// conditionsMatch reports whether every condition of r holds for q.
func (r *Route) conditionsMatch(q Request) bool {
	for _, c := range r.Conditions {
		if !c(q) {
			return false
		}
	}
	return true
}

func (m PathMatch) matches(path string) bool {
	switch {
	case m.Regex != nil:
		return m.Regex.MatchString(path)
	case m.Prefix || m.Segment:
		if len(path) < len(m.Path) || !(path[:len(m.Path)] == m.Path || m.Fold && strings.EqualFold(path[:len(m.Path)], m.Path)) {
			return false
		}
		return !m.Segment || len(path) == len(m.Path) || path[len(m.Path)] == '/'
	default:
		return path == m.Path || m.Fold && strings.EqualFold(path, m.Path)
	}
}

// Route is where matched requests go and how.
type Route struct {
	VirtualHost string
	Match       PathMatch
	// Conditions are what else the request must hold, all of them: its
	// headers (Envoy's HeaderMatcher), query parameters, being gRPC, or
	// falling in a share of the requests.
	Conditions []func(Request) bool
	// Cluster is where the route's requests go, or "" when Split picks
	// one per request.
	Cluster string
	Split   *Split
	// Timeout bounds the whole request, retries included; 0: none.
	Timeout time.Duration
	Retry   *RetryPolicy
	// HostRewrite replaces the request's authority upstream ("": kept).
	HostRewrite string
	// HeadersToRemove are removed from the request, then HeadersToAdd set.
	HeadersToRemove []string
	HeadersToAdd    []HeaderValue
	// RateLimitFilter names the local rate limit filter whose settings
	// this route replaces ("" for none): on a listener with that filter,
	// the route's requests draw from RateLimit, the route's own bucket
	// (nil: not limited), instead of the listener's.
	RateLimitFilter string
	RateLimit       *RateLimit
	// FaultFilter names the fault filter whose settings this route
	// replaces ("" for none), with Fault (never nil then).
	FaultFilter string
	Fault       *Fault
	// Mirrors copy a share of the route's requests to other clusters.
	Mirrors []Mirror
	// Tunnel ends the route's CONNECT requests here (Envoy's
	// connect_config): the stream's bytes go to the cluster over TCP;
	// IdleTimeout ends a tunnel that carried nothing either way for that
	// long (0: never).
	Tunnel      bool
	IdleTimeout time.Duration
}

// Mirror copies a share of a route's requests to another cluster and
// drops its answers (Envoy's request_mirror_policies): the copy leaves
// with the request and never holds up, retries or changes the original's
// answer. A cluster the proxy does not have is skipped, as Envoy does.
type Mirror struct {
	Cluster string
	Share   Share
	// Host is the copies' authority, or "" for the request's with -shadow
	// appended to its host (Envoy's way: the mirror's logs tell copies
	// from originals); KeepHost leaves the request's as it is.
	Host     string
	KeepHost bool
}

// ShadowHost is the authority a copy of a request to host carries:
// "-shadow" appended to the host, before any port.
func (m Mirror) ShadowHost(host string) string {
	switch {
	case m.Host != "":
		return m.Host
	case m.KeepHost || host == "":
		return host
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		return host[:i] + "-shadow" + host[i:]
	}
	return host + "-shadow"
}

// Split spreads a route's requests over clusters in proportion to their
// weights (Envoy's weighted_clusters): each request picks one, at random,
// and its retries stay there.
type Split struct {
	Clusters []WeightedCluster
	// Total is the sum of the weights, above 0.
	Total uint32
}

// WeightedCluster is a cluster of a Split and its share.
type WeightedCluster struct {
	Name   string
	Weight uint32
}

// clusters are the clusters r may send to.
func (r *Route) clusters() []string {
	if r.Split == nil {
		return []string{r.Cluster}
	}
	out := make([]string, len(r.Split.Clusters))
	for i, c := range r.Split.Clusters {
		out[i] = c.Name
	}
	return out
}

// Pick returns the cluster whose share holds n, for n in [0, Total).
func (s *Split) Pick(n uint32) string {
	for _, c := range s.Clusters {
		if n < c.Weight {
			return c.Name
		}
		n -= c.Weight
	}
	return s.Clusters[len(s.Clusters)-1].Name
}

// HeaderValue is a header to set; Value may be "%DOWNSTREAM_PEER_URI_SAN%".
type HeaderValue struct{ Key, Value string }

// PeerURISAN is the Envoy header variable for the caller's SPIFFE ID.
const PeerURISAN = "%DOWNSTREAM_PEER_URI_SAN%"

// RetryPolicy says when and how often to retry.
type RetryPolicy struct {
	On            RetryOn
	NumRetries    uint32
	PerTryTimeout time.Duration
	BaseInterval  time.Duration
	MaxInterval   time.Duration
}

// RetryOn is the set of conditions that trigger a retry.
type RetryOn struct {
	ConnectFailure bool     // could not connect (dial or handshake)
	Reset          bool     // no answer at all: reset, disconnect, connect failure
	Status5xx      bool     // any 5xx answer
	GatewayError   bool     // a 502, 503 or 504 answer
	StatusCodes    []uint32 // these answers (retriable-status-codes)
	// GRPCStatus holds bit n for each gRPC status n retried (Envoy's
	// cancelled, deadline-exceeded, internal, resource-exhausted and
	// unavailable), read from a trailers-only answer's headers as Envoy
	// reads it.
	GRPCStatus uint32
}

// GRPCConditions are Envoy's gRPC retry conditions and their statuses.
var GRPCConditions = map[string]int{"cancelled": 1, "deadline-exceeded": 4, "resource-exhausted": 8, "internal": 13, "unavailable": 14}

// GRPC reports whether an answer with gRPC status code is retried.
func (o *RetryOn) GRPC(code int) bool { return code > 0 && code < 32 && o.GRPCStatus&(1<<code) != 0 }

// Status reports whether an answer with this status is retried.
func (o *RetryOn) Status(code int) bool {
	switch {
	case o.Status5xx && code >= 500 && code <= 599:
		return true
	case o.GatewayError && (code == 502 || code == 503 || code == 504):
		return true
	}
	for _, c := range o.StatusCodes {
		if int(c) == code {
			return true
		}
	}
	return false
}

// Cluster is a group of upstream endpoints.
type Cluster struct {
	Name      string
	Transport string
	// SAN is the SPIFFE ID the upstream's certificate must carry (mesh clusters).
	SAN string
	// HTTP2 asks for h2c to a plain (local) cluster.
	HTTP2        bool
	LeastRequest bool
	// PanicThreshold is Envoy's healthy panic threshold, a percentage:
	// below that share of available endpoints (healthy, not ejected), the
	// balancer picks among all of them. Envoy's default is 50.
	PanicThreshold float64
	ConnectTimeout time.Duration
	Limits         Limits
	Outlier        *Outlier
	Endpoints      []Endpoint
	// EDS names the endpoints resource; empty for a static cluster.
	EDS string
	// Waiting is true while the EDS resource has not arrived (an empty
	// one has: the cluster then has no endpoints).
	Waiting bool
	// External is how a cluster outside the mesh is reached
	// (TransportExternal); nil for others.
	External *ExternalTLS
}

// ExternalTLS is TLS to a server outside the mesh: the proxy presents no
// certificate, sends ServerName as SNI and checks the server's
// certificate for it against Roots (nil: the system's).
type ExternalTLS struct {
	ServerName string
	// RootsPEM is the roots as configured (nil: the system's), Roots
	// them parsed.
	RootsPEM   []byte
	Roots      *x509.CertPool
	MinVersion uint16 // tls.VersionTLS12 or tls.VersionTLS13
	MaxVersion uint16
}

// Limits are circuit-breaker thresholds; Compile fills in Envoy's defaults
// for those a cluster does not set (0 set explicitly: unlimited). The
// proxy applies MaxRequests and MaxRetries to every cluster, and
// MaxConnections and MaxPendingRequests to HTTP/1.1 pools (the app):
// HTTP/3 and HTTP/2 upstreams hold one multiplexed connection per
// endpoint.
type Limits struct {
	MaxConnections     uint32
	MaxPendingRequests uint32
	MaxRequests        uint32
	MaxRetries         uint32
}

// Outlier is outlier detection: when to eject an endpoint and for how long.
type Outlier struct {
	// Consecutive5xx ejects after that many 5xx answers in a row (and, when
	// Split is off, local failures counted as 5xx); 0: never.
	Consecutive5xx uint32
	// Split counts failures to connect or get an answer (local origin)
	// apart, against ConsecutiveLocalFailure (0: never), as Envoy's
	// split_external_local_origin_errors.
	Split                   bool
	ConsecutiveLocalFailure uint32
	Interval                time.Duration
	BaseEjectionTime        time.Duration
	MaxEjectionTime         time.Duration
	MaxEjectionPercent      uint32
}

// Endpoint is one upstream address.
type Endpoint struct {
	Address string // host:port
	Weight  uint32
	Healthy bool
	Region  string
	Zone    string
}

// CertFiles names the proxy's certificate and key files.
type CertFiles struct {
	Chain, Key, Dir string
}

func hostPort(host string, port uint32) string {
	return net.JoinHostPort(host, strconv.FormatUint(uint64(port), 10))
}
