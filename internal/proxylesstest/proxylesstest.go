// Package proxylesstest dials services of a test's mesh as a proxyless
// gRPC client does: grpc-go's own xDS resolver and xDS credentials,
// bootstrapped as `meshctl bootstrap grpc` would. It is a package of its
// own so that only the tests that use it link grpc-go's xDS client.
package proxylesstest

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	grpcxds "google.golang.org/grpc/xds"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/xds/bootstrap"
)

// Dial returns a connection to xds:///target (a service: "name" or
// "name.namespace") as workload name of namespace ns, closed when the
// test ends.
func Dial(t testing.TB, cp *meshtest.ControlPlane, ns, name, target string) *grpc.ClientConn {
	t.Helper()
	dir := t.TempDir()
	creds := cp.Join(ns, name)
	if err := creds.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	doc, err := bootstrap.GRPC(bootstrap.GRPCOptions{
		ServerURI: cp.Info.Address,
		NodeID:    identity.NodeID(creds.ID, ""),
		Cluster:   name,
		Files: bootstrap.Files{
			Cert: filepath.Join(dir, identity.CertFile), Key: filepath.Join(dir, identity.KeyFile), Bundle: filepath.Join(dir, identity.BundleFile),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bootstrap.json"), doc, 0o600); err != nil {
		t.Fatal(err)
	}
	resolver, err := grpcxds.NewXDSResolverWithConfigForTesting(doc)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///"+target, grpc.WithResolvers(resolver), grpc.WithTransportCredentials(tc))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}
