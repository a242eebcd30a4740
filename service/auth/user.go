package auth

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/micromesh/micromesh/internal/envconfig"
	authv1 "github.com/micromesh/micromesh/proto/auth/v1"
	"github.com/micromesh/micromesh/service"
)

// ErrNoToken: the call carries no access token (no authorization
// metadata, or not a Bearer one).
var ErrNoToken = errors.New("the call carries no access token (Authorization: Bearer …)")

// Service is the auth service's name, as a service dials it.
const Service = "auth.micromesh"

// defaults is the verifier User uses, one per sidecar address: a process
// has one sidecar for its life, but a test may start several in turn.
var defaults struct {
	sync.Mutex
	proxy string
	v     *Verifier
	conn  *grpc.ClientConn
}

// defaultVerifier is the verifier of the auth service reached through the
// sidecar at $MESH_PROXY, made on first use. A failure to dial is not
// kept: the next call tries again.
func defaultVerifier() (*Verifier, error) {
	proxy := os.Getenv(envconfig.Proxy)
	defaults.Lock()
	defer defaults.Unlock()
	if defaults.v != nil && defaults.proxy == proxy {
		return defaults.v, nil
	}
	conn, err := service.Dial(context.Background(), Service)
	if err != nil {
		return nil, err
	}
	if defaults.conn != nil {
		_ = defaults.conn.Close()
	}
	client := authv1.NewAuthServiceClient(conn)
	defaults.proxy, defaults.conn = proxy, conn
	defaults.v = NewVerifier(func(ctx context.Context) (string, error) {
		resp, err := client.PublicKeys(ctx, &authv1.PublicKeysRequest{})
		return resp.GetJwks(), err
	})
	return defaults.v, nil
}

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
	v, err := defaultVerifier()
	if err != nil {
		return nil, err
	}
	return v.Verify(ctx, tok)
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
