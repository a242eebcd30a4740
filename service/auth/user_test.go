package auth

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/metadata"
)

// A call without a Bearer token has no user, whatever else it carries;
// User says so before it asks anyone for keys.
func TestUserWithoutAToken(t *testing.T) {
	for _, md := range []metadata.MD{nil, metadata.Pairs("authorization", "Basic YWxpY2U6eA=="), metadata.Pairs("authorization", "Bearer "),
		metadata.Pairs("authorization", "Bearer a", "authorization", "Bearer b")} {
		ctx := context.Background()
		if md != nil {
			ctx = metadata.NewIncomingContext(ctx, md)
		}
		if _, err := User(ctx); !errors.Is(err, ErrNoToken) {
			t.Errorf("%v: %v, want ErrNoToken", md, err)
		}
	}
}
