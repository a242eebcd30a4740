package controlplane_test

import (
	"strings"
	"testing"
	"time"

	resource "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/adstest"
	"github.com/micromesh/micromesh/internal/poll"
	identityv1 "github.com/micromesh/micromesh/proto/identity/v1"
)

// A revoked caller's open xDS streams — delta and state of the world —
// end with UNAUTHENTICATED once its proxy has had time to get the new
// list, and its new streams are refused; other callers' go on.
func TestRevokedCallersStreamsEnd(t *testing.T) {
	cp, client := meshOfAAndB(t)
	other := cp.Join("default", "other")
	ctx := ctxT(t)
	meta := map[string]any{"kind": "proxyless"}
	delta, err := dialAs(t, cp, client).StreamDelta(ctx, adstest.Node(identity.NodeID(client.ID, ""), meta))
	if err != nil {
		t.Fatal(err)
	}
	sotw, err := dialAs(t, cp, client).StreamSotW(ctx, adstest.Node(identity.NodeID(client.ID, "2"), meta))
	if err != nil {
		t.Fatal(err)
	}
	untouched, err := dialAs(t, cp, other).StreamDelta(ctx, adstest.Node(identity.NodeID(other.ID, ""), meta))
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []func() error{
		func() error { return delta.Subscribe(resource.EndpointType, "a.default") },
		func() error { return sotw.Subscribe(resource.EndpointType, "a.default") },
		func() error { return untouched.Subscribe(resource.EndpointType, "a.default") },
	} {
		if err := sub(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := delta.Recv(); err != nil {
		t.Fatal(err)
	}
	if _, err := sotw.Recv(); err != nil {
		t.Fatal(err)
	}
	first, err := untouched.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := untouched.Ack(first); err != nil {
		t.Fatal(err)
	}

	revoked := time.Now()
	if _, err := cp.IdentityClient().Revoke(ctx, &identityv1.RevokeRequest{Target: &identityv1.RevokeRequest_SpiffeId{SpiffeId: client.ID.String()}}); err != nil {
		t.Fatal(err)
	}
	if m := metrics(t, cp); !strings.Contains(m, "micromesh_ca_revoked_certificates 1\n") {
		t.Errorf("the control plane's metrics do not count the revoked certificate:\n%s", m)
	}
	ended := func(name string, recv func() error) {
		t.Helper()
		for {
			err := recv()
			if err == nil {
				continue // what was pushed before the end
			}
			if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "was revoked") {
				t.Errorf("%s stream ended with %v, want UNAUTHENTICATED saying the certificate was revoked", name, err)
			}
			return
		}
	}
	ended("delta", func() error { _, err := delta.Recv(); return err })
	ended("state-of-the-world", func() error { _, err := sotw.Recv(); return err })
	if took := time.Since(revoked); took > 10*time.Second {
		t.Errorf("the streams ended %v after the revocation", took)
	}
	// Logged once the streams are ended: a moment after their ends arrive.
	poll.Until(t, "the control plane to log ending them", 5*time.Second, 20*time.Millisecond, func() bool {
		return strings.Contains(cp.Logs(), "ended the streams of revoked certificates")
	})
	// A new stream is refused.
	if _, err := firstResponse(t, dialAs(t, cp, client), identity.NodeID(client.ID, ""), meta); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("a new stream of the revoked caller: %v", err)
	}
	// The other caller's stream is open: a change still reaches it.
	if err := cp.Registry().Deregister(ctx, "a-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := untouched.Recv(); err != nil {
		t.Errorf("another caller's stream: %v", err)
	}
}
