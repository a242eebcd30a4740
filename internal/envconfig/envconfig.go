// Package envconfig is the one place that reads Micromesh's environment
// variables. Everything else asks it.
package envconfig

import (
	"os"
	"path/filepath"
	"strings"
)

// Names of the environment variables Micromesh reads.
const (
	// Home is the state directory (default ~/.micromesh).
	Home = "MESH_HOME"
	// ControlPlane is the control plane's gRPC address: where `meshctl server`
	// listens and where clients dial.
	ControlPlane = "MESH_CONTROLPLANE"
	// AdminAddr is where `meshctl server` serves /metrics and health.
	AdminAddr = "MESH_ADMIN_ADDR"
	// GatewayAddr is where `meshctl server` serves the API gateway
	// ("off": none).
	GatewayAddr = "MESH_GATEWAY_ADDR"
	// GatewayTLSCert and GatewayTLSKey are the files of the certificate
	// and key the API gateway serves HTTPS and HTTP/3 with.
	GatewayTLSCert = "MESH_GATEWAY_TLS_CERT"
	GatewayTLSKey  = "MESH_GATEWAY_TLS_KEY"
	// GatewayACMEDomains (comma-separated) and GatewayACMEEmail have the
	// API gateway get its certificates from an ACME CA.
	GatewayACMEDomains = "MESH_GATEWAY_ACME_DOMAINS"
	GatewayACMEEmail   = "MESH_GATEWAY_ACME_EMAIL"
	// DashboardAddr is where `meshctl server` serves the dashboard ("off":
	// none).
	DashboardAddr = "MESH_DASHBOARD_ADDR"
	// RemoteProxyAddr is where `meshctl server` serves the remote proxy
	// ("off": none).
	RemoteProxyAddr = "MESH_REMOTE_PROXY_ADDR"
	// Env is the environment meshctl talks to (`meshctl env`), over the
	// current one.
	Env = "MESH_ENV"
	// TrustDomain is the trust domain of a new CA.
	TrustDomain = "MESH_TRUST_DOMAIN"
	// LogLevel is debug, info, warn or error.
	LogLevel = "MESH_LOG_LEVEL"
	// ConsulAddr is the Consul agent's HTTP address (Consul's own variable).
	ConsulAddr = "CONSUL_HTTP_ADDR"

	// What the runtime gives a service (see service.New).

	// Service is the service's name.
	Service = "MESH_SERVICE"
	// Namespace is the service's namespace.
	Namespace = "MESH_NAMESPACE"
	// Address is where the service listens (loopback; its sidecar forwards
	// to it).
	Address = "MESH_ADDRESS"
	// Proxy is its sidecar's outbound address: where it calls other
	// services.
	Proxy = "MESH_PROXY"
	// Version is the version the runtime runs.
	Version = "MESH_VERSION"
	// ConfigKey is the key that encrypts config secrets: 32 bytes, base64
	// (default: $MESH_HOME/config/secret.key, made on first start).
	ConfigKey = "MESH_CONFIG_KEY"
	// Token is a join token for `meshctl sidecar` (the runtime passes it
	// in the environment, not on the command line).
	Token = "MESH_TOKEN"
)

// UpstreamPrefix starts the variables that give a service the loopback
// address of each TCP service it reaches through its sidecar (meshctl run
// --upstream): UpstreamVar names them.
const UpstreamPrefix = "MESH_UPSTREAM_"

// UpstreamVar is the variable holding the address of upstream service
// ("db", "db.shop"): $MESH_UPSTREAM_DB, $MESH_UPSTREAM_DB_SHOP (upper
// case, "-" and "." as "_").
func UpstreamVar(service string) string {
	return UpstreamPrefix + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(service))
}

// Defaults.
const (
	DefaultControlPlane  = "127.0.0.1:8443"
	DefaultAdminAddr     = "127.0.0.1:8090"
	DefaultGatewayAddr   = "127.0.0.1:8080"
	DefaultDashboardAddr = "127.0.0.1:8082"
	DefaultRemoteProxy   = "127.0.0.1:8081"
	DefaultConsulAddr    = "127.0.0.1:8500"
)

// HomeDir returns $MESH_HOME, or ~/.micromesh.
func HomeDir() string {
	if h := os.Getenv(Home); h != "" {
		return h
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".micromesh")
	}
	return ".micromesh"
}

// List returns the variable's comma-separated values (none when it is
// unset or empty).
func List(name string) []string {
	v := os.Getenv(name)
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// Get returns the variable's value, or def when it is unset or empty.
func Get(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
