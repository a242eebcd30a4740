// Package auth is the platform's auth service: user accounts (a name and a
// secret in a namespace, with scopes) and the access tokens they trade
// their secret for — JWTs (ES256) whose subject is
// spiffe://<td>/ns/<namespace>/user/<name>, verified by whoever holds the
// service's public keys (service/auth.Verifier: the API gateway, and
// services themselves). Accounts live in a
// bbolt file under $MESH_HOME/auth, secrets as bcrypt hashes; the signing
// key beside it (0600). docs/auth.md.
package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"go.etcd.io/bbolt"
	"go.step.sm/crypto/jose"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/atomicfile"
	"github.com/micromesh/micromesh/internal/keyfile"
	"github.com/micromesh/micromesh/platform/tenancy"
	authv1 "github.com/micromesh/micromesh/proto/auth/v1"
	userauth "github.com/micromesh/micromesh/service/auth"
)

// Token lifetimes and the issuer and audience of every token.
const (
	DefaultTokenTTL = time.Hour
	MinTokenTTL     = time.Minute
	MaxTokenTTL     = 24 * time.Hour
	minSecret       = 12
	maxSecret       = 256
	// Failures in a row before an account's logins are held back, and the
	// longest wait.
	freeFailures = 5
	maxLockout   = 5 * time.Minute
)

var bucket = []byte("accounts")

// Server implements the Auth API.
type Server struct {
	authv1.UnimplementedAuthServiceServer
	db  *bbolt.DB
	key *jose.JSONWebKey
	td  string
	log *slog.Logger
	now func() time.Time

	mu       sync.Mutex
	failures map[string]*failures
	swept    time.Time // expired sessions last forgotten
}

type failures struct {
	count int
	until time.Time
}

// stored is an account as the file keeps it.
type stored struct {
	Name      string    `json:"name"`
	Namespace string    `json:"namespace"`
	Scopes    []string  `json:"scopes,omitempty"`
	Created   time.Time `json:"created"`
	Hash      []byte    `json:"hash"`
}

// Open opens (or creates) the accounts and the signing key under dir, for
// trust domain td.
func Open(dir, td string, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := signingKey(filepath.Join(dir, "signing.jwk"))
	if err != nil {
		return nil, err
	}
	db, err := bbolt.Open(filepath.Join(dir, "accounts.db"), 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("auth: opening the accounts: %w", err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucket); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(sessionsBucket)
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	srv := &Server{db: db, key: key, td: td, log: log, now: time.Now, failures: map[string]*failures{}}
	if err := srv.sweepSessions(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return srv, nil
}

// Close closes the accounts.
func (s *Server) Close() error { return s.db.Close() }

// signingKey reads the ES256 key at path, making it (0600) on first use.
func signingKey(path string) (*jose.JSONWebKey, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		if err := keyfile.CheckPrivate(path, "the accounts' signing key"); err != nil {
			return nil, err
		}
		var key jose.JSONWebKey
		if err := json.Unmarshal(data, &key); err != nil || key.IsPublic() {
			return nil, fmt.Errorf("%s: not a private JWK (%v)", path, err)
		}
		return &key, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key, err := jose.GenerateJWK("EC", "P-256", "ES256", "sig", "", 0)
	if err != nil {
		return nil, err
	}
	if key.KeyID, err = jose.Thumbprint(key); err != nil {
		return nil, err
	}
	if data, err = json.Marshal(key); err != nil {
		return nil, err
	}
	return key, atomicfile.Write(path, data, 0o600)
}

var scopeRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

// accountKey names an account in the file; it validates both names.
func accountKey(ns, name string) (string, string, error) {
	if ns == "" {
		ns = identity.DefaultNamespace
	}
	if err := identity.ValidateName("account", name); err != nil {
		return "", "", status.Error(codes.InvalidArgument, err.Error())
	}
	if err := identity.ValidateName("namespace", ns); err != nil {
		return "", "", status.Error(codes.InvalidArgument, err.Error())
	}
	return ns, ns + "/" + name, nil
}

// platformOnly lets only the platform's identities manage accounts.
func platformOnly(ctx context.Context) error {
	id, err := tenancy.Caller(ctx)
	if err != nil {
		return err
	}
	if !tenancy.IsPlatform(id) {
		return status.Errorf(codes.PermissionDenied, "accounts are managed by the platform's identities (namespace %s), not %s", identity.SystemNamespace, id)
	}
	return nil
}

func (s *Server) CreateAccount(ctx context.Context, req *authv1.CreateAccountRequest) (*authv1.CreateAccountResponse, error) {
	if err := platformOnly(ctx); err != nil {
		return nil, err
	}
	a := req.GetAccount()
	ns, key, err := accountKey(a.GetNamespace(), a.GetName())
	if err != nil {
		return nil, err
	}
	if len(a.GetScopes()) > 16 {
		return nil, status.Errorf(codes.InvalidArgument, "%d scopes: at most 16", len(a.GetScopes()))
	}
	for _, sc := range a.GetScopes() {
		if !scopeRE.MatchString(sc) {
			return nil, status.Errorf(codes.InvalidArgument, "scope %q: 1–64 letters, digits, '.', '_', ':' or '-'", sc)
		}
	}
	secret, made := req.GetSecret(), ""
	if secret == "" {
		b := make([]byte, 24)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		secret = base64.RawURLEncoding.EncodeToString(b)
		made = secret
	}
	if n := len(secret); n < minSecret || n > maxSecret {
		return nil, status.Errorf(codes.InvalidArgument, "the secret is %d characters: between %d and %d, or none for one to be made", n, minSecret, maxSecret)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(secret), bcrypt.DefaultCost)
	if err != nil {
		return nil, err
	}
	acc := stored{Name: a.GetName(), Namespace: ns, Scopes: a.GetScopes(), Created: s.now().UTC().Truncate(time.Second), Hash: hash}
	data, err := json.Marshal(acc)
	if err != nil {
		return nil, err
	}
	err = s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucket)
		if b.Get([]byte(key)) != nil {
			return status.Errorf(codes.AlreadyExists, "account %s of namespace %s exists (delete it first to replace it)", acc.Name, ns)
		}
		return b.Put([]byte(key), data)
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("account created", "account", acc.Name, "namespace", ns, "scopes", acc.Scopes)
	return &authv1.CreateAccountResponse{Account: acc.proto(), Secret: made}, nil
}

func (s *Server) DeleteAccount(ctx context.Context, req *authv1.DeleteAccountRequest) (*authv1.DeleteAccountResponse, error) {
	if err := platformOnly(ctx); err != nil {
		return nil, err
	}
	ns, key, err := accountKey(req.GetNamespace(), req.GetName())
	if err != nil {
		return nil, err
	}
	err = s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucket)
		if b.Get([]byte(key)) == nil {
			return status.Errorf(codes.NotFound, "no account %s in namespace %s", req.GetName(), ns)
		}
		if err := endSessionsOf(tx, key); err != nil {
			return err
		}
		return b.Delete([]byte(key))
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("account deleted", "account", req.GetName(), "namespace", ns)
	return &authv1.DeleteAccountResponse{}, nil
}

func (s *Server) ListAccounts(ctx context.Context, req *authv1.ListAccountsRequest) (*authv1.ListAccountsResponse, error) {
	if err := platformOnly(ctx); err != nil {
		return nil, err
	}
	prefix := ""
	if ns := req.GetNamespace(); ns != "" {
		if err := identity.ValidateName("namespace", ns); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		prefix = ns + "/"
	}
	resp := &authv1.ListAccountsResponse{}
	err := s.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		for k, v := c.Seek([]byte(prefix)); k != nil && string(k[:min(len(k), len(prefix))]) == prefix; k, v = c.Next() {
			var acc stored
			if err := json.Unmarshal(v, &acc); err != nil {
				return err
			}
			resp.Accounts = append(resp.Accounts, acc.proto())
		}
		return nil
	})
	return resp, err
}

func (s *Server) Token(ctx context.Context, req *authv1.TokenRequest) (*authv1.TokenResponse, error) {
	if _, err := tenancy.Caller(ctx); err != nil {
		return nil, err
	}
	ns, key, err := accountKey(req.GetNamespace(), req.GetName())
	if err != nil {
		return nil, err
	}
	ttl, err := tokenTTL(req.GetTtl())
	if err != nil {
		return nil, err
	}
	if wait := s.heldBack(key); wait > 0 {
		return nil, status.Errorf(codes.ResourceExhausted, "too many failed logins for %s in namespace %s: try again in %v", req.GetName(), ns, wait.Round(time.Second))
	}
	var acc stored
	err = s.db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucket).Get([]byte(key))
		if v == nil {
			return nil
		}
		return json.Unmarshal(v, &acc)
	})
	if err != nil {
		return nil, err
	}
	hash := acc.Hash
	if hash == nil {
		hash = unknownHash // the same work for an unknown account
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(req.GetSecret())) != nil || acc.Hash == nil {
		s.failed(key)
		s.log.Info("login refused", "account", req.GetName(), "namespace", ns)
		return nil, status.Error(codes.Unauthenticated, "wrong account name or secret")
	}
	s.succeeded(key)
	tok, exp, err := s.issue(acc, ttl)
	if err != nil {
		return nil, err
	}
	resp := &authv1.TokenResponse{AccessToken: tok, Expires: timestamppb.New(exp), Subject: acc.subject(s.td)}
	if req.GetRefreshable() {
		refresh, until, err := s.startSession(key)
		if err != nil {
			return nil, err
		}
		resp.RefreshToken, resp.RefreshExpires = refresh, timestamppb.New(until)
	}
	return resp, nil
}

// issue signs an access token for acc, lasting ttl.
func (s *Server) issue(acc stored, ttl time.Duration) (string, time.Time, error) {
	now := s.now()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: s.key.Key},
		new(jose.SignerOptions).WithType("JWT").WithHeader("kid", s.key.KeyID))
	if err != nil {
		return "", time.Time{}, err
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", time.Time{}, err
	}
	claims := userauth.Claims{
		Claims: jose.Claims{
			Issuer: userauth.Issuer, Subject: acc.subject(s.td), Audience: jose.Audience{userauth.Audience}, ID: base64.RawURLEncoding.EncodeToString(jti),
			IssuedAt: jose.NewNumericDate(now), NotBefore: jose.NewNumericDate(now), Expiry: jose.NewNumericDate(now.Add(ttl)),
		},
		Namespace: acc.Namespace, Name: acc.Name, Scopes: acc.Scopes,
	}
	tok, err := jose.Signed(signer).Claims(claims).CompactSerialize()
	if err != nil {
		return "", time.Time{}, err
	}
	return tok, now.Add(ttl), nil
}

// tokenTTL reads a requested lifetime (DefaultTokenTTL when none).
func tokenTTL(d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return DefaultTokenTTL, nil
	}
	ttl := d.AsDuration()
	if ttl < MinTokenTTL || ttl > MaxTokenTTL {
		return 0, status.Errorf(codes.InvalidArgument, "ttl %v: between %v and %v", ttl, MinTokenTTL, MaxTokenTTL)
	}
	return ttl, nil
}

func (s *Server) PublicKeys(ctx context.Context, _ *authv1.PublicKeysRequest) (*authv1.PublicKeysResponse, error) {
	if _, err := tenancy.Caller(ctx); err != nil {
		return nil, err
	}
	b, err := s.PublicKeySet()
	if err != nil {
		return nil, err
	}
	return &authv1.PublicKeysResponse{Jwks: string(b)}, nil
}

// PublicKeySet is the JWK set (JSON) tokens are verified with: what
// PublicKeys answers, and what the control plane gives the services'
// sidecars (controlplane.Server.SetAccountKeys).
func (s *Server) PublicKeySet() ([]byte, error) {
	pub := s.key.Public()
	return json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}})
}

// unknownHash is compared against for accounts that do not exist, so an
// unknown name costs what a wrong secret does.
var unknownHash, _ = bcrypt.GenerateFromPassword([]byte("no account has this secret"), bcrypt.DefaultCost)

// heldBack is how long an account's logins wait after failures in a row.
func (s *Server) heldBack(key string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.failures[key]; f != nil {
		return f.until.Sub(s.now())
	}
	return 0
}

// failed counts a failure: past freeFailures in a row, the account waits
// 1 s, doubling with each failure, up to maxLockout.
func (s *Server) failed(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.failures[key]
	if f == nil {
		if len(s.failures) > 100_000 { // bounded: a flood of names forgets the oldest state
			clear(s.failures)
		}
		f = &failures{}
		s.failures[key] = f
	}
	f.count++
	if f.count >= freeFailures {
		f.until = s.now().Add(min(time.Second<<min(f.count-freeFailures, 20), maxLockout))
	}
}

func (s *Server) succeeded(key string) {
	s.mu.Lock()
	delete(s.failures, key)
	s.mu.Unlock()
}

func (a stored) proto() *authv1.Account {
	return &authv1.Account{Name: a.Name, Namespace: a.Namespace, Scopes: a.Scopes, Created: timestamppb.New(a.Created)}
}

// subject is the account's identity: spiffe://<td>/ns/<ns>/user/<name>.
func (a stored) subject(td string) string {
	return "spiffe://" + td + "/ns/" + a.Namespace + "/" + identity.KindUser + "/" + a.Name
}
