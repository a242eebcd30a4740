// Package tenancy tells a platform service which namespace a call acts in:
// the caller's own, from the SPIFFE ID its sidecar verified — or, for the
// platform's identities (the CLI), the one the request names; for an
// account the platform's edges call for (Accounts: the remote proxy or the
// API gateway passing a user's access token on), the account's.
package tenancy

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/service"
)

// Caller returns the verified caller of the call in ctx: the account a
// platform edge calls for (spiffe://…/ns/NS/user/NAME), else the workload.
func Caller(ctx context.Context) (identity.ID, error) {
	if id, ok := account(ctx); ok {
		return id, nil
	}
	raw := service.Caller(ctx)
	if raw == "" {
		return identity.ID{}, status.Error(codes.Unauthenticated, "platform services are reached through the mesh: no verified caller (x-mesh-caller)")
	}
	id, err := identity.ParseID(raw)
	if err != nil {
		return identity.ID{}, status.Errorf(codes.Unauthenticated, "caller %q: %v", raw, err)
	}
	return id, nil
}

// IsPlatform reports whether id is one of the platform's identities.
func IsPlatform(id identity.ID) bool { return id.Namespace == identity.SystemNamespace }

// Namespace is the namespace the call acts in: the caller's, or for a
// platform identity the one requested (default "default"). A workload
// naming another namespace gets PERMISSION_DENIED.
func Namespace(ctx context.Context, requested string) (identity.ID, string, error) {
	id, err := Caller(ctx)
	if err != nil {
		return id, "", err
	}
	if IsPlatform(id) {
		if requested == "" {
			return id, identity.DefaultNamespace, nil
		}
		if err := identity.ValidateName("namespace", requested); err != nil {
			return id, "", status.Error(codes.InvalidArgument, err.Error())
		}
		return id, requested, nil
	}
	if requested != "" && requested != id.Namespace {
		return id, "", status.Errorf(codes.PermissionDenied, "%s may act in its own namespace (%s), not %s", id, id.Namespace, requested)
	}
	// A workload, or an account (whose identity names its namespace).
	return id, id.Namespace, nil
}
