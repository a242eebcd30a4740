package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/timestamppb"

	identityv1 "github.com/micromesh/micromesh/proto/identity/v1"
)

// This file is the client side of the control plane's Identity API: how a
// workload joins the mesh with a token, renews, and bootstraps trust.

// dial connects to the control plane at addr over TLS, checking that it is
// the control plane of bundle's trust domain. cert, if not nil, is presented.
func dial(addr string, bundle *Bundle, cert *tls.Certificate) (*grpc.ClientConn, error) {
	var getCert func() *tls.Certificate
	if cert != nil {
		getCert = func() *tls.Certificate { return cert }
	}
	cfg := ClientTLSConfig(func() *Bundle { return bundle }, getCert, AuthorizeID(ControlPlaneID(bundle.TrustDomain())))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, fmt.Errorf("control plane %s: %w", addr, err)
	}
	return conn, nil
}

// Join obtains a workload's first credentials from the control plane at addr:
// a new key, a CSR for id, and Sign with the join token. bundle verifies the
// control plane; when it is nil, it is fetched and checked against the root
// fingerprint the token carries.
func Join(ctx context.Context, addr string, bundle *Bundle, id ID, token string) (*Credentials, error) {
	if bundle == nil {
		info, err := InspectToken(token)
		if err != nil {
			return nil, err
		}
		if bundle, err = FetchBundle(ctx, addr, info.ID.TrustDomain, info.RootSHA); err != nil {
			return nil, err
		}
	}
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := NewCSR(key, id)
	if err != nil {
		return nil, err
	}
	conn, err := dial(addr, bundle, nil)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	resp, err := identityv1.NewIdentityServiceClient(conn).Sign(ctx, &identityv1.SignRequest{Csr: csr, Token: token})
	if err != nil {
		return nil, err
	}
	chain, roots, err := fromProto(resp.GetCertificate())
	if err != nil {
		return nil, err
	}
	if len(roots) > 0 {
		bundle = NewBundle(bundle.TrustDomain(), roots)
	}
	creds := &Credentials{ID: id, Chain: chain, Key: key, Bundle: bundle}
	if _, _, err := bundle.VerifyCertificates(chain, time.Now()); err != nil {
		return nil, fmt.Errorf("the control plane returned a certificate that does not verify: %w", err)
	}
	return creds, nil
}

// RemoteRenewer returns a RenewFunc that calls Renew on the control plane at
// addr, authenticated by the current certificate. It connects afresh each
// time, so the handshake always presents the certificate in force.
func RemoteRenewer(addr string) RenewFunc {
	return func(ctx context.Context, cur *Credentials, csr []byte) ([]*x509.Certificate, *Bundle, error) {
		conn, err := dial(addr, cur.Bundle, cur.TLSCertificate())
		if err != nil {
			return nil, nil, err
		}
		defer conn.Close()
		resp, err := identityv1.NewIdentityServiceClient(conn).Renew(ctx, &identityv1.RenewRequest{Csr: csr})
		if err != nil {
			return nil, nil, err
		}
		chain, roots, err := fromProto(resp.GetCertificate())
		if err != nil {
			return nil, nil, err
		}
		bundle := cur.Bundle
		if len(roots) > 0 {
			bundle = NewBundle(cur.Bundle.TrustDomain(), roots)
		}
		return chain, bundle, nil
	}
}

// FetchBundle downloads the trust bundle of trust domain td from the control
// plane at addr, with nothing to verify the server by but rootSHA, the hex
// SHA-256 of the root (as a join token carries it). The bundle is accepted
// only if it holds that root and the server's own certificate chains to it
// and names the control plane.
func FetchBundle(ctx context.Context, addr, td, rootSHA string) (*Bundle, error) {
	if rootSHA == "" {
		return nil, errors.New("no root fingerprint to check the control plane against: pass the trust bundle (--bundle)")
	}
	var (
		mu     sync.Mutex
		served [][]byte
	)
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Nothing to verify against yet: the chain is recorded here and
		// checked below, once the bundle is in hand, before anything is trusted.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			mu.Lock()
			served = raw
			mu.Unlock()
			return nil
		},
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, fmt.Errorf("control plane %s: %w", addr, err)
	}
	defer conn.Close()
	resp, err := identityv1.NewIdentityServiceClient(conn).TrustBundle(ctx, &identityv1.TrustBundleRequest{})
	if err != nil {
		return nil, err
	}
	if resp.GetTrustDomain() != td {
		return nil, fmt.Errorf("%w: the control plane at %s serves trust domain %q, the token is for %q", ErrUntrusted, addr, resp.GetTrustDomain(), td)
	}
	var pinned *x509.Certificate
	for _, der := range resp.GetRoots() {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: the trust bundle holds a certificate that does not parse: %v", ErrUntrusted, err)
		}
		if Fingerprint(c) == rootSHA {
			pinned = c
		}
	}
	if pinned == nil {
		return nil, fmt.Errorf("%w: the control plane at %s does not serve the root the token names (sha256 %s)", ErrUntrusted, addr, rootSHA)
	}
	bundle := NewBundle(td, []*x509.Certificate{pinned})
	mu.Lock()
	chain := served
	mu.Unlock()
	id, _, err := bundle.Verify(chain, time.Now())
	if err != nil {
		return nil, fmt.Errorf("the server at %s: %w", addr, err)
	}
	if id != ControlPlaneID(td) {
		return nil, fmt.Errorf("%w: the server at %s is %s, not the control plane", ErrUntrusted, addr, id)
	}
	return bundle, nil
}

// ToProto encodes an issued chain and the bundle for the wire.
func ToProto(chain []*x509.Certificate, bundle *Bundle) (*identityv1.Certificate, error) {
	id, err := IDFromCertificate(chain[0])
	if err != nil {
		return nil, err
	}
	out := &identityv1.Certificate{SpiffeId: id.String()}
	for _, c := range chain {
		out.Chain = append(out.Chain, c.Raw)
	}
	for _, r := range bundle.Roots() {
		out.TrustBundle = append(out.TrustBundle, r.Raw)
	}
	out.NotAfter = timestamppb.New(chain[0].NotAfter)
	return out, nil
}

func fromProto(c *identityv1.Certificate) (chain, roots []*x509.Certificate, err error) {
	if c == nil || len(c.GetChain()) == 0 {
		return nil, nil, errors.New("the control plane returned no certificate")
	}
	for _, der := range c.GetChain() {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("the control plane returned a certificate that does not parse: %w", err)
		}
		chain = append(chain, cert)
	}
	for _, der := range c.GetTrustBundle() {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("the control plane returned a root that does not parse: %w", err)
		}
		roots = append(roots, cert)
	}
	return chain, roots, nil
}
