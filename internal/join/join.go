// Package join enrolls a workload: it gets the service's certificate from
// the control plane with a join token and writes it to a directory. Every
// command that enrolls a workload goes through it (meshctl cert issue,
// bootstrap grpc and sidecar, and the standalone mesh-sidecar), so they find
// the control plane and the trust bundle the same way. It links no CA code:
// minting a token from the local CA is the caller's Mint.
package join

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/envconfig"
	"github.com/micromesh/micromesh/internal/home"
)

// Options say who joins and how.
type Options struct {
	Service, Namespace string
	// Token is the join token; "" mints one with Mint.
	Token string
	// Mint returns a token for the service from a CA at hand (the local
	// server's). Nil when this program has none: a token is then required.
	Mint func(service, namespace string) (string, error)
	// ControlPlane is the address given on the command line ("" for the default; see ControlPlaneAddr).
	ControlPlane string
	// Bundle is a PEM file of roots to trust; "" uses the local CA's root
	// if there is one, else the bundle is fetched and checked against the
	// root fingerprint the token carries.
	Bundle  string
	Home    home.Dir
	Out     string        // directory for cert.pem, key.pem (0600) and bundle.pem
	Timeout time.Duration // for the control plane to answer (default 30 s)
}

// Run gets the credentials, writes them to o.Out and returns them.
func Run(ctx context.Context, o Options) (*identity.Credentials, error) {
	token := o.Token
	if token == "" {
		if o.Mint == nil {
			return nil, fmt.Errorf("no join token: pass --token or set $%s (mint one where the server runs: meshctl cert token --service %s --namespace %s)", envconfig.Token, o.Service, o.Namespace)
		}
		var err error
		if token, err = o.Mint(o.Service, o.Namespace); err != nil {
			return nil, fmt.Errorf("no --token given and none can be minted here: %w", err)
		}
	}
	info, err := identity.InspectToken(token)
	if err != nil {
		return nil, fmt.Errorf("--token: %w", err)
	}
	id, err := identity.ServiceID(info.ID.TrustDomain, o.Namespace, o.Service)
	if err != nil {
		return nil, err
	}
	if id != info.ID {
		return nil, fmt.Errorf("the token is for %s, not %s: pass the matching --service and --namespace", info.ID, id)
	}
	var bundle *identity.Bundle
	if pemRoots, from, err := LoadRoots(o.Bundle, o.Home); err != nil {
		return nil, err
	} else if pemRoots != nil {
		if bundle, err = BundleFrom(pemRoots, from, id.TrustDomain); err != nil {
			return nil, err
		}
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	creds, err := identity.Join(ctx, ControlPlaneAddr(o.ControlPlane, o.Home), bundle, id, token)
	if err != nil {
		return nil, err
	}
	if err := creds.WriteDir(o.Out); err != nil {
		return nil, err
	}
	return creds, nil
}

// ControlPlaneAddr picks the control plane to talk to: the flag, else
// $MESH_CONTROLPLANE, else the server published in $MESH_HOME, else the default.
func ControlPlaneAddr(flag string, h home.Dir) string {
	if flag != "" {
		return flag
	}
	if v := envconfig.Get(envconfig.ControlPlane, ""); v != "" {
		return v
	}
	if info, err := h.ReadServerInfo(); err == nil && info.Address != "" {
		return info.Address
	}
	return envconfig.DefaultControlPlane
}

// LoadRoots reads the trust bundle: the file given, else the local CA's
// root. It returns nil and no error when neither exists: the caller then
// bootstraps trust from a join token.
func LoadRoots(path string, h home.Dir) (roots []byte, from string, err error) {
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, "", fmt.Errorf("--bundle: %w", err)
		}
		return data, path, nil
	}
	data, err := os.ReadFile(h.RootCert())
	if errors.Is(err, os.ErrNotExist) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	return data, h.RootCert(), nil
}

// BundleFrom parses PEM roots into the bundle of trust domain td.
func BundleFrom(pemRoots []byte, from, td string) (*identity.Bundle, error) {
	roots, err := identity.ParseCertificates(pemRoots)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	return identity.NewBundle(td, roots), nil
}

// Flags are the command-line flags of a command that enrolls a workload.
type Flags struct {
	Service, Namespace, Token, ControlPlane, Bundle string
}

// Add defines the flags on fs.
func (f *Flags) Add(fs *pflag.FlagSet) {
	fs.StringVar(&f.Service, "service", "", "service name (a DNS label)")
	fs.StringVarP(&f.Namespace, "namespace", "n", identity.DefaultNamespace, "namespace (a DNS label)")
	fs.StringVar(&f.Token, "token", "", "join token (default: $"+envconfig.Token+", else mint one from the local CA)")
	fs.StringVar(&f.ControlPlane, "controlplane", "", "control plane address (default: the local server)")
	fs.StringVar(&f.Bundle, "bundle", "", "trust bundle PEM to verify the control plane (default: the local CA's root)")
}

// Validate checks the service's name and namespace.
func (f *Flags) Validate() error { return ValidateService(f.Service, f.Namespace) }

// Options turns the flags into Options: the token from $MESH_TOKEN when
// the flag is empty (the runtime hands it over there, not in argv).
func (f *Flags) Options(h home.Dir, mint func(service, namespace string) (string, error), out string) Options {
	token := f.Token
	if token == "" {
		token = os.Getenv(envconfig.Token)
	}
	return Options{Service: f.Service, Namespace: f.Namespace, Token: token, Mint: mint, ControlPlane: f.ControlPlane, Bundle: f.Bundle, Home: h, Out: out}
}

// ValidateService checks a --service and --namespace pair.
func ValidateService(service, namespace string) error {
	if service == "" {
		return errors.New("--service is required")
	}
	if err := identity.ValidateName("service name", service); err != nil {
		return err
	}
	return identity.ValidateName("namespace", namespace)
}
