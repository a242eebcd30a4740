package dataplane_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/meshtest"
	identityv1 "github.com/micromesh/micromesh/proto/identity/v1"
)

// An operator revokes a workload whose key may have leaked: its own
// sidecar stops (whatever runs it starts it again with a new join token),
// its peers refuse its certificate on the connections they already have
// and in every new handshake, the control plane renews it no more and it
// leaves the mesh; the service started again with a new join token works.
func TestRevokedWorkloadIsCutOff(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	a, b := echoPair(t, cp)
	c := cp.StartSidecar("default", "c", meshtest.WithApp(startEcho(t, "c"), "http"))
	waitReachable(t, c, "a")
	// A connection made with a's certificate before the revocation and
	// kept (HTTP/2 over TLS straight to b's inbound): what a thief of a's
	// key would hold.
	kept := tlsClient(a.Creds, b.Creds.ID)
	get := func() (*http.Response, string, bool) {
		t.Helper()
		reused := false
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "https://"+b.Info.Inbound+"/", nil)
		resp, err := kept.Do(req)
		if err != nil {
			t.Fatalf("a's kept connection to b: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body), reused
	}
	if resp, _, _ := get(); resp.StatusCode != http.StatusOK {
		t.Fatalf("a → b before the revocation: %d", resp.StatusCode)
	}

	ids := cp.IdentityClient()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := ids.Revoke(ctx, &identityv1.RevokeRequest{Target: &identityv1.RevokeRequest_SpiffeId{SpiffeId: a.Creds.ID.String()}, Reason: "key leaked"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetRevoked()) == 0 || resp.GetRevoked()[0].GetSpiffeId() != a.Creds.ID.String() || resp.GetRevoked()[0].GetReason() != "key leaked" {
		t.Fatalf("Revoke = %v", resp)
	}
	serial := a.Creds.Chain[0].SerialNumber.String()

	// a's sidecar finds itself in the list it is sent, and stops saying why.
	if err := a.WaitExit(t, 15*time.Second); err == nil || !strings.Contains(err.Error(), "was revoked") || !strings.Contains(err.Error(), serial) {
		t.Errorf("a's sidecar stopped with %v, want the revocation of %s", err, serial)
	}
	// b refuses a on the connection already made, naming why ...
	r, body, reused := get()
	if !reused || r.StatusCode != http.StatusForbidden || !strings.Contains(body, "was revoked") || !strings.Contains(body, serial) {
		t.Errorf("b on a's kept connection (reused %v): %d %q, want 403 saying a's certificate %s was revoked", reused, r.StatusCode, body, serial)
	}
	// ... and a new connection in its handshake.
	if _, err := tlsClient(a.Creds, b.Creds.ID).Get("https://" + b.Info.Inbound + "/"); err == nil {
		t.Error("b accepted a new connection from a")
	}
	// The control plane renews a's certificate no more, and a leaves the
	// registry (its deregistration is refused too: its TTL lapses).
	if _, _, err := identity.RemoteRenewer(cp.Info.Address)(ctx, a.Creds, meshtest.CSR(t, a.Creds.ID)); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("renewing a revoked certificate: %v, want a refusal saying it was revoked", err)
	}
	waitFor(t, "a to leave the registry", func() bool {
		snap, err := registry.List(ctx, cp.Registry())
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range snap.Instances {
			if in.Service == "a" && in.Health == registry.Passing {
				return false
			}
		}
		return true
	})
	// Everyone else is unaffected.
	if r, e := call(t, c.Info.Outbound, "b", "/", nil); r.StatusCode != http.StatusOK || e.Caller != c.Creds.ID.String() {
		t.Errorf("c → b after a's revocation: %d %+v", r.StatusCode, e)
	}
	list, err := ids.ListRevoked(ctx, &identityv1.ListRevokedRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetRevoked()) != len(resp.GetRevoked()) || !strings.Contains(string(list.GetCrl()), "BEGIN X509 CRL") {
		t.Errorf("ListRevoked = %d entries, CRL %q", len(list.GetRevoked()), list.GetCrl())
	}

	// a again, with a new join token: a new certificate, and it works
	// both ways.
	a2 := cp.StartSidecar("default", "a", meshtest.WithApp(startEcho(t, "a2"), "http"), meshtest.WithInstance("a-2"))
	waitReachable(t, a2, "b")
	waitFor(t, "c to reach the new a", func() bool {
		r, e := call(t, c.Info.Outbound, "a", "/", nil)
		return r.StatusCode == http.StatusOK && e.App == "a2"
	})
}

// Bad revocations are refused with a reason and change nothing; only
// operators revoke.
func TestRevokeRefusals(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	a, _ := echoPair(t, cp)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ids := cp.IdentityClient()
	for _, tc := range []struct {
		name string
		req  *identityv1.RevokeRequest
		code codes.Code
		says string
	}{
		{"nothing named", &identityv1.RevokeRequest{}, codes.InvalidArgument, "a service or a SPIFFE ID"},
		{"a serial that is not a number", &identityv1.RevokeRequest{Target: &identityv1.RevokeRequest_Serial{Serial: "abc"}}, codes.InvalidArgument, "decimal"},
		{"a serial never issued", &identityv1.RevokeRequest{Target: &identityv1.RevokeRequest_Serial{Serial: "42"}}, codes.NotFound, "42"},
		{"an ID that does not parse", &identityv1.RevokeRequest{Target: &identityv1.RevokeRequest_SpiffeId{SpiffeId: "http://x"}}, codes.InvalidArgument, "spiffe"},
		{"a service name that is no DNS label", &identityv1.RevokeRequest{Target: &identityv1.RevokeRequest_Service{Service: &identityv1.ServiceName{Name: "Bad_Name"}}}, codes.InvalidArgument, "DNS label"},
		{"a service never issued", &identityv1.RevokeRequest{Target: &identityv1.RevokeRequest_Service{Service: &identityv1.ServiceName{Name: "nobody", Namespace: "shop"}}}, codes.NotFound, "ns/shop/svc/nobody"},
		{"an ID never issued", &identityv1.RevokeRequest{Target: &identityv1.RevokeRequest_SpiffeId{SpiffeId: "spiffe://micromesh.local/ns/default/svc/nobody"}}, codes.NotFound, "nobody"},
		{"the control plane", &identityv1.RevokeRequest{Target: &identityv1.RevokeRequest_SpiffeId{SpiffeId: identity.ControlPlaneID("micromesh.local").String()}}, codes.PermissionDenied, "restart"},
		{"a reason of two lines", &identityv1.RevokeRequest{Target: &identityv1.RevokeRequest_SpiffeId{SpiffeId: a.Creds.ID.String()}, Reason: "a\nb"}, codes.InvalidArgument, "one line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ids.Revoke(ctx, tc.req)
			if status.Code(err) != tc.code || !strings.Contains(strings.ToLower(status.Convert(err).Message()), strings.ToLower(tc.says)) {
				t.Errorf("err = %v, want %v saying %q", err, tc.code, tc.says)
			}
		})
	}
	// A workload may not revoke, not even itself.
	own := identityv1.NewIdentityServiceClient(cp.Dial(a.Creds))
	if _, err := own.Revoke(ctx, &identityv1.RevokeRequest{Target: &identityv1.RevokeRequest_SpiffeId{SpiffeId: a.Creds.ID.String()}}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("a workload revoking: %v, want PermissionDenied", err)
	}
	if list, err := ids.ListRevoked(ctx, &identityv1.ListRevokedRequest{}); err != nil || len(list.GetRevoked()) != 0 || len(list.GetCrl()) != 0 {
		t.Errorf("after refusals: %v, %v", list, err)
	}
	waitReachable(t, a, "b")
}
