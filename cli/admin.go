package cli

import (
	"context"
	"time"

	"google.golang.org/grpc"

	"github.com/micromesh/micromesh/internal/join"
	"github.com/micromesh/micromesh/internal/meshclient"
)

// adminConn connects to the control plane as the CLI's admin identity.
func adminConn(ctx context.Context, g *globalOptions, addrFlag string) (*grpc.ClientConn, error) {
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
