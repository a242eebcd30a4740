package auth

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	authv1 "github.com/micromesh/micromesh/proto/auth/v1"
	userauth "github.com/micromesh/micromesh/service/auth"
)

// as is a call's context as the caller's sidecar hands it on.
func as(id string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("x-mesh-caller", id))
}

var (
	admin = as("spiffe://micromesh.local/ns/micromesh/svc/meshctl")
	shop  = as("spiffe://micromesh.local/ns/shop/svc/orders")
)

func open(t *testing.T, dir string) *Server {
	t.Helper()
	s, err := Open(dir, "micromesh.local", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func code(err error) codes.Code { return status.Code(err) }

func TestAccountsAndTokens(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)

	// A secret made for the account, shown once.
	made, err := s.CreateAccount(admin, &authv1.CreateAccountRequest{Account: &authv1.Account{Name: "alice"}})
	if err != nil || len(made.GetSecret()) < 24 || made.GetAccount().GetNamespace() != "default" {
		t.Fatalf("create alice: %v %v", made, err)
	}
	if _, err := s.CreateAccount(admin, &authv1.CreateAccountRequest{Account: &authv1.Account{Name: "ops", Namespace: "shop", Scopes: []string{"admin"}}, Secret: "twelve chars"}); err != nil {
		t.Fatal(err)
	}

	// Bad input, each refused with what is wrong; nothing changes.
	for _, tc := range []struct {
		ctx  context.Context
		req  *authv1.CreateAccountRequest
		code codes.Code
		want string
	}{
		{admin, &authv1.CreateAccountRequest{Account: &authv1.Account{Name: "alice"}}, codes.AlreadyExists, "account alice of namespace default exists"},
		{admin, &authv1.CreateAccountRequest{Account: &authv1.Account{Name: "Alice"}}, codes.InvalidArgument, "account"},
		{admin, &authv1.CreateAccountRequest{Account: &authv1.Account{Name: "bob", Namespace: "Shop"}}, codes.InvalidArgument, "namespace"},
		{admin, &authv1.CreateAccountRequest{Account: &authv1.Account{Name: "bob"}, Secret: "short"}, codes.InvalidArgument, "the secret is 5 characters"},
		{admin, &authv1.CreateAccountRequest{Account: &authv1.Account{Name: "bob", Scopes: []string{"a b"}}}, codes.InvalidArgument, `scope "a b"`},
		{shop, &authv1.CreateAccountRequest{Account: &authv1.Account{Name: "bob"}}, codes.PermissionDenied, "managed by the platform's identities"},
		{context.Background(), &authv1.CreateAccountRequest{Account: &authv1.Account{Name: "bob"}}, codes.Unauthenticated, "through the mesh"},
	} {
		_, err := s.CreateAccount(tc.ctx, tc.req)
		if code(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("create %v: %v, want %v with %q", tc.req, err, tc.code, tc.want)
		}
	}
	list, err := s.ListAccounts(admin, &authv1.ListAccountsRequest{})
	if err != nil || len(list.GetAccounts()) != 2 {
		t.Fatalf("accounts: %v %v", list, err)
	}
	if list, _ := s.ListAccounts(admin, &authv1.ListAccountsRequest{Namespace: "shop"}); len(list.GetAccounts()) != 1 || list.GetAccounts()[0].GetName() != "ops" {
		t.Errorf("shop's accounts: %v", list)
	}

	// A token, verified with the public keys; any mesh caller may ask.
	tok, err := s.Token(shop, &authv1.TokenRequest{Name: "alice", Secret: made.GetSecret()})
	if err != nil || tok.GetSubject() != "spiffe://micromesh.local/ns/default/user/alice" {
		t.Fatalf("token: %v %v", tok, err)
	}
	v := userauth.NewVerifier(func(ctx context.Context) (string, error) {
		r, err := s.PublicKeys(admin, &authv1.PublicKeysRequest{})
		return r.GetJwks(), err
	})
	c, err := v.Verify(context.Background(), tok.GetAccessToken())
	if err != nil || c.Subject != tok.GetSubject() || c.Namespace != "default" || c.Name != "alice" {
		t.Fatalf("verify: %+v %v", c, err)
	}
	if got := time.Until(c.Expiry.Time()); got < 59*time.Minute || got > time.Hour {
		t.Errorf("a token lasts %v, want an hour", got)
	}

	// Refused tokens, each with its reason.
	s.now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	old, err := s.Token(shop, &authv1.TokenRequest{Name: "alice", Secret: made.GetSecret(), Ttl: durationpb.New(time.Minute)})
	s.now = time.Now
	if err != nil {
		t.Fatal(err)
	}
	sig := tok.GetAccessToken()
	tampered := sig[:len(sig)-4] + map[bool]string{true: "AAAA", false: "BBBB"}[!strings.HasSuffix(sig, "AAAA")]
	for name, tc := range map[string]struct{ tok, want string }{
		"expired":     {old.GetAccessToken(), "expired at"},
		"tampered":    {tampered, "signature does not verify"},
		"not a token": {"hello", "not a signed JWT"},
	} {
		if _, err := v.Verify(context.Background(), tc.tok); !errors.Is(err, userauth.ErrInvalidToken) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}

	// Wrong secrets: the same answer for an unknown account; past five in
	// a row the account waits.
	if _, err := s.Token(shop, &authv1.TokenRequest{Name: "nobody", Secret: "whatever1234"}); code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "wrong account name or secret") {
		t.Errorf("unknown account: %v", err)
	}
	for range 5 {
		if _, err := s.Token(shop, &authv1.TokenRequest{Name: "alice", Secret: "not the secret"}); code(err) != codes.Unauthenticated {
			t.Fatalf("wrong secret: %v", err)
		}
	}
	if _, err := s.Token(shop, &authv1.TokenRequest{Name: "alice", Secret: made.GetSecret()}); code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "too many failed logins for alice") {
		t.Errorf("after five failures: %v", err)
	}
	if _, err := s.Token(shop, &authv1.TokenRequest{Name: "ops", Namespace: "shop", Secret: "twelve chars", Ttl: durationpb.New(48 * time.Hour)}); code(err) != codes.InvalidArgument {
		t.Errorf("a two-day token: %v", err)
	}

	// Restart: the accounts and the key are kept (old tokens verify).
	_ = s.Close()
	s2 := open(t, dir)
	if _, err := s2.Token(shop, &authv1.TokenRequest{Name: "ops", Namespace: "shop", Secret: "twelve chars"}); err != nil {
		t.Errorf("after a restart: %v", err)
	}
	v2 := userauth.NewVerifier(func(ctx context.Context) (string, error) {
		r, err := s2.PublicKeys(admin, &authv1.PublicKeysRequest{})
		return r.GetJwks(), err
	})
	if _, err := v2.Verify(context.Background(), tok.GetAccessToken()); err != nil {
		t.Errorf("a token from before the restart: %v", err)
	}
	if _, err := s2.DeleteAccount(admin, &authv1.DeleteAccountRequest{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.DeleteAccount(admin, &authv1.DeleteAccountRequest{Name: "alice"}); code(err) != codes.NotFound {
		t.Errorf("deleting twice: %v", err)
	}
	for _, f := range []string{"signing.jwk", "accounts.db"} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want 0600", f, fi.Mode(), err)
		}
	}
}

// A signing key others can read is refused at start.
func TestSigningKeyMode(t *testing.T) {
	dir := t.TempDir()
	_ = open(t, dir).Close()
	if err := os.Chmod(filepath.Join(dir, "signing.jwk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, "micromesh.local", slog.Default()); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Errorf("open with a 0644 key: %v", err)
	}
}
