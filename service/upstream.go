package service

import (
	"fmt"
	"os"

	"github.com/micromesh/micromesh/internal/envconfig"
)

// Upstream returns the loopback address ("127.0.0.1:PORT") at which this
// service's sidecar takes connections for name, a TCP service of the mesh
// (a database, a cache: "db", or "db.shop" in another namespace) that the
// service was run with (`meshctl run --upstream db`): hand it to the
// database driver as its host and port. Each connection rides an mTLS
// tunnel to an instance of name, whose sidecar checks this service's
// identity against its rules (docs/tcp.md).
func Upstream(name string) (string, error) {
	v := envconfig.UpstreamVar(name)
	addr := os.Getenv(v)
	if addr == "" {
		return "", fmt.Errorf("service.Upstream(%q): $%s is not set: run the service with `meshctl run --upstream %s` (its sidecar then listens for %s and says where in $%s)", name, v, name, name, v)
	}
	return addr, nil
}
