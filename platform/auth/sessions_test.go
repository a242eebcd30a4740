package auth

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	authv1 "github.com/micromesh/micromesh/proto/auth/v1"
	userauth "github.com/micromesh/micromesh/service/auth"
)

// A login with a refresh token is a session: each refresh trades the
// token for a new one and an access token; a traded token presented again
// ends the session; revoking, deleting the account and expiry end it too;
// sessions survive a restart.
func TestSessions(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	if _, err := s.CreateAccount(admin, &authv1.CreateAccountRequest{Account: &authv1.Account{Name: "alice", Scopes: []string{"reports"}}, Secret: "alice's secret"}); err != nil {
		t.Fatal(err)
	}
	login := func() *authv1.TokenResponse {
		t.Helper()
		resp, err := s.Token(shop, &authv1.TokenRequest{Name: "alice", Secret: "alice's secret", Refreshable: true})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	refresh := func(tok string) (*authv1.RefreshResponse, error) {
		return s.Refresh(shop, &authv1.RefreshRequest{RefreshToken: tok, Ttl: durationpb.New(10 * time.Minute)})
	}

	// Without refreshable, no session.
	if resp, err := s.Token(shop, &authv1.TokenRequest{Name: "alice", Secret: "alice's secret"}); err != nil || resp.GetRefreshToken() != "" {
		t.Errorf("a plain login: %v, refresh token %q", err, resp.GetRefreshToken())
	}
	first := login()
	if !strings.HasPrefix(first.GetRefreshToken(), "mrt.") || time.Until(first.GetRefreshExpires().AsTime()) < RefreshTTL-time.Minute {
		t.Fatalf("refresh token %q until %v", first.GetRefreshToken(), first.GetRefreshExpires().AsTime())
	}
	second, err := refresh(first.GetRefreshToken())
	if err != nil {
		t.Fatal(err)
	}
	claims, err := userauth.NewVerifier(func(context.Context) (string, error) {
		r, err := s.PublicKeys(admin, &authv1.PublicKeysRequest{})
		return r.GetJwks(), err
	}).Verify(t.Context(), second.GetAccessToken())
	if err != nil || claims.Subject != "spiffe://micromesh.local/ns/default/user/alice" || len(claims.Scopes) != 1 {
		t.Errorf("the refreshed access token: %+v, %v", claims, err)
	}
	if d := time.Until(second.GetExpires().AsTime()); d < 9*time.Minute || d > 11*time.Minute {
		t.Errorf("the refreshed access token lasts %v, want 10m", d)
	}
	if second.GetRefreshToken() == first.GetRefreshToken() {
		t.Fatal("the refresh token was not rotated")
	}
	third, err := refresh(second.GetRefreshToken())
	if err != nil {
		t.Fatal(err)
	}
	// The first token, traded, again: copied — the session ends, and the
	// latest token with it.
	if _, err := refresh(first.GetRefreshToken()); code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "already used") {
		t.Errorf("a traded token again: %v", err)
	}
	if _, err := refresh(third.GetRefreshToken()); code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "unknown or revoked") {
		t.Errorf("the latest token of an ended session: %v", err)
	}

	// Bad input.
	for _, tok := range []string{"", "eyJhbGciOi.x.y", "mrt.short.secret", "mrt." + strings.Repeat("a", 22) + "." + strings.Repeat("b", 43)} {
		if _, err := refresh(tok); code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "log in again") {
			t.Errorf("refresh %q: %v", tok, err)
		}
	}
	if _, err := s.Refresh(shop, &authv1.RefreshRequest{RefreshToken: login().GetRefreshToken(), Ttl: durationpb.New(48 * time.Hour)}); code(err) != codes.InvalidArgument {
		t.Errorf("a 48h access token: %v", err)
	}
	if _, err := s.Refresh(as(""), &authv1.RefreshRequest{RefreshToken: login().GetRefreshToken()}); err == nil {
		t.Error("a refresh from no mesh caller was answered")
	}

	// Revoke ends a session; unknown tokens are fine.
	r := login()
	if _, err := s.Revoke(shop, &authv1.RevokeRequest{RefreshToken: r.GetRefreshToken()}); err != nil {
		t.Fatal(err)
	}
	if _, err := refresh(r.GetRefreshToken()); code(err) != codes.Unauthenticated {
		t.Errorf("after revoke: %v", err)
	}
	if _, err := s.Revoke(shop, &authv1.RevokeRequest{RefreshToken: "nonsense"}); err != nil {
		t.Errorf("revoking nonsense: %v", err)
	}

	// Sessions survive a restart; deleting the account ends them.
	kept := login()
	_ = s.Close()
	s = open(t, dir)
	again, err := refresh(kept.GetRefreshToken())
	if err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	if _, err := s.DeleteAccount(admin, &authv1.DeleteAccountRequest{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := refresh(again.GetRefreshToken()); code(err) != codes.Unauthenticated {
		t.Errorf("after the account was deleted: %v", err)
	}

	// Expiry.
	if _, err := s.CreateAccount(admin, &authv1.CreateAccountRequest{Account: &authv1.Account{Name: "alice"}, Secret: "alice's secret"}); err != nil {
		t.Fatal(err)
	}
	old := login()
	s.now = func() time.Time { return time.Now().Add(RefreshTTL + time.Minute) }
	if _, err := refresh(old.GetRefreshToken()); code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "expired") {
		t.Errorf("an expired refresh token: %v", err)
	}
}
