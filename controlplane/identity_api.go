package controlplane

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/identity/ca"
	identityv1 "github.com/micromesh/micromesh/proto/identity/v1"
)

// identityAPI serves the Identity API from the embedded CA.
type identityAPI struct {
	identityv1.UnimplementedIdentityServiceServer
	ca     *ca.CA
	log    *slog.Logger
	issued *prometheus.CounterVec
}

var _ identityv1.IdentityServiceServer = (*identityAPI)(nil)

func (a *identityAPI) Sign(ctx context.Context, req *identityv1.SignRequest) (*identityv1.SignResponse, error) {
	chain, err := a.ca.Sign(ctx, req.GetCsr(), req.GetToken())
	if err != nil {
		// The token is a secret: log only its ID.
		attrs := []any{"method", "Sign", "err", err}
		if info, ierr := identity.InspectToken(req.GetToken()); ierr == nil {
			attrs = append(attrs, "token_id", shortID(info.TokenID), "token_for", info.ID.String())
		}
		return nil, a.refuse(ctx, err, attrs)
	}
	cert, err := identity.ToProto(chain, a.ca.Bundle())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode certificate: %v", err)
	}
	a.issued.WithLabelValues("sign").Inc()
	a.log.Info("issued certificate", "id", cert.GetSpiffeId(), "serial", chain[0].SerialNumber.String(), "not_after", chain[0].NotAfter)
	return &identityv1.SignResponse{Certificate: cert}, nil
}

func (a *identityAPI) Renew(ctx context.Context, req *identityv1.RenewRequest) (*identityv1.RenewResponse, error) {
	chain, err := a.ca.Renew(ctx, peerCertificates(ctx), req.GetCsr())
	if err != nil {
		return nil, a.refuse(ctx, err, []any{"method", "Renew", "err", err})
	}
	cert, err := identity.ToProto(chain, a.ca.Bundle())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode certificate: %v", err)
	}
	a.issued.WithLabelValues("renew").Inc()
	a.log.Info("renewed certificate", "id", cert.GetSpiffeId(), "serial", chain[0].SerialNumber.String(), "not_after", chain[0].NotAfter)
	return &identityv1.RenewResponse{Certificate: cert}, nil
}

func (a *identityAPI) TrustBundle(context.Context, *identityv1.TrustBundleRequest) (*identityv1.TrustBundleResponse, error) {
	resp := &identityv1.TrustBundleResponse{TrustDomain: a.ca.TrustDomain()}
	for _, r := range a.ca.Bundle().Roots() {
		resp.Roots = append(resp.Roots, r.Raw)
	}
	return resp, nil
}

// authorizeAdmin admits operators: identities of namespace micromesh.
func (a *identityAPI) authorizeAdmin(ctx context.Context) (identity.ID, error) {
	id, err := verifiedPeer(ctx, a.ca.Bundle())
	if err != nil {
		return identity.ID{}, status.Error(codes.Unauthenticated, err.Error())
	}
	if !isAdmin(id) {
		return identity.ID{}, status.Errorf(codes.PermissionDenied, "revocation is for identities of namespace %s (operators); %s is not one", identity.SystemNamespace, id)
	}
	return id, nil
}

func (a *identityAPI) Revoke(ctx context.Context, req *identityv1.RevokeRequest) (*identityv1.RevokeResponse, error) {
	caller, err := a.authorizeAdmin(ctx)
	if err != nil {
		return nil, err
	}
	var revoked []ca.Revoked
	switch t := req.GetTarget().(type) {
	case *identityv1.RevokeRequest_Serial:
		var r ca.Revoked
		r, err = a.ca.RevokeSerial(t.Serial, req.GetReason())
		revoked = []ca.Revoked{r}
	case *identityv1.RevokeRequest_SpiffeId:
		var id identity.ID
		if id, err = identity.ParseID(t.SpiffeId); err == nil {
			revoked, err = a.ca.RevokeID(id, req.GetReason())
		}
	case *identityv1.RevokeRequest_Service:
		ns := t.Service.GetNamespace()
		if ns == "" {
			ns = identity.DefaultNamespace
		}
		var id identity.ID
		if id, err = identity.ServiceID(a.ca.TrustDomain(), ns, t.Service.GetName()); err == nil {
			revoked, err = a.ca.RevokeID(id, req.GetReason())
		}
	default:
		err = fmt.Errorf("%w: name what to revoke: a certificate's serial, a service or a SPIFFE ID", identity.ErrInvalid)
	}
	if err != nil {
		return nil, a.refuse(ctx, err, []any{"method", "Revoke", "caller", caller.String(), "err", err})
	}
	a.log.Info("revoked", "caller", caller.String(), "certificates", len(revoked))
	return &identityv1.RevokeResponse{Revoked: revokedProto(revoked)}, nil
}

func (a *identityAPI) ListRevoked(ctx context.Context, _ *identityv1.ListRevokedRequest) (*identityv1.ListRevokedResponse, error) {
	if _, err := a.authorizeAdmin(ctx); err != nil {
		return nil, err
	}
	revoked, err := a.ca.Revoked()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read revocations: %v", err)
	}
	resp := &identityv1.ListRevokedResponse{Revoked: revokedProto(revoked)}
	if crl := a.ca.Revocations(); crl != nil {
		resp.Crl = crl.PEM()
	}
	return resp, nil
}

func revokedProto(rs []ca.Revoked) []*identityv1.RevokedCertificate {
	out := make([]*identityv1.RevokedCertificate, len(rs))
	for i, r := range rs {
		out[i] = &identityv1.RevokedCertificate{Serial: r.Serial, SpiffeId: r.ID.String(), Reason: r.Reason,
			RevokedAt: timestamppb.New(r.RevokedAt), ExpiresAt: timestamppb.New(r.ExpiresAt)}
	}
	return out
}

// refuse logs a refused request and returns its status.
func (a *identityAPI) refuse(ctx context.Context, err error, attrs []any) error {
	st := statusOf(err)
	if p, ok := peer.FromContext(ctx); ok {
		attrs = append(attrs, "peer", p.Addr.String())
	}
	attrs = append(attrs, "code", st.Code().String())
	a.log.Warn("refused", attrs...)
	return st.Err()
}

// statusOf maps identity errors to gRPC statuses; the message is the error's,
// written for a person to act on.
func statusOf(err error) *status.Status {
	switch {
	case errors.Is(err, identity.ErrInvalid):
		return status.New(codes.InvalidArgument, err.Error())
	case errors.Is(err, identity.ErrUnauthenticated):
		return status.New(codes.Unauthenticated, err.Error())
	case errors.Is(err, identity.ErrPermissionDenied):
		return status.New(codes.PermissionDenied, err.Error())
	case errors.Is(err, identity.ErrNotFound):
		return status.New(codes.NotFound, err.Error())
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, err.Error())
	default:
		return status.New(codes.Internal, err.Error())
	}
}

// peerCertificates returns the certificates the caller presented over TLS.
func peerCertificates(ctx context.Context) []*x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil
	}
	return info.State.PeerCertificates
}

// verifiedPeer returns the SPIFFE ID of the caller's verified certificate.
// The TLS handshake proved the caller holds the certificate's key; the
// chain is verified here (the listener takes callers without one, for
// Sign), and the result kept for the connection (peerCache).
func verifiedPeer(ctx context.Context, bundle *identity.Bundle) (identity.ID, error) {
	return verifiedPeers.verify(peerCertificates(ctx), bundle, time.Now())
}

// peerCache keeps, per connection and trust bundle, the identity a
// verified chain stands for, until the chain's first expiry or for
// peerCacheFor, whichever is sooner: a proxy's heartbeats and span
// exports then cost a map lookup instead of two ECDSA verifications each.
// A connection's TLS state holds its peer's certificates for the
// connection's life, so the leaf's pointer names the connection; a new
// bundle (a rotated root) is a new key, verified afresh.
type peerCache struct {
	mu sync.Mutex
	m  map[peerKey]peerEntry
}

type peerKey struct {
	leaf   *x509.Certificate
	bundle *identity.Bundle
}

type peerEntry struct {
	id    identity.ID
	until time.Time
}

const (
	peerCacheFor  = time.Minute
	peerCacheSize = 16 << 10
)

var verifiedPeers = &peerCache{m: map[peerKey]peerEntry{}}

func (c *peerCache) verify(certs []*x509.Certificate, bundle *identity.Bundle, now time.Time) (identity.ID, error) {
	if len(certs) == 0 {
		_, _, err := bundle.VerifyCertificates(nil, now)
		return identity.ID{}, err
	}
	k := peerKey{certs[0], bundle}
	c.mu.Lock()
	v, ok := c.m[k]
	c.mu.Unlock()
	if ok && now.Before(v.until) {
		// Verified before; revoked since?
		if err := bundle.CheckRevoked(v.id, certs[:1]); err != nil {
			return identity.ID{}, err
		}
		return v.id, nil
	}
	id, _, err := bundle.VerifyCertificates(certs, now)
	if err != nil {
		return id, err
	}
	until := now.Add(peerCacheFor)
	for _, cert := range certs {
		if cert.NotAfter.Before(until) {
			until = cert.NotAfter
		}
	}
	c.mu.Lock()
	if len(c.m) >= peerCacheSize {
		for k, v := range c.m {
			if !now.Before(v.until) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= peerCacheSize {
			clear(c.m) // more live connections than the bound: start over
		}
	}
	c.m[k] = peerEntry{id: id, until: until}
	c.mu.Unlock()
	return id, nil
}

func shortID(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
