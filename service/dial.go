package service

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/micromesh/micromesh/internal/envconfig"
)

// serviceName is a service name, optionally with its namespace
// (`name.namespace`): DNS labels.
var serviceName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)?$`)

// Dial returns a connection to service name (`name`, or `name.namespace`
// for another namespace) through this service's sidecar at $MESH_PROXY. The
// hop to the sidecar is loopback; the sidecar carries the call over mTLS,
// picks an instance, retries and balances. Calls made with the context of
// a request being served carry its x-request-id and trace context (so
// the request's trace goes on through them). The connection is lazy: it
// connects on the first call, and ctx only bounds setting it up.
func Dial(ctx context.Context, name string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !serviceName.MatchString(name) {
		return nil, fmt.Errorf("service.Dial: %q is not a service name (lower-case letters, digits and '-', optionally .namespace)", name)
	}
	proxy := os.Getenv(envconfig.Proxy)
	if proxy == "" {
		return nil, fmt.Errorf("service.Dial %s: %s is not set: calls go through the service's sidecar, which `meshctl run` starts and names there", name, envconfig.Proxy)
	}
	o := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()), // loopback to the sidecar, which speaks mTLS onwards
		grpc.WithAuthority(name),
		// A call made while serving one carries its x-request-id and
		// trace context on.
		grpc.WithChainUnaryInterceptor(propagateUnary),
		grpc.WithChainStreamInterceptor(propagateStream),
	}, opts...)
	cc, err := grpc.NewClient("passthrough:///"+proxy, o...)
	if err != nil {
		return nil, fmt.Errorf("service.Dial %s: %w", name, err)
	}
	return cc, nil
}

// DialOnce returns a function that dials service name through the
// sidecar on its first call and wraps the connection with newClient; later
// calls return the same client (or the same error). The platform's client
// packages (service/store, broker, events, config) build their
// package-level functions on it.
func DialOnce[C any](name string, newClient func(grpc.ClientConnInterface) C) func() (C, error) {
	return sync.OnceValues(func() (C, error) {
		conn, err := Dial(context.Background(), name)
		if err != nil {
			var zero C
			return zero, err
		}
		return newClient(conn), nil
	})
}
