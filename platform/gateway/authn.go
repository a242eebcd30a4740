package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	authv1 "github.com/micromesh/micromesh/proto/auth/v1"
	"github.com/micromesh/micromesh/service/auth"
	merrors "github.com/micromesh/micromesh/service/errors"
	"github.com/micromesh/micromesh/xds"
)

// Auth modes of the gateway: what it asks of a request's access token.
const (
	// AuthOff: tokens are not looked at (they reach the services as sent).
	AuthOff = "off"
	// AuthOptional: a request may carry a token; one that does not verify
	// is refused, one that does limits the request to its namespace.
	AuthOptional = "optional"
	// AuthRequired: every request carries a token that verifies.
	AuthRequired = "required"
)

// AdminScope lets a token reach every namespace's services.
const AdminScope = "admin"

// TokenPath is where the gateway trades an account's secret for a token:
// POST {"name":…,"namespace":…,"secret":…,"ttl":"10m"}. No service is
// named "_" (not a DNS label).
const TokenPath = "/_/token"

// ValidateAuthMode checks a mode's name.
func ValidateAuthMode(mode string) error {
	switch mode {
	case AuthOff, AuthOptional, AuthRequired:
		return nil
	}
	return fmt.Errorf("auth mode %q: %s, %s or %s", mode, AuthOff, AuthOptional, AuthRequired)
}

// userKey carries a request's verified token in its context.
type userKey struct{}

// userOf returns the verified token of the request in ctx, or nil.
func userOf(ctx context.Context) *auth.Claims {
	c, _ := ctx.Value(userKey{}).(*auth.Claims)
	return c
}

// authenticated checks requests' access tokens (Authorization: Bearer)
// against the auth service's keys before h sees them, per mode, and
// serves TokenPath.
type authenticated struct {
	next      *Handler
	mode      string
	verifier  *auth.Verifier
	client    authv1.AuthServiceClient
	namespace string // of paths that name none
}

func (a *authenticated) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == TokenPath {
		a.token(w, r)
		return
	}
	raw, hasToken := bearer(r)
	if !hasToken {
		if a.mode == AuthRequired {
			unauthorized(w, "", "this gateway needs an access token: Authorization: Bearer TOKEN (meshctl auth token NAME, or POST "+TokenPath+")")
			return
		}
		a.next.ServeHTTP(w, r)
		return
	}
	claims, err := a.verifier.Verify(r.Context(), raw)
	if errors.Is(err, auth.ErrInvalidToken) {
		unauthorized(w, "invalid_token", err.Error())
		return
	}
	if err != nil {
		writeError(w, &merrors.Error{ID: "gateway", Code: codes.Unavailable, Detail: err.Error()})
		return
	}
	if ns := a.pathNamespace(r); ns != "" && ns != claims.Namespace && !slices.Contains(claims.Scopes, AdminScope) {
		writeError(w, merrors.Forbidden("gateway", "%s may call services of namespace %s, not %s", claims.Subject, claims.Namespace, ns))
		return
	}
	a.next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, claims)))
}

// pathNamespace is the namespace of the service a path names ("" for
// none: the index, or a path that names no service, which the handler
// answers).
func (a *authenticated) pathNamespace(r *http.Request) string {
	t, err := parseTarget(r.URL.EscapedPath(), a.namespace)
	if err != nil {
		return ""
	}
	return t.ns
}

// token trades an account's secret for an access token, through the auth
// service.
func (a *authenticated) token(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, "POST", "POST "+TokenPath+` {"name":"…","namespace":"…","secret":"…"} for an access token`)
		return
	}
	var req struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
		Secret    string `json:"secret"`
		TTL       string `json:"ttl"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, merrors.BadRequest("gateway", `the body: want {"name":"…","namespace":"…","secret":"…","ttl":"1h"}: %v`, err))
		return
	}
	treq := &authv1.TokenRequest{Name: req.Name, Namespace: req.Namespace, Secret: req.Secret}
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			writeError(w, merrors.BadRequest("gateway", "ttl %q: %v", req.TTL, err))
			return
		}
		treq.Ttl = durationpb.New(d)
	}
	resp, err := a.client.Token(r.Context(), treq)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"access_token": resp.GetAccessToken(), "token_type": "Bearer",
		"expires": resp.GetExpires().AsTime().Format(time.RFC3339), "subject": resp.GetSubject()})
}

// bearer reads a request's access token.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false
	}
	scheme, tok, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", true // present, and not one the gateway reads: refused as invalid
	}
	return strings.TrimSpace(tok), true
}

// unauthorized answers 401 with the challenge RFC 6750 asks for.
func unauthorized(w http.ResponseWriter, code, detail string) {
	challenge := `Bearer realm="micromesh"`
	if code != "" {
		challenge += `, error="` + code + `"`
	}
	w.Header().Set("WWW-Authenticate", challenge)
	writeStatus(w, http.StatusUnauthorized, detail)
}

// platformAuthority is the auth service's, the gateway's calls to it.
const platformAuthority = "auth." + xds.SystemNamespace
