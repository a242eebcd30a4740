package auth

import (
	"context"
	"errors"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	authv1 "github.com/micromesh/micromesh/proto/auth/v1"
	"github.com/micromesh/micromesh/service"
)

// ErrNoToken: the call carries no access token (no authorization
// metadata, or not a Bearer one).
var ErrNoToken = errors.New("the call carries no access token (Authorization: Bearer …)")

// Service is the auth service's name, as a service dials it.
const Service = "auth.micromesh"

var (
	defaultOnce     sync.Once
	defaultVerifier *Verifier
	defaultErr      error
)

// User returns the verified claims of the access token the call in ctx
// carries: the user it is for. ErrNoToken when it carries none; an error
// wrapping ErrInvalidToken when the token does not verify. The keys come
// from the auth service through the service's sidecar (service.Dial), on
// the first call and when a token names a key not seen yet.
func User(ctx context.Context) (*Claims, error) {
	tok, err := bearerToken(ctx)
	if err != nil {
		return nil, err
	}
	defaultOnce.Do(func() {
		var conn *grpc.ClientConn
		conn, defaultErr = service.Dial(context.Background(), Service)
		if defaultErr != nil {
			return
		}
		client := authv1.NewAuthServiceClient(conn)
		defaultVerifier = NewVerifier(func(ctx context.Context) (string, error) {
			resp, err := client.PublicKeys(ctx, &authv1.PublicKeysRequest{})
			return resp.GetJwks(), err
		})
	})
	if defaultErr != nil {
		return nil, defaultErr
	}
	return defaultVerifier.Verify(ctx, tok)
}

// VerifyCall verifies the access token the call in ctx carries:
// ErrNoToken when it carries none.
func (v *Verifier) VerifyCall(ctx context.Context) (*Claims, error) {
	tok, err := bearerToken(ctx)
	if err != nil {
		return nil, err
	}
	return v.Verify(ctx, tok)
}

// bearerToken reads the access token of the call in ctx.
func bearerToken(ctx context.Context) (string, error) {
	vals := metadata.ValueFromIncomingContext(ctx, "authorization")
	if len(vals) != 1 {
		return "", ErrNoToken
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", ErrNoToken
	}
	return strings.TrimSpace(tok), nil
}
