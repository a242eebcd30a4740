package testsvc

import (
	"context"
	"strings"

	"google.golang.org/grpc/metadata"

	pb "github.com/micromesh/micromesh/examples/helloworld/proto"
	userauth "github.com/micromesh/micromesh/service/auth"
	merrors "github.com/micromesh/micromesh/service/errors"
)

// Whoami is a Helloworld whose Call answers with the subject of the call's
// access token (service/auth.User: verified with the auth service's keys,
// fetched through the service's sidecar) and the metadata "tenant" it was
// sent, if any: " tenant=…".
type Whoami struct {
	pb.UnimplementedHelloworldServer
}

// Call answers who the call is for.
func (Whoami) Call(ctx context.Context, _ *pb.CallRequest) (*pb.CallResponse, error) {
	u, err := userauth.User(ctx)
	if err != nil {
		return nil, merrors.Unauthorized("whoami.call", "%v", err)
	}
	msg := u.Subject
	md, _ := metadata.FromIncomingContext(ctx)
	if t := md.Get("tenant"); len(t) > 0 {
		msg += " tenant=" + strings.Join(t, ",")
	}
	return &pb.CallResponse{Msg: msg}, nil
}
