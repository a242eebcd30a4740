package cli

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"

	"github.com/micromesh/micromesh/internal/join"
	"github.com/micromesh/micromesh/internal/meshclient"
	"github.com/micromesh/micromesh/platform/remote"
)

// adminConn connects to the control plane as the CLI's admin identity;
// in a remote environment, through its remote proxy as the account logged
// in (which needs the scope admin: the proxy relays the control plane's
// APIs for such accounts alone).
func adminConn(ctx context.Context, g *globalOptions, addrFlag string) (*grpc.ClientConn, error) {
	env, err := g.environment()
	if err != nil {
		return nil, err
	}
	if env != nil {
		if addrFlag != "" {
			return nil, fmt.Errorf("--controlplane names a control plane to reach as this machine's server admin; the environment is %s, remote, reached through its proxy (--env local for this machine's)", env.Name)
		}
		return dialRemote(ctx, g, env, remote.ControlPlaneAuthority, true)
	}
	h := g.homeDir()
	return meshclient.ControlPlane(ctx, h, join.ControlPlaneAddr(addrFlag, h))
}

// adminCallTimeout bounds one admin command's calls.
const adminCallTimeout = 30 * time.Second

// withAdmin runs call with a connection to the control plane as the CLI's
// admin identity, under a deadline.
func withAdmin(ctx context.Context, g *globalOptions, addrFlag string, call func(context.Context, *grpc.ClientConn) error) error {
	ctx, cancel := context.WithTimeout(ctx, adminCallTimeout)
	defer cancel()
	conn, err := adminConn(ctx, g, addrFlag)
	if err != nil {
		return err
	}
	defer conn.Close()
	return call(ctx, conn)
}
