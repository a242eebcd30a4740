// Package home knows the layout of $MESH_HOME, the state directory of a
// Micromesh installation, and the file through which a running control plane
// tells local clients where it is.
package home

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/micromesh/micromesh/internal/atomicfile"
)

// Layout of $MESH_HOME.
const (
	caDir      = "ca"
	serverFile = "controlplane.json"
)

// Dir is a state directory.
type Dir string

// CA is where the embedded CA keeps its keys and ledger.
func (d Dir) CA() string { return filepath.Join(string(d), caDir) }

// Registry is where the embedded registry keeps its database.
func (d Dir) Registry() string { return filepath.Join(string(d), "registry") }

// CLICredentials is where the CLI keeps its admin identity's certificate.
func (d Dir) CLICredentials() string { return filepath.Join(string(d), "cli", "admin") }

// Sidecar is the state directory of a sidecar instance.
func (d Dir) Sidecar(instance string) string { return filepath.Join(string(d), "sidecars", instance) }

// Traces holds the spans the control plane keeps.
func (d Dir) Traces() string { return filepath.Join(string(d), "traces") }

// ACMECache holds the API gateway's ACME account key and certificates.
func (d Dir) ACMECache() string { return filepath.Join(string(d), "gateway", "acme") }

// Logs holds the logs of the services the runtime runs.
func (d Dir) Logs() string { return filepath.Join(string(d), "logs") }

// Runtime holds the runtime's state and builds.
func (d Dir) Runtime() string { return filepath.Join(string(d), "runtime") }

// Src holds git sources the runtime cloned.
func (d Dir) Src() string { return filepath.Join(string(d), "src") }

// RootCert is the CA's root certificate: the local trust bundle.
func (d Dir) RootCert() string { return filepath.Join(d.CA(), "root.crt") }

// ServerInfoPath is where a running control plane describes itself.
func (d Dir) ServerInfoPath() string { return filepath.Join(string(d), serverFile) }

// Ensure creates the directory, 0700, if it does not exist.
func (d Dir) Ensure() error {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", d, err)
	}
	return nil
}

// ServerInfo is what a running control plane publishes for local clients.
type ServerInfo struct {
	Address      string `json:"address"`       // gRPC (xDS and APIs), mTLS
	AdminAddress string `json:"admin_address"` // /metrics, /healthz, /ready
	// GatewayAddress is the API gateway's (HTTP, or HTTPS and HTTP/3),
	// when it runs; GatewayURL its base URL (http:// or https://).
	GatewayAddress string `json:"gateway_address,omitempty"`
	GatewayURL     string `json:"gateway_url,omitempty"`
	// DashboardAddress is the dashboard's (HTTP), when it runs.
	DashboardAddress string `json:"dashboard_address,omitempty"`
	// RemoteProxyAddress is the remote proxy's (gRPC over TLS), when it
	// runs.
	RemoteProxyAddress string    `json:"remote_proxy_address,omitempty"`
	TrustDomain        string    `json:"trust_domain"`
	PID                int       `json:"pid"`
	Started            time.Time `json:"started"`
}

// ErrNoServer means no control plane has published itself in this home.
var ErrNoServer = errors.New("no running control plane found")

// WriteServerInfo publishes info.
func (d Dir) WriteServerInfo(info ServerInfo) error {
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(d.ServerInfoPath(), append(data, '\n'), 0o644)
}

// ReadServerInfo reads what the control plane published; it wraps
// ErrNoServer when nothing is.
func (d Dir) ReadServerInfo() (ServerInfo, error) {
	data, err := os.ReadFile(d.ServerInfoPath())
	if errors.Is(err, os.ErrNotExist) {
		return ServerInfo{}, fmt.Errorf("%w in %s: start one with `make run` or `meshctl server`", ErrNoServer, d)
	}
	if err != nil {
		return ServerInfo{}, err
	}
	var info ServerInfo
	if err := json.Unmarshal(data, &info); err != nil {
		return ServerInfo{}, fmt.Errorf("%s: %w", d.ServerInfoPath(), err)
	}
	return info, nil
}

// RemoveServerInfo withdraws the published info, if it is still ours.
func (d Dir) RemoveServerInfo(pid int) error {
	info, err := d.ReadServerInfo()
	if err != nil || info.PID != pid {
		return nil
	}
	if err := os.Remove(d.ServerInfoPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
