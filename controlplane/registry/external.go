package registry

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"strings"

	"github.com/micromesh/micromesh/identity"
)

// External is a service outside the mesh that the mesh's workloads call
// through their sidecars (Istio's ServiceEntry with TLS origination,
// Kuma's ExternalService): a caller in its namespace sends plain HTTP for
// Name (or Name.Namespace, or Host) to its outbound listener; the caller's
// sidecar opens TLS to Host:Port, checks that the server's certificate
// names Host and chains to CA (the host's system roots when empty), and
// sends the request with Host as its authority. Nothing leaves the host in
// plaintext, and the app holds no roots of its own.
type External struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Host is the server's DNS name: what the sidecar resolves, sends as
	// SNI and authority, and checks the certificate against.
	Host string `json:"host"`
	// Port is the server's TLS port (443 when 0 is given).
	Port uint16 `json:"port"`
	// CA is the PEM roots the server's certificate must chain to; "" for
	// the system's roots.
	CA string `json:"ca,omitempty"`
	// Protocol is what the server speaks: ProtocolHTTP (HTTP/1.1, the
	// default) or ProtocolGRPC (HTTP/2).
	Protocol string `json:"protocol,omitempty"`
}

// ServiceOf returns the name callers use for the external service.
func (e External) ServiceOf() (namespace, service string) { return e.Namespace, e.Name }

// MaxExternalCA bounds an external service's roots (a bundle of a few
// dozen certificates).
const MaxExternalCA = 64 << 10

// Validate checks an external service and says what is wrong in terms a
// person can act on. It fills the default namespace and port and writes
// the host in lower case.
func (e *External) Validate() error {
	bad := func(format string, args ...any) error {
		return invalidExternal(fmt.Sprintf(format, args...))
	}
	if err := validTarget(e.Name, &e.Namespace); err != nil {
		return bad("%v", err)
	}
	if e.Port == 0 {
		e.Port = 443
	}
	if e.Protocol == "" {
		e.Protocol = ProtocolHTTP
	}
	if e.Protocol != ProtocolHTTP && e.Protocol != ProtocolGRPC {
		return bad("protocol %q is not %q (HTTP/1.1) or %q (HTTP/2)", e.Protocol, ProtocolHTTP, ProtocolGRPC)
	}
	e.Host = strings.ToLower(strings.TrimSuffix(e.Host, "."))
	switch {
	case e.Host == "":
		return bad("%s.%s has no host; give the DNS name of the server it stands for", e.Name, e.Namespace)
	case net.ParseIP(e.Host) != nil:
		return bad("host %s is an IP address; give the DNS name its certificate names", e.Host)
	}
	if err := identity.ValidateTrustDomain(e.Host); err != nil {
		return bad("host %q is not a DNS name: %v", e.Host, strings.TrimPrefix(err.Error(), identity.ErrInvalidName.Error()+": "))
	}
	if e.CA != "" {
		if len(e.CA) > MaxExternalCA {
			return bad("the CA of %s.%s is %d bytes; the limit is %d", e.Name, e.Namespace, len(e.CA), MaxExternalCA)
		}
		if err := checkRoots([]byte(e.CA)); err != nil {
			return bad("the CA of %s.%s: %v", e.Name, e.Namespace, err)
		}
	}
	return nil
}

// checkRoots checks that pemBytes holds certificates and nothing else.
func checkRoots(pemBytes []byte) error {
	n := 0
	for rest := pemBytes; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			if n > 0 && strings.TrimSpace(string(rest)) != "" {
				return fmt.Errorf("after %d certificates, what follows is not PEM", n)
			}
			break
		}
		if b.Type != "CERTIFICATE" {
			return fmt.Errorf("a PEM block of type %q; only CERTIFICATE blocks belong in a CA bundle", b.Type)
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return fmt.Errorf("certificate %d: %w", n+1, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("no PEM certificate in it")
	}
	return nil
}

// invalidExternal is ErrInvalid, said of an external service.
type invalidExternal string

func (e invalidExternal) Error() string        { return "invalid external service: " + string(e) }
func (e invalidExternal) Is(target error) bool { return target == ErrInvalid }
