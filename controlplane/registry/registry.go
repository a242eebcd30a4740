// Package registry is where the mesh learns which instances of which
// services exist, where they listen and whether they are healthy. Backends:
// embedded (bbolt, zero setup) and consul (a real Consul agent).
package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/micromesh/micromesh/identity"
)

// Registry is a service registry. Implementations are safe for concurrent use.
type Registry interface {
	// Register adds an instance, or replaces the one with the same ID (which
	// must be of the same service). An instance with a TTL starts passing and
	// turns critical unless heartbeats arrive within each TTL.
	Register(ctx context.Context, inst Instance) error
	// Deregister removes an instance; ErrNotFound if there is none.
	Deregister(ctx context.Context, id string) error
	// Heartbeat renews an instance's TTL; ErrNotFound if there is none.
	Heartbeat(ctx context.Context, id string) error
	// SetSplit sets how a service's callers spread its requests over its
	// versions, replacing the split it had.
	SetSplit(ctx context.Context, s Split) error
	// SetSplitIf sets s only while the service's split is still prev (nil:
	// it has none), ErrChanged otherwise: a write that must not undo one
	// made since it read (a rollout's next step against an operator's
	// split set).
	SetSplitIf(ctx context.Context, s Split, prev *Split) error
	// DeleteSplit removes a service's split (its callers then use every
	// instance alike); ErrNotFound if it has none.
	DeleteSplit(ctx context.Context, namespace, service string) error
	// SetPolicy sets an operator's traffic policy for a service, replacing
	// the one it had.
	SetPolicy(ctx context.Context, p Policy) error
	// DeletePolicy removes a service's operator policy (its instances' own
	// applies again); ErrNotFound if it has none.
	DeletePolicy(ctx context.Context, namespace, service string) error
	// SetExternal declares a service outside the mesh, replacing the one
	// of that name in its namespace.
	SetExternal(ctx context.Context, e External) error
	// DeleteExternal removes an external service; ErrNotFound if there is
	// none of that name.
	DeleteExternal(ctx context.Context, namespace, name string) error
	// Watch sends the current snapshot at once, then a new one after every
	// change, until ctx ends; a slow reader only ever misses intermediate
	// snapshots, never the latest.
	Watch(ctx context.Context) (<-chan Snapshot, error)
}

// List returns the current snapshot of r.
func List(ctx context.Context, r Registry) (Snapshot, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := r.Watch(ctx)
	if err != nil {
		return Snapshot{}, err
	}
	select {
	case s, ok := <-ch:
		if !ok {
			return Snapshot{}, errors.New("registry watch ended")
		}
		return s, nil
	case <-ctx.Done():
		return Snapshot{}, ctx.Err()
	}
}

// State is where a registry keeps its instances and whether it answers.
type State struct {
	Backend string // embedded, consul
	Address string // the agent's, or the database file's
	// Unreachable since Since, with the last Error: the control plane
	// serves the last state it saw (proxies keep their configs) and
	// registrations fail.
	Unreachable bool
	Since       time.Time
	Error       string
}

// Stater is a registry that says how it is (every backend here is one).
type Stater interface {
	State() State
}

// Errors, for errors.Is.
var (
	ErrInvalid     = errors.New("invalid registration")
	ErrNotFound    = errors.New("not found")
	ErrConflict    = errors.New("instance ID already registered for another service")
	ErrUnavailable = errors.New("registry unavailable")
	ErrChanged     = errors.New("changed since it was read")
)

// Protocols an instance serves.
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http"
	// ProtocolTCP: the app speaks its own protocol over TCP (a database, a
	// cache); callers reach it through an upstream port of their sidecar,
	// tunnelled in CONNECT streams.
	ProtocolTCP = "tcp"
)

// Kinds of proxy in front of an instance; they decide the transport peers use.
const (
	KindBuiltin   = "builtin"   // Micromesh's sidecar: HTTP/3 over QUIC, or HTTP/2 over TLS
	KindEnvoy     = "envoy"     // Envoy: HTTP/2 over TLS
	KindProxyless = "proxyless" // a gRPC server with its own mTLS: HTTP/2 over TLS
)

// Health of an instance.
type Health string

// Health states, as Consul names them.
const (
	Passing  Health = "passing"
	Warning  Health = "warning"
	Critical Health = "critical"
)

// Instance is one running copy of a service.
type Instance struct {
	ID        string `json:"id"`
	Service   string `json:"service"`
	Namespace string `json:"namespace"`
	// Address is the IP (or host name) peers connect to.
	Address string `json:"address"`
	// Port is the TCP port serving mTLS: HTTP/2 over TLS for sidecars and
	// Envoy, the server's own mTLS for proxyless gRPC.
	Port uint16 `json:"port"`
	// QUICPort is the UDP port serving HTTP/3 over QUIC (built-in sidecars).
	QUICPort uint16            `json:"quic_port,omitempty"`
	Protocol string            `json:"protocol"`
	Kind     string            `json:"kind"`
	Version  string            `json:"version,omitempty"`
	Region   string            `json:"region,omitempty"`
	Zone     string            `json:"zone,omitempty"`
	Weight   uint32            `json:"weight,omitempty"` // load-balancing weight, 1–128; 0 means 1
	Metadata map[string]string `json:"metadata,omitempty"`
	// TTL is the heartbeat deadline; 0 registers a static instance that
	// stays until deregistered.
	TTL time.Duration `json:"ttl,omitempty"`
	// Health is set by the registry.
	Health Health `json:"health"`
}

// Limits on a registration.
const (
	MaxIDLength     = 128
	MaxWeight       = 128
	MaxMetadataKeys = 32
	MaxMetadataKey  = 64
	MaxMetadataVal  = 512
	MinTTL          = time.Second
	MaxTTL          = time.Hour
)

var (
	idPattern      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	metaKeyPattern = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)
)

// Validate checks a registration and says what is wrong in terms a person
// can act on. It fills defaults (protocol grpc, kind builtin, weight 1).
func (in *Instance) Validate() error {
	if in.Protocol == "" {
		in.Protocol = ProtocolGRPC
	}
	if in.Kind == "" {
		in.Kind = KindBuiltin
	}
	if in.Weight == 0 {
		in.Weight = 1
	}
	if in.Namespace == "" {
		in.Namespace = identity.DefaultNamespace
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	switch {
	case in.ID == "":
		return bad("instance ID is empty")
	case len(in.ID) > MaxIDLength:
		return bad("instance ID %q is longer than %d characters", in.ID, MaxIDLength)
	case !idPattern.MatchString(in.ID):
		return bad("instance ID %q may hold only letters, digits, '.', '_' and '-', starting with a letter or digit", in.ID)
	}
	if err := identity.ValidateName("service name", in.Service); err != nil {
		return bad("%v", err)
	}
	if err := identity.ValidateName("namespace", in.Namespace); err != nil {
		return bad("%v", err)
	}
	if in.Address == "" {
		return bad("address of %s is empty", in.ID)
	}
	if net.ParseIP(in.Address) == nil && identity.ValidateTrustDomain(in.Address) != nil {
		return bad("address %q is neither an IP address nor a host name", in.Address)
	}
	if in.Port == 0 {
		return bad("port of %s is 0; give the TCP port it serves mTLS on (1-65535)", in.ID)
	}
	switch in.Protocol {
	case ProtocolGRPC, ProtocolHTTP:
	case ProtocolTCP:
		if in.Kind == KindProxyless {
			return bad("protocol %q needs a sidecar (builtin or envoy) in front of the app to end its tunnels; a proxyless server speaks gRPC", in.Protocol)
		}
	default:
		return bad("protocol %q is not %q, %q or %q", in.Protocol, ProtocolGRPC, ProtocolHTTP, ProtocolTCP)
	}
	switch in.Kind {
	case KindBuiltin, KindEnvoy, KindProxyless:
	default:
		return bad("kind %q is not %q, %q or %q", in.Kind, KindBuiltin, KindEnvoy, KindProxyless)
	}
	if in.QUICPort != 0 && in.Kind != KindBuiltin {
		return bad("only built-in sidecars serve QUIC; %s is %s", in.ID, in.Kind)
	}
	if in.Version != "" {
		if err := identity.ValidateVersion(in.Version); err != nil {
			return bad("%v", err)
		}
	}
	if in.Weight > MaxWeight {
		return bad("weight %d is above %d", in.Weight, MaxWeight)
	}
	if in.TTL != 0 && (in.TTL < MinTTL || in.TTL > MaxTTL) {
		return bad("TTL %v must be 0 (static) or between %v and %v", in.TTL, MinTTL, MaxTTL)
	}
	for _, v := range []struct{ what, s string }{{"region", in.Region}, {"zone", in.Zone}} {
		if v.s != "" {
			if err := identity.ValidateName(v.what, v.s); err != nil {
				return bad("%v", err)
			}
		}
	}
	if len(in.Metadata) > MaxMetadataKeys {
		return bad("%d metadata keys; the limit is %d", len(in.Metadata), MaxMetadataKeys)
	}
	for k, v := range in.Metadata {
		if len(k) > MaxMetadataKey || !metaKeyPattern.MatchString(k) {
			return bad("metadata key %q must be 1-%d letters, digits, '_' or '-'", k, MaxMetadataKey)
		}
		if len(v) > MaxMetadataVal {
			return bad("metadata value of %q is longer than %d bytes", k, MaxMetadataVal)
		}
	}
	return nil
}

// Split is how a service's callers spread its requests over its versions
// (a canary, a blue/green switch): each request goes to an instance of
// one version, picked in proportion to the weights, which are percentages
// adding up to 100. Instances of versions the split does not name get no
// requests; a version named with no instance fails its share (its callers
// answer 503), as in Envoy, Istio and Consul.
type Split struct {
	Namespace string `json:"namespace"`
	Service   string `json:"service"`
	// Versions, sorted by version.
	Versions []VersionWeight `json:"versions"`
	// Header names a request header whose value, a version the split
	// names, sends the request to that version whatever the shares (a
	// canary's testers); "" for none.
	Header string `json:"header,omitempty"`
	// Rollout, if set, is the progressive rollout that sets the shares
	// (`meshctl rollout start`); one that ended stays to be read.
	Rollout *Rollout `json:"rollout,omitempty"`
}

// VersionWeight is one version's share of a Split, in percent.
type VersionWeight struct {
	Version string `json:"version"`
	Weight  uint32 `json:"weight"`
}

// Shares writes versions' shares as `meshctl split set` takes them:
// "v1=90 v2=10".
func Shares(vs []VersionWeight) string {
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = fmt.Sprintf("%s=%d", v.Version, v.Weight)
	}
	return strings.Join(parts, " ")
}

// APIVersionWeight is a version's share as the registry API carries it
// (registryv1.VersionWeight).
type APIVersionWeight interface {
	GetVersion() string
	GetWeight() uint32
}

// WeightsOf converts a split's shares from the registry API.
func WeightsOf[V APIVersionWeight](vs []V) []VersionWeight {
	out := make([]VersionWeight, 0, len(vs))
	for _, v := range vs {
		out = append(out, VersionWeight{Version: v.GetVersion(), Weight: v.GetWeight()})
	}
	return out
}

// Unserved are the versions with a share of which have holds no
// instance: their share of the calls fails.
func Unserved(shares []VersionWeight, have map[string]bool) []string {
	var out []string
	for _, v := range shares {
		if v.Weight > 0 && !have[v.Version] {
			out = append(out, v.Version)
		}
	}
	return out
}

// MaxSplitVersions bounds the versions of a split.
const MaxSplitVersions = 16

// Validate checks a split and says what is wrong in terms a person can
// act on. It fills the default namespace and sorts the versions.
func (s *Split) Validate() error {
	bad := func(format string, args ...any) error {
		return invalidSplit(fmt.Sprintf(format, args...))
	}
	if err := validTarget(s.Service, &s.Namespace); err != nil {
		return bad("%v", err)
	}
	switch {
	case len(s.Versions) == 0:
		return bad("the split of %s.%s names no version; give VERSION=PERCENT for each", s.Service, s.Namespace)
	case len(s.Versions) > MaxSplitVersions:
		return bad("the split of %s.%s names %d versions; the limit is %d", s.Service, s.Namespace, len(s.Versions), MaxSplitVersions)
	}
	s.Versions = slices.Clone(s.Versions)
	slices.SortFunc(s.Versions, func(a, b VersionWeight) int { return strings.Compare(a.Version, b.Version) })
	var sum uint32
	for i, v := range s.Versions {
		if err := identity.ValidateVersion(v.Version); err != nil {
			return bad("%v", err)
		}
		if i > 0 && s.Versions[i-1].Version == v.Version {
			return bad("version %q is named twice", v.Version)
		}
		if v.Weight > 100 {
			return bad("version %s takes %d %%; a share is 0-100 %%", v.Version, v.Weight)
		}
		sum += v.Weight
	}
	if sum != 100 {
		return bad("the shares of %s.%s add up to %d %%, not 100 %%", s.Service, s.Namespace, sum)
	}
	if s.Header != "" {
		if err := identity.ValidateRouteHeader(s.Header); err != nil {
			return bad("%v", err)
		}
	}
	if r := s.Rollout; r != nil {
		if err := r.Validate(s.Service, s.Namespace); err != nil {
			return err
		}
		if !slices.Equal(s.Versions, r.Shares()) {
			return bad("its shares %s are not its rollout's (%s)", Shares(s.Versions), Shares(r.Shares()))
		}
	}
	return nil
}

// validTarget checks the service a split or policy is for, filling the
// default namespace.
func validTarget(service string, ns *string) error {
	if *ns == "" {
		*ns = identity.DefaultNamespace
	}
	if err := identity.ValidateName("service name", service); err != nil {
		return err
	}
	return identity.ValidateName("namespace", *ns)
}

// invalidSplit is ErrInvalid, said of a split.
type invalidSplit string

func (e invalidSplit) Error() string        { return "invalid split: " + string(e) }
func (e invalidSplit) Is(target error) bool { return target == ErrInvalid }

// Policy is a service's traffic policy as an operator sets it at run time
// (`meshctl policy set`), over what its instances registered: keys as
// --policy takes them ("timeout" → "2s", "/pkg.S/Slow:retries" → "0"),
// each replacing the instances' value for that key. The registry checks
// its form; the control plane, what the keys mean.
type Policy struct {
	Namespace string            `json:"namespace"`
	Service   string            `json:"service"`
	Keys      map[string]string `json:"keys"`
}

// Bounds of a Policy (Consul's KV takes values up to 512 KiB; a policy is
// far smaller).
const (
	MaxPolicyKeys     = 64
	maxPolicyKeyBytes = 300 // a path of 256 bytes and a key
	maxPolicyValue    = 64
)

// Validate checks a policy's form and says what is wrong in terms a
// person can act on. It fills the default namespace.
func (p *Policy) Validate() error {
	bad := func(format string, args ...any) error {
		return invalidPolicy(fmt.Sprintf(format, args...))
	}
	if err := validTarget(p.Service, &p.Namespace); err != nil {
		return bad("%v", err)
	}
	switch {
	case len(p.Keys) == 0:
		return bad("the policy of %s.%s sets no key; give KEY=VALUE (meshctl policy clear removes it)", p.Service, p.Namespace)
	case len(p.Keys) > MaxPolicyKeys:
		return bad("the policy of %s.%s sets %d keys; the limit is %d", p.Service, p.Namespace, len(p.Keys), MaxPolicyKeys)
	}
	for k, v := range p.Keys {
		switch {
		case k == "" || len(k) > maxPolicyKeyBytes || strings.ContainsAny(k, "= \t\r\n"):
			return bad("policy key %.40q is not a key (KEY, or PATH:KEY for one path)", k)
		case v == "" || len(v) > maxPolicyValue || strings.ContainsAny(v, "\r\n"):
			return bad("policy key %s: value %.40q is empty, longer than %d bytes or holds a line break", k, v, maxPolicyValue)
		}
	}
	return nil
}

// invalidPolicy is ErrInvalid, said of a policy.
type invalidPolicy string

func (e invalidPolicy) Error() string        { return "invalid policy: " + string(e) }
func (e invalidPolicy) Is(target error) bool { return target == ErrInvalid }

// Snapshot is the registry's state at one moment.
type Snapshot struct {
	// Index increases with every change.
	Index uint64 `json:"index"`
	// Instances, sorted by namespace, service, ID.
	Instances []Instance `json:"instances"`
	// Splits, sorted by namespace, service.
	Splits []Split `json:"splits,omitempty"`
	// Policies set by operators, sorted by namespace, service.
	Policies []Policy `json:"policies,omitempty"`
	// Externals, services outside the mesh, sorted by namespace, name.
	Externals []External `json:"externals,omitempty"`
}

// ServiceOf returns the service the split is for.
func (s Split) ServiceOf() (namespace, service string) { return s.Namespace, s.Service }

// ServiceOf returns the service the policy is for.
func (p Policy) ServiceOf() (namespace, service string) { return p.Namespace, p.Service }

// SortByService puts what the registry keeps per service (splits,
// policies, externals) in snapshot order.
func SortByService[T PerService](vs []T) {
	slices.SortFunc(vs, func(a, b T) int {
		ans, asv := a.ServiceOf()
		bns, bsv := b.ServiceOf()
		if c := strings.Compare(ans, bns); c != 0 {
			return c
		}
		return strings.Compare(asv, bsv)
	})
}

// PerService is what the registry keeps per service besides its
// instances: splits, operator policies, and external services (one per
// name).
type PerService interface {
	Split | Policy | External
	ServiceOf() (namespace, service string)
}

// SortInstances puts instances in snapshot order.
func SortInstances(ins []Instance) {
	sort.Slice(ins, func(i, j int) bool {
		a, b := ins[i], ins[j]
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Service != b.Service {
			return a.Service < b.Service
		}
		return a.ID < b.ID
	})
}
