package controlplane

import (
	"context"
	"crypto/x509"
	"errors"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/identity"
)

// liveStreams ends the streams of callers whose certificate is revoked: a
// revocation refuses new calls and connections at once (every handler
// verifies its caller against the CA's bundle, which checks the list), and
// this ends what was already open — a proxy's ADS stream, a tap, a trace
// export — so the proxy must reconnect and is refused.
type liveStreams struct {
	mu sync.Mutex
	m  map[*liveStream]struct{}
}

type liveStream struct {
	leaf   *x509.Certificate
	cancel context.CancelCauseFunc
}

// errRevokedStream ends a revoked caller's open streams.
var errRevokedStream = errors.New("the caller's certificate was revoked")

func newLiveStreams() *liveStreams { return &liveStreams{m: map[*liveStream]struct{}{}} }

// intercept tracks every stream of a caller with a certificate.
func (l *liveStreams) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	certs := peerCertificates(ss.Context())
	if len(certs) == 0 {
		return handler(srv, ss)
	}
	ctx, cancel := context.WithCancelCause(ss.Context())
	defer cancel(nil)
	s := &liveStream{leaf: certs[0], cancel: cancel}
	l.mu.Lock()
	l.m[s] = struct{}{}
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.m, s)
		l.mu.Unlock()
	}()
	err := handler(srv, &streamWithContext{ServerStream: ss, ctx: ctx})
	if errors.Is(context.Cause(ctx), errRevokedStream) {
		id, _ := identity.IDFromCertificate(s.leaf)
		return status.Errorf(codes.Unauthenticated, "the certificate of %s (serial %s) was revoked; the workload needs a new join token (meshctl cert token)", id, s.leaf.SerialNumber)
	}
	return err
}

// end ends the streams whose caller r revokes; it returns how many.
func (l *liveStreams) end(r *identity.Revocations) int {
	if r == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for s := range l.m {
		id, err := identity.IDFromCertificate(s.leaf)
		if err != nil {
			continue
		}
		if r.Check(id, []*x509.Certificate{s.leaf}) != nil {
			s.cancel(errRevokedStream)
			delete(l.m, s)
			n++
		}
	}
	return n
}

// streamWithContext is a stream whose context ends when its caller is
// revoked, and whose receives end then too: a handler blocked in a receive
// (go-control-plane's state-of-the-world ADS watches only its server's
// context) returns.
type streamWithContext struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *streamWithContext) Context() context.Context { return s.ctx }

func (s *streamWithContext) RecvMsg(m any) error {
	done := make(chan error, 1)
	go func() { done <- s.ServerStream.RecvMsg(m) }()
	select {
	case err := <-done:
		return err
	case <-s.ctx.Done():
		// The receive goes on until gRPC ends the stream, once the
		// handler has returned; m is not looked at again.
		return context.Cause(s.ctx)
	}
}
