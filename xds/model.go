// Package xds translates the mesh model into Envoy v3 resources with
// go-control-plane's types, scoped to one proxy. It is pure: no I/O, no
// clocks, deterministic output, so every resource can be golden-tested.
//
// Proxies come in three kinds, and the resources follow the kind:
//   - builtin: Micromesh's sidecar. Outbound and inbound listeners; clusters
//     to other built-in sidecars use HTTP/3 over QUIC, others HTTP/2 over TLS.
//   - envoy: the same shape, HTTP/2 over TLS everywhere (Envoy's QUIC lacks
//     client-certificate mTLS).
//   - proxyless: a gRPC client (gRFC A27/A28/A29): one API listener per
//     reachable service name, TLS from certificate-provider instances.
package xds

import "time"

// Proxy kinds.
const (
	KindBuiltin   = "builtin"
	KindEnvoy     = "envoy"
	KindProxyless = "proxyless"
)

// Protocols.
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http"
	// ProtocolTCP is a service that speaks its own protocol over TCP (a
	// database, a cache): callers reach it through an upstream listener of
	// their proxy, tunnelled in an HTTP CONNECT stream between the proxies
	// (Proxy.Upstreams).
	ProtocolTCP = "tcp"
)

// Health of an endpoint.
const (
	HealthPassing  = "passing"
	HealthWarning  = "warning"
	HealthCritical = "critical"
)

// SystemNamespace holds the mesh's platform services, reachable by every
// authenticated identity.
const SystemNamespace = "micromesh"

// Mesh is what the translation needs to know about the mesh at one moment.
type Mesh struct {
	TrustDomain string
	// Roots is the trust bundle, PEM.
	Roots []byte
	// Revocations is the CA's certificate revocation list, PEM; nil while
	// nothing is revoked. Proxies refuse the peers it lists.
	Revocations []byte
	// Services, sorted by namespace then name (Build sorts a copy if not).
	Services []Service
	// AccountKeys is the JWK set (JSON) the auth service signs accounts'
	// access tokens with: what proxies verify tokens with where a policy
	// asks for them (Policy.Scopes). Nil: no token verifies.
	AccountKeys []byte
	// Tracing, if set, has proxies trace requests (nil: none traced).
	Tracing *Tracing
	// Externals are the services outside the mesh that sidecars reach
	// for their apps, sorted by namespace then name.
	Externals []External
}

// Service is one service of the mesh.
type Service struct {
	Name      string
	Namespace string
	Protocol  string // grpc, http or tcp
	Policy    Policy
	// Routes override the policy's timeouts and retries for the requests
	// whose path they match, tried in order (PolicyFromMetadata sorts
	// them: exact paths, then prefixes longest first).
	Routes []RoutePolicy
	// Split spreads the service's requests over its versions (percentages
	// adding up to 100, sorted by version); nil: every instance alike.
	Split []VersionWeight
	// SplitHeader names a request header whose value, a version the split
	// names, sends the request to that version whatever the shares; "" for
	// none.
	SplitHeader string
	Endpoints   []Endpoint
	// Tapped: someone watches the service's requests (meshctl tap, the
	// dashboard), so its own proxies send each to the control plane
	// (Envoy's OpenTelemetry access logger) — set by the control plane
	// for as long as they watch, not a policy.
	Tapped bool
}

// VersionWeight is one version's share of a service's requests.
type VersionWeight struct {
	Version string
	Weight  uint32
}

// RoutePolicy is the timeouts and retries of the requests to one path, or
// to the paths under a prefix.
type RoutePolicy struct {
	Path          string
	Prefix        bool // Path is a prefix ("/pkg.Greeter/" for every method of a gRPC service)
	Timeout       time.Duration
	PerTryTimeout time.Duration
	Retries       uint32
	RetryOn       string // as Policy's
	// RateLimit and RateLimitBurst: the path's own limit at each instance
	// (0: the path draws from the service's, if any), as Policy's.
	RateLimit      uint32
	RateLimitBurst uint32
	// Fault is what callers inject into the path's calls (the service's
	// unless the path sets its own).
	Fault Fault
	// Mirror is where callers send a copy of the path's calls (the
	// service's unless the path sets its own).
	Mirror Mirror
	// AllowFrom lists callers admitted on this path alone, beside those
	// the service admits everywhere; DenyFrom callers refused on this path
	// whatever admits them (Policy's form).
	AllowFrom string
	DenyFrom  string
	// Scopes is what the path's requests need of an account's access
	// token (the service's unless the path sets its own; Policy's form).
	Scopes string
}

// Fault is fault injection into a service's calls, applied by each
// caller's proxy before the request leaves (Envoy's fault filter; gRPC's
// A33 for proxyless callers): a delay in a share of the calls, then an
// abort in a share. Shares are in parts per million.
type Fault struct {
	Delay      time.Duration // 0: none
	DelayShare uint32
	// Abort is the HTTP status aborted calls get (gRPC callers the status
	// it maps to), AbortGRPC the gRPC status instead (1–16); 0: none.
	Abort      uint32
	AbortGRPC  uint32
	AbortShare uint32
	// Header, when set, limits the fault to requests carrying that header
	// (testers opt in; other calls are untouched).
	Header string
}

// Active reports whether f injects anything.
func (f Fault) Active() bool {
	return f.Delay > 0 && f.DelayShare > 0 || (f.Abort > 0 || f.AbortGRPC > 0) && f.AbortShare > 0
}

// Mirror is shadow traffic: each caller's proxy sends a copy of a share
// of the service's requests to another service and drops its answers
// (Envoy's request_mirror_policies, Istio's mirror) — a new version tried
// on live traffic without answering any of it.
type Mirror struct {
	// Service is the service the copies go to; Namespace is its
	// namespace ("" for the mirrored service's own). Service "": none.
	Service   string
	Namespace string
	Share     uint32 // parts per million
}

// Active reports whether m mirrors anything.
func (m Mirror) Active() bool { return m.Service != "" && m.Share > 0 }

// Endpoint is one instance of a service.
type Endpoint struct {
	ID       string
	Address  string
	Port     uint32 // TCP: mTLS, HTTP/2 over TLS
	QUICPort uint32 // UDP: HTTP/3 over QUIC (built-in sidecars only)
	Kind     string
	Version  string
	Health   string
	Region   string
	Zone     string
	Weight   uint32
}

// Policy is a service's traffic policy, applied by its callers.
type Policy struct {
	Timeout       time.Duration // per request, including retries
	PerTryTimeout time.Duration
	Retries       uint32
	// RetryOn lists what is retried, comma-separated: Envoy's conditions
	// and HTTP statuses (PolicyFromMetadata checks and normalizes it); ""
	// for the default, connect failures, resets, 503 and gRPC UNAVAILABLE.
	RetryOn string
	// Circuit breakers, per caller.
	MaxConnections     uint32
	MaxPendingRequests uint32
	MaxRequests        uint32
	MaxRetries         uint32
	// Outlier detection.
	Consecutive5xx     uint32
	BaseEjectionTime   time.Duration
	MaxEjectionPercent uint32
	// LoadBalancer is "round_robin" or "least_request".
	LoadBalancer string
	// RateLimit bounds the requests each instance takes per second (its
	// own sidecar refuses the rest); 0 for none. RateLimitBurst is how
	// many it takes at once (0: RateLimit).
	RateLimit      uint32
	RateLimitBurst uint32
	// RateLimitShared makes the service's limits (its own and its paths')
	// the whole service's: each instance takes its share, the limit over
	// the number of instances that may take requests (Envoy's
	// local_cluster_rate_limit, computed here), so scaling out does not
	// raise it. False: each instance takes the whole limit.
	RateLimitShared bool
	// AccessLog has the service's own sidecars log every request they
	// take (Envoy's stdout access logger on the inbound listeners).
	AccessLog bool
	// Fault is injected into every call to the service (a path's own
	// replaces it for that path).
	Fault Fault
	// Mirror is where callers send a copy of the service's calls (a path's
	// own replaces it for that path).
	Mirror Mirror
	// AllowFrom lists callers beyond the service's namespace and the
	// platform's that its instances admit, DenyFrom callers they refuse
	// whatever else admits them: "name.namespace" or "*.namespace",
	// comma-separated, sorted (PolicyFromMetadata checks and sorts them);
	// "" for none.
	AllowFrom string
	DenyFrom  string
	// Scopes asks every request for an account's access token: "*" any
	// account of the service's namespace, else one with a scope of the
	// list (comma-separated, sorted); an account with scope admin, of
	// any namespace, passes every list. "" (the default): no token needed.
	Scopes string
}

// DefaultPolicy is the policy of services that set none.
var DefaultPolicy = Policy{
	Timeout:            15 * time.Second,
	PerTryTimeout:      5 * time.Second,
	Retries:            2,
	MaxConnections:     1024,
	MaxPendingRequests: 1024,
	MaxRequests:        1024,
	// Retries in flight are bounded by the requests in flight (one try
	// at a time each) and by Retries per request: Envoy's default of 3
	// fails requests when an endpoint starts failing under load, before
	// outlier detection ejects it (Istio sets every threshold to 2^32-1
	// for the same reason).
	MaxRetries:         1024,
	Consecutive5xx:     5,
	BaseEjectionTime:   30 * time.Second,
	MaxEjectionPercent: 50,
	LoadBalancer:       "least_request",
}

// Proxy is the proxy resources are built for.
type Proxy struct {
	// NodeID is the xDS node ID.
	NodeID    string
	Namespace string
	Service   string
	Kind      string
	// InboundPort takes mTLS traffic for the service (sidecars, Envoy); 0
	// for a proxy that only calls out.
	InboundPort uint32
	// OutboundPort is the loopback port the app sends outbound calls to.
	OutboundPort uint32
	// AppPort is where the app listens on loopback.
	AppPort     uint32
	AppProtocol string // grpc, http or tcp
	// Upstreams are the TCP services the app reaches through loopback
	// ports of its proxy, sorted by port.
	Upstreams []Upstream
	// CertDir holds cert.pem, key.pem and bundle.pem for an Envoy's SDS
	// file-based certificate (written and rotated by its agent).
	CertDir string
}

// Upstream is a TCP service an app reaches at a loopback port of its
// proxy: every connection to the port is carried to an instance of the
// service in a CONNECT stream (over QUIC between built-in sidecars), where
// the service's proxy authorizes the caller and connects to its app.
type Upstream struct {
	Service   string
	Namespace string // the proxy's own when ""
	Port      uint32
}

// SPIFFEID returns the SPIFFE ID of service name in namespace ns.
func (m *Mesh) SPIFFEID(ns, name string) string {
	return "spiffe://" + m.TrustDomain + "/ns/" + ns + "/svc/" + name
}

// activeVersions are the versions of s's split that take requests (a
// share above 0); none when s has no split.
func (s *Service) activeVersions() []VersionWeight {
	var out []VersionWeight
	for _, v := range s.Split {
		if v.Weight > 0 {
			out = append(out, v)
		}
	}
	return out
}

// ofVersion is s with only the endpoints of version v.
func (s *Service) ofVersion(v string) *Service {
	sub := *s
	sub.Endpoints = nil
	for _, e := range s.Endpoints {
		if e.Version == v {
			sub.Endpoints = append(sub.Endpoints, e)
		}
	}
	return &sub
}
