package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"

	"go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/micromesh/micromesh/platform/tenancy"
	authv1 "github.com/micromesh/micromesh/proto/auth/v1"
)

// Sessions: a login that asked for a refresh token (Token with
// refreshable: meshctl login) is a session. Its refresh token is
// "mrt.<session id>.<secret>"; the file keeps the session's account, the
// SHA-256 of its current secret and its expiry. Each Refresh trades the
// token for a new one (rotation); a token presented again after its trade
// was copied, and ends the session (reuse detection, as OAuth 2.1 asks).
// Deleting an account ends its sessions; Revoke ends one.

// RefreshTTL is how long a refresh token lasts after it is issued.
const RefreshTTL = 30 * 24 * time.Hour

const refreshPrefix = "mrt."

var sessionsBucket = []byte("sessions")

// session is a login's refresh state, by id.
type session struct {
	Account string    `json:"account"` // namespace/name
	Hash    []byte    `json:"hash"`    // SHA-256 of the current secret
	Expires time.Time `json:"expires"`
	Started time.Time `json:"started"`
}

// startSession begins a session for the account at key and answers its
// first refresh token.
func (s *Server) startSession(key string) (string, time.Time, error) {
	id, err := randomToken(16)
	if err != nil {
		return "", time.Time{}, err
	}
	secret, err := randomToken(32)
	if err != nil {
		return "", time.Time{}, err
	}
	now := s.now()
	sess := session{Account: key, Hash: hashSecret(secret), Expires: now.Add(RefreshTTL), Started: now}
	s.mu.Lock()
	sweep := now.Sub(s.swept) > time.Hour // expired sessions go, hourly at most
	if sweep {
		s.swept = now
	}
	s.mu.Unlock()
	err = s.db.Update(func(tx *bbolt.Tx) error {
		if sweep {
			if err := deleteSessions(tx, func(old session) bool { return !now.Before(old.Expires) }); err != nil {
				return err
			}
		}
		return putSession(tx, id, sess)
	})
	if err != nil {
		return "", time.Time{}, err
	}
	return refreshPrefix + id + "." + secret, sess.Expires, nil
}

// Refresh trades a refresh token for new tokens (see the API's comment).
func (s *Server) Refresh(ctx context.Context, req *authv1.RefreshRequest) (*authv1.RefreshResponse, error) {
	if _, err := tenancy.Caller(ctx); err != nil {
		return nil, err
	}
	ttl, err := tokenTTL(req.GetTtl())
	if err != nil {
		return nil, err
	}
	id, secret, ok := parseRefresh(req.GetRefreshToken())
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "not a refresh token (it starts "+refreshPrefix+"): log in again")
	}
	next, err := randomToken(32)
	if err != nil {
		return nil, err
	}
	now := s.now()
	var (
		acc     stored
		refused string // why, once the transaction is done (its deletions kept)
		until   time.Time
	)
	err = s.db.Update(func(tx *bbolt.Tx) error {
		sessions := tx.Bucket(sessionsBucket)
		v := sessions.Get([]byte(id))
		if v == nil {
			refused = "unknown or revoked refresh token"
			return nil
		}
		var sess session
		if err := json.Unmarshal(v, &sess); err != nil {
			return err
		}
		switch {
		case !now.Before(sess.Expires):
			refused = "the refresh token expired at " + sess.Expires.UTC().Format(time.RFC3339)
			return sessions.Delete([]byte(id))
		case subtle.ConstantTimeCompare(hashSecret(secret), sess.Hash) != 1:
			refused = "the refresh token was already used, so it was copied: its session is ended"
			s.log.Warn("a used refresh token was presented again: session ended", "account", sess.Account)
			return sessions.Delete([]byte(id))
		}
		a := tx.Bucket(bucket).Get([]byte(sess.Account))
		if a == nil {
			refused = "the account no longer exists"
			return sessions.Delete([]byte(id))
		}
		if err := json.Unmarshal(a, &acc); err != nil {
			return err
		}
		sess.Hash, sess.Expires = hashSecret(next), now.Add(RefreshTTL)
		until = sess.Expires
		return putSession(tx, id, sess)
	})
	if err != nil {
		return nil, err
	}
	if refused != "" {
		return nil, status.Error(codes.Unauthenticated, refused+": log in again")
	}
	tok, exp, err := s.issue(acc, ttl)
	if err != nil {
		return nil, err
	}
	return &authv1.RefreshResponse{AccessToken: tok, Expires: timestamppb.New(exp), Subject: acc.subject(s.td),
		RefreshToken: refreshPrefix + id + "." + next, RefreshExpires: timestamppb.New(until)}, nil
}

// Revoke ends a refresh token's session.
func (s *Server) Revoke(ctx context.Context, req *authv1.RevokeRequest) (*authv1.RevokeResponse, error) {
	if _, err := tenancy.Caller(ctx); err != nil {
		return nil, err
	}
	id, _, ok := parseRefresh(req.GetRefreshToken())
	if !ok {
		return &authv1.RevokeResponse{}, nil
	}
	err := s.db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(sessionsBucket).Delete([]byte(id)) })
	if err != nil {
		return nil, err
	}
	return &authv1.RevokeResponse{}, nil
}

// endSessionsOf ends the sessions of the account at key.
func endSessionsOf(tx *bbolt.Tx, key string) error {
	return deleteSessions(tx, func(sess session) bool { return sess.Account == key })
}

// sweepSessions forgets expired sessions.
func (s *Server) sweepSessions() error {
	now := s.now()
	s.swept = now
	return s.db.Update(func(tx *bbolt.Tx) error {
		return deleteSessions(tx, func(sess session) bool { return !now.Before(sess.Expires) })
	})
}

func deleteSessions(tx *bbolt.Tx, match func(session) bool) error {
	b := tx.Bucket(sessionsBucket)
	var ids [][]byte
	err := b.ForEach(func(k, v []byte) error {
		var sess session
		if err := json.Unmarshal(v, &sess); err != nil {
			return err
		}
		if match(sess) {
			ids = append(ids, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := b.Delete(id); err != nil {
			return err
		}
	}
	return nil
}

func putSession(tx *bbolt.Tx, id string, sess session) error {
	v, err := json.Marshal(sess)
	if err != nil {
		return err
	}
	return tx.Bucket(sessionsBucket).Put([]byte(id), v)
}

// parseRefresh splits a refresh token into its session id and secret.
func parseRefresh(tok string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(tok, refreshPrefix)
	if !ok {
		return "", "", false
	}
	id, secret, ok = strings.Cut(rest, ".")
	return id, secret, ok && len(id) == 22 && len(secret) == 43
}

func hashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// randomToken is n random bytes, base64url.
func randomToken(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
