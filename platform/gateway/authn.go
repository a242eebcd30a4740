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
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/micromesh/micromesh/platform/tenancy"
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

// The gateway's own paths for tokens (no service is named "_": not a DNS
// label). TokenPath trades an account's secret for an access token: POST
// {"name":…,"namespace":…,"secret":…,"ttl":"10m","refresh":true} — with
// refresh, a session's refresh token too; RefreshPath trades a refresh
// token for new tokens: POST {"refresh_token":…,"ttl":"10m"}; RevokePath
// ends its session: POST {"refresh_token":…}.
const (
	TokenPath   = "/_/token"
	RefreshPath = "/_/refresh"
	RevokePath  = "/_/revoke"
)

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
	next      http.Handler
	mode      string
	verifier  *auth.Verifier
	client    authv1.AuthServiceClient
	namespace string // of paths that name none
}

func (a *authenticated) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case TokenPath, RefreshPath, RevokePath:
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
	if ns := a.pathNamespace(r); ns != "" && ns != claims.Namespace && !slices.Contains(claims.Scopes, AdminScope) && !forAccounts(r, a.namespace) {
		writeError(w, merrors.Forbidden("gateway", "%s may call services of namespace %s, not %s", claims.Subject, claims.Namespace, ns))
		return
	}
	a.next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, claims)))
}

// forAccounts reports whether a path names one of the platform's services
// that act in the account's namespace (/store.micromesh/…: tenancy), which
// every account may call.
func forAccounts(r *http.Request, namespace string) bool {
	t, err := parseTarget(r.URL.EscapedPath(), namespace)
	return err == nil && t.ns == xds.SystemNamespace && slices.Contains(tenancy.Services, t.name)
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

// token serves the token paths, through the auth service.
func (a *authenticated) token(w http.ResponseWriter, r *http.Request) {
	usage := map[string]string{
		TokenPath:   `{"name":"…","namespace":"…","secret":"…","ttl":"1h","refresh":true}`,
		RefreshPath: `{"refresh_token":"…","ttl":"1h"}`,
		RevokePath:  `{"refresh_token":"…"}`,
	}[r.URL.Path]
	if r.Method != http.MethodPost {
		methodNotAllowed(w, "POST", "POST "+r.URL.Path+" "+usage)
		return
	}
	var req struct {
		Name         string `json:"name"`
		Namespace    string `json:"namespace"`
		Secret       string `json:"secret"`
		TTL          string `json:"ttl"`
		Refresh      bool   `json:"refresh"`
		RefreshToken string `json:"refresh_token"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, merrors.BadRequest("gateway", "the body: want %s: %v", usage, err))
		return
	}
	var ttl *durationpb.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			writeError(w, merrors.BadRequest("gateway", "ttl %q: %v", req.TTL, err))
			return
		}
		ttl = durationpb.New(d)
	}
	var (
		resp interface {
			GetAccessToken() string
			GetExpires() *timestamppb.Timestamp
			GetSubject() string
			GetRefreshToken() string
			GetRefreshExpires() *timestamppb.Timestamp
		}
		err error
	)
	switch r.URL.Path {
	case TokenPath:
		resp, err = a.client.Token(r.Context(), &authv1.TokenRequest{Name: req.Name, Namespace: req.Namespace, Secret: req.Secret, Ttl: ttl, Refreshable: req.Refresh})
	case RefreshPath:
		resp, err = a.client.Refresh(r.Context(), &authv1.RefreshRequest{RefreshToken: req.RefreshToken, Ttl: ttl})
	case RevokePath:
		if _, err := a.client.Revoke(r.Context(), &authv1.RevokeRequest{RefreshToken: req.RefreshToken}); err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"revoked": true})
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	out := map[string]any{"access_token": resp.GetAccessToken(), "token_type": "Bearer",
		"expires": resp.GetExpires().AsTime().Format(time.RFC3339), "subject": resp.GetSubject()}
	if resp.GetRefreshToken() != "" {
		out["refresh_token"] = resp.GetRefreshToken()
		out["refresh_expires"] = resp.GetRefreshExpires().AsTime().Format(time.RFC3339)
	}
	writeJSON(w, http.StatusOK, out)
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
