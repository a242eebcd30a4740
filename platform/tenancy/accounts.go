package tenancy

import (
	"context"
	"errors"
	"slices"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/identity"
	userauth "github.com/micromesh/micromesh/service/auth"
)

// AdminScope lets an account act in every namespace, as the platform's
// identities do.
const AdminScope = "admin"

// Services are the platform services that act for accounts (Accounts):
// what the platform's edges — the remote proxy, the API gateway — serve
// to every account, in its namespace.
var Services = []string{"store", "config", "broker", "events"}

// Accounts makes a platform service act for the accounts the platform's
// edges (the remote proxy, the API gateway) call it for: when a platform
// identity's call carries an access token (authorization: Bearer), the
// token is verified with v and the call acts as that account — in its
// namespace alone, unless it has the scope admin (Namespace, Caller's
// user). A token that does not verify is refused (UNAUTHENTICATED). Calls
// of workloads, and the platform's own calls without a token, are as
// before.
func Accounts(v *userauth.Verifier) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			ctx, err := forAccount(ctx, v)
			if err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			ctx, err := forAccount(ss.Context(), v)
			if err != nil {
				return err
			}
			return h(srv, &accountStream{ServerStream: ss, ctx: ctx})
		}),
	}
}

type accountStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *accountStream) Context() context.Context { return s.ctx }

type accountKey struct{}

// forAccount binds the call to the account of the token a platform
// caller passes on.
func forAccount(ctx context.Context, v *userauth.Verifier) (context.Context, error) {
	id, err := Caller(ctx)
	if err != nil || !IsPlatform(id) {
		return ctx, nil // Namespace answers for these
	}
	claims, err := v.VerifyCall(ctx)
	if errors.Is(err, userauth.ErrNoToken) {
		return ctx, nil // the platform's own call
	}
	if err != nil {
		return ctx, status.Errorf(codes.Unauthenticated, "the access token passed on by %s: %v", id, err)
	}
	if slices.Contains(claims.Scopes, AdminScope) {
		return ctx, nil // acts as the platform does
	}
	user := identity.ID{TrustDomain: id.TrustDomain, Namespace: claims.Namespace, Kind: identity.KindUser, Name: claims.Name}
	if err := user.Validate(); err != nil {
		return ctx, status.Errorf(codes.Unauthenticated, "the access token passed on by %s names no account: %v", id, err)
	}
	return context.WithValue(ctx, accountKey{}, user), nil
}

// account is the account a call acts for (Accounts), if any.
func account(ctx context.Context) (identity.ID, bool) {
	id, ok := ctx.Value(accountKey{}).(identity.ID)
	return id, ok
}
