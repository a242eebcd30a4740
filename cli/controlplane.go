package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/envconfig"
	"github.com/micromesh/micromesh/internal/home"
)

// controlPlaneAddr picks the control plane to talk to: the flag, else
// $MESH_CONTROLPLANE, else the server published in $MESH_HOME, else the default.
func controlPlaneAddr(flag string, h home.Dir) string {
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

// loadRoots reads the trust bundle: the file given, else the local CA's
// root. It returns nil and no error when neither exists: the caller then
// bootstraps trust from a join token.
func loadRoots(path string, h home.Dir) (roots []byte, from string, err error) {
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

// bundleFrom parses PEM roots into the bundle of trust domain td.
func bundleFrom(pemRoots []byte, from, td string) (*identity.Bundle, error) {
	roots, err := identity.ParseCertificates(pemRoots)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	return identity.NewBundle(td, roots), nil
}
