package cli

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/identity/ca"
	"github.com/micromesh/micromesh/internal/home"
)

// adminService is the CLI's identity toward the control plane: a service of
// the micromesh namespace, which the registry and admin APIs let act on
// every namespace.
const adminService = "meshctl"

// adminCredentials returns the CLI's admin certificate, kept under
// $MESH_HOME/cli/admin and renewed when it has less than minLife left. Getting
// one needs the local CA's token key: admin rights are the server machine's.
func adminCredentials(ctx context.Context, h home.Dir, addr string) (*identity.Credentials, error) {
	const minLife = 10 * time.Minute
	dir := h.CLICredentials()
	if c, err := identity.LoadCredentials(dir); err == nil && time.Until(c.Leaf().NotAfter) > minLife {
		return c, nil
	}
	signer, err := ca.LoadTokenSigner(h.CA())
	if err != nil {
		return nil, fmt.Errorf("admin commands run where the server's state is: %w", err)
	}
	id, err := identity.ServiceID(signer.TrustDomain(), identity.SystemNamespace, adminService)
	if err != nil {
		return nil, err
	}
	token, err := signer.Mint(id, time.Minute)
	if err != nil {
		return nil, err
	}
	roots, err := identity.ReadCertificates(h.RootCert())
	if err != nil {
		return nil, err
	}
	creds, err := identity.Join(ctx, addr, identity.NewBundle(signer.TrustDomain(), roots), id, token)
	if err != nil {
		return nil, err
	}
	if err := creds.WriteDir(dir); err != nil {
		return nil, err
	}
	return creds, nil
}

// adminConn connects to the control plane as the CLI's admin identity.
func adminConn(ctx context.Context, g *globalOptions, addrFlag string) (*grpc.ClientConn, error) {
	h := g.homeDir()
	addr := controlPlaneAddr(addrFlag, h)
	creds, err := adminCredentials(ctx, h, addr)
	if err != nil {
		return nil, err
	}
	cert := creds.TLSCertificate()
	cfg := identity.ClientTLSConfig(func() *identity.Bundle { return creds.Bundle }, func() *tls.Certificate { return cert },
		identity.AuthorizeID(identity.ControlPlaneID(creds.ID.TrustDomain)))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, fmt.Errorf("control plane %s: %w", addr, err)
	}
	return conn, nil
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
