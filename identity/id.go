package identity

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Defaults for names in the mesh.
const (
	DefaultTrustDomain = "micromesh.local"
	DefaultNamespace   = "default"
	// SystemNamespace holds the mesh's own workloads (the control plane).
	SystemNamespace = "micromesh"
)

// Kinds of principal an ID can name.
const (
	KindService = "svc"
	KindUser    = "user"
)

// ID is a SPIFFE ID of the form spiffe://<trust-domain>/ns/<namespace>/<kind>/<name>.
// Workloads have kind "svc"; people, later, have kind "user".
type ID struct {
	TrustDomain string
	Namespace   string
	Kind        string
	Name        string
}

// ServiceID returns the ID of service name in namespace ns of trust domain td,
// after checking every part.
func ServiceID(td, ns, name string) (ID, error) {
	id := ID{TrustDomain: td, Namespace: ns, Kind: KindService, Name: name}
	if err := id.Validate(); err != nil {
		return ID{}, err
	}
	return id, nil
}

// String returns the SPIFFE URI form of the ID.
func (id ID) String() string {
	return "spiffe://" + id.TrustDomain + "/ns/" + id.Namespace + "/" + id.Kind + "/" + id.Name
}

// URL returns the ID as a URL, for certificate SANs.
func (id ID) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/" + id.Kind + "/" + id.Name}
}

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// Validate checks every part of the ID.
func (id ID) Validate() error {
	if err := ValidateTrustDomain(id.TrustDomain); err != nil {
		return err
	}
	if err := ValidateName("namespace", id.Namespace); err != nil {
		return err
	}
	if id.Kind != KindService && id.Kind != KindUser {
		return fmt.Errorf("%w: kind %q is not %q or %q", ErrInvalidID, id.Kind, KindService, KindUser)
	}
	return ValidateName(kindWord(id.Kind), id.Name)
}

func kindWord(kind string) string {
	if kind == KindUser {
		return "user name"
	}
	return "service name"
}

// ParseID parses a SPIFFE ID of the form spiffe://<td>/ns/<ns>/<kind>/<name>.
func ParseID(s string) (ID, error) {
	u, err := url.Parse(s)
	if err != nil {
		return ID{}, fmt.Errorf("%w: %q is not a URI: %v", ErrInvalidID, s, err)
	}
	return idFromURL(u)
}

func idFromURL(u *url.URL) (ID, error) {
	if u.Scheme != "spiffe" {
		return ID{}, fmt.Errorf("%w: %q does not start with spiffe://", ErrInvalidID, u.String())
	}
	if u.User != nil || u.Port() != "" || u.RawQuery != "" || u.Fragment != "" {
		return ID{}, fmt.Errorf("%w: %q has a user, port, query or fragment", ErrInvalidID, u.String())
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 4 || parts[0] != "ns" {
		return ID{}, fmt.Errorf("%w: %q does not have the form spiffe://<trust-domain>/ns/<namespace>/svc/<name>", ErrInvalidID, u.String())
	}
	id := ID{TrustDomain: u.Host, Namespace: parts[1], Kind: parts[2], Name: parts[3]}
	if err := id.Validate(); err != nil {
		return ID{}, err
	}
	return id, nil
}

// ValidateName checks that s is a DNS label (RFC 1123): 1 to 63 characters of
// lower-case letters, digits and '-', starting and ending with a letter or
// digit. what names the field in the error ("service name", "namespace").
func ValidateName(what, s string) error {
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalidName, what)
	}
	if len(s) > 63 {
		return fmt.Errorf("%w: %s %q is %d characters long; the limit is 63", ErrInvalidName, what, s, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return fmt.Errorf("%w: %s %q must be a DNS label: lower-case letters, digits and '-', starting and ending with a letter or digit", ErrInvalidName, what, s)
		}
	}
	return nil
}

// MaxVersionLength bounds a version label.
const MaxVersionLength = 63

// ValidateVersion checks a service version label (what instances register
// and traffic splits name): 1 to 63 letters, digits, '.', '_' and '-',
// starting with a letter or digit ("v2", "1.4.0-rc1", a commit hash).
func ValidateVersion(v string) error {
	switch {
	case v == "":
		return fmt.Errorf("%w: version is empty", ErrInvalidName)
	case len(v) > MaxVersionLength:
		return fmt.Errorf("%w: version %q is longer than %d characters", ErrInvalidName, v, MaxVersionLength)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '.' || c == '_' || c == '-') && i > 0:
		default:
			return fmt.Errorf("%w: version %q may hold only letters, digits, '.', '_' and '-', starting with a letter or digit", ErrInvalidName, v)
		}
	}
	return nil
}

// headerPattern: a lower-case HTTP header name (an RFC 9110 token).
var headerPattern = regexp.MustCompile(`^[a-z0-9!#$%&'*+.^_` + "`" + `|~-]+$`)

// reservedHeaders are headers traffic rules may not match on: the mesh's
// own, and those that mean something else to proxies.
var reservedHeaders = map[string]bool{"host": true, "x-mesh-caller": true, "x-forwarded-client-cert": true, "x-request-id": true,
	"content-length": true, "transfer-encoding": true, "connection": true, "te": true}

// ValidateRouteHeader checks the name of a request header a traffic rule
// matches on (a split's version header, a fault's opt-in header): a
// lower-case HTTP header name of at most 64 characters that means nothing
// else to the mesh.
func ValidateRouteHeader(h string) error {
	switch {
	case len(h) > 64 || !headerPattern.MatchString(h):
		return fmt.Errorf("%w: header %q is not a lower-case HTTP header name of at most 64 characters", ErrInvalidName, h)
	case reservedHeaders[h]:
		return fmt.Errorf("%w: header %q means something else to the mesh; pick another (x-version, say)", ErrInvalidName, h)
	}
	return nil
}

// SplitService reads a reference to a service, "name" or
// "name.namespace", as callers name services; ns is "" when s names none.
func SplitService(s string) (name, ns string, err error) {
	name, ns, dotted := strings.Cut(s, ".")
	if err := ValidateName("service", name); err != nil {
		return "", "", fmt.Errorf("%q is not a service (write name or name.namespace): %w", s, err)
	}
	if dotted {
		if err := ValidateName("namespace", ns); err != nil {
			return "", "", fmt.Errorf("%q is not a service (write name or name.namespace): %w", s, err)
		}
	}
	return name, ns, nil
}

// ValidateTrustDomain checks that td is a lower-case DNS name.
func ValidateTrustDomain(td string) error {
	if td == "" {
		return fmt.Errorf("%w: trust domain is empty", ErrInvalidName)
	}
	if len(td) > 253 {
		return fmt.Errorf("%w: trust domain %q is longer than 253 characters", ErrInvalidName, td)
	}
	for _, label := range strings.Split(td, ".") {
		if err := ValidateName("trust domain label", label); err != nil {
			return fmt.Errorf("%w (in trust domain %q)", err, td)
		}
	}
	return nil
}

// ControlPlaneID is the identity of the control plane of trust domain td.
func ControlPlaneID(td string) ID {
	return ID{TrustDomain: td, Namespace: SystemNamespace, Kind: KindService, Name: "controlplane"}
}

// Node IDs (xDS) are a workload's SPIFFE ID, optionally followed by "~" and
// an instance name when several instances of one service run:
//
//	spiffe://micromesh.local/ns/default/svc/hello~hello-1
//
// The control plane accepts a node only if the part before "~" is the
// SPIFFE ID of the certificate it connects with.
const nodeInstanceSep = "~"

// NodeID returns the xDS node ID of an instance of id ("" for none).
func NodeID(id ID, instance string) string {
	if instance == "" {
		return id.String()
	}
	return id.String() + nodeInstanceSep + instance
}

// ParseNodeID returns the SPIFFE ID a node ID claims.
func ParseNodeID(nodeID string) (ID, error) {
	spiffe, _, _ := strings.Cut(nodeID, nodeInstanceSep)
	id, err := ParseID(spiffe)
	if err != nil {
		return ID{}, fmt.Errorf("node ID %q must be the proxy's SPIFFE ID, optionally followed by ~<instance>: %w", nodeID, err)
	}
	return id, nil
}
