package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/micromesh/micromesh/dataplane/xdswire"
)

// JWT is a compiled jwt_authn filter (Envoy's): one provider of tokens —
// its issuer, audiences and keys (a JWK set in the config: local_jwks) —
// and rules saying which requests need a token. A request's token, taken
// from a header after a prefix ("Authorization: Bearer …"), is verified
// (ES256, ES384 or ES512 signature, issuer, audience, expiry and
// not-before with the provider's clock skew); its claims are what RBAC's
// metadata principals match (Request.Claims).
type JWT struct {
	provider   string
	issuer     string
	audiences  []string
	keys       []jwk
	header     string // canonical
	prefix     string
	forward    bool
	payloadKey string
	skew       time.Duration
	rules      []jwtRule

	mu    sync.Mutex
	cache map[string]verified // tokens verified, until they expire
}

type jwk struct {
	kid  string
	alg  string
	hash func() hash.Hash
	key  *ecdsa.PublicKey
}

type jwtRule struct {
	path PathMatch // as a route's
	need jwtNeed
}

// jwtNeed is a requirement as an or-list: the token verified, or missing
// allowed, or failing allowed (allow_missing_or_failed).
type jwtNeed struct {
	provider, missing, failed bool
}

type verified struct {
	claims map[string]any
	until  time.Time
}

// maxTokenCache bounds the verified tokens kept; past it the cache starts
// over (a verification is ~50 µs; a cache hit skips it).
const maxTokenCache = 4096

// maxToken bounds a token's size (Envoy's default jwt_max_token_size is
// 4 KiB; tokens of the auth service are ~500 bytes).
const maxToken = 8 << 10

// ErrNoToken is the error of a request that carries no token where one is
// needed.
var ErrNoToken = errors.New("no access token (Authorization: Bearer)")

func compileJWT(m *xdswire.JWTAuthentication) (*JWT, error) {
	if m.Refused != "" {
		return nil, fmt.Errorf("jwt_authn %s is not supported", m.Refused)
	}
	if len(m.Providers) != 1 {
		return nil, fmt.Errorf("jwt_authn has %d providers; the proxy takes one", len(m.Providers))
	}
	j := &JWT{cache: map[string]verified{}}
	for name, p := range m.Providers {
		if err := j.compileProvider(name, p); err != nil {
			return nil, fmt.Errorf("jwt_authn provider %q: %w", name, err)
		}
	}
	for i, r := range m.Rules {
		rule, err := j.compileRule(r)
		if err != nil {
			return nil, fmt.Errorf("jwt_authn rule %d: %w", i, err)
		}
		j.rules = append(j.rules, rule)
	}
	return j, nil
}

func (j *JWT) compileProvider(name string, p *xdswire.JWTProvider) error {
	switch {
	case p.Refused != "":
		return fmt.Errorf("%s is not supported", p.Refused)
	case p.LocalJWKS == nil:
		return errors.New("no keys (local_jwks)")
	case p.LocalJWKS.Filename != "":
		return errors.New("keys from a file are not supported (inline them)")
	case len(p.FromHeaders) > 1:
		return errors.New("tokens from more than one header are not supported")
	}
	j.provider, j.issuer, j.audiences, j.forward, j.payloadKey = name, p.Issuer, p.Audiences, p.Forward, p.PayloadInMetadata
	j.header, j.prefix = "Authorization", "Bearer "
	if len(p.FromHeaders) == 1 {
		j.header, j.prefix = http.CanonicalHeaderKey(p.FromHeaders[0].Name), p.FromHeaders[0].ValuePrefix
	}
	j.skew = 60 * time.Second // Envoy's default
	if p.ClockSkewSeconds != nil {
		j.skew = time.Duration(*p.ClockSkewSeconds) * time.Second
	}
	set := p.LocalJWKS.InlineString
	if set == "" {
		set = string(p.LocalJWKS.InlineBytes)
	}
	keys, err := parseJWKS([]byte(set))
	if err != nil {
		return err
	}
	j.keys = keys
	return nil
}

func (j *JWT) compileRule(r *xdswire.RequirementRule) (jwtRule, error) {
	m := r.Match
	if m == nil {
		return jwtRule{}, errors.New("no match")
	}
	if m.Unsupported != "" {
		return jwtRule{}, fmt.Errorf("path specifier %s is not supported", m.Unsupported)
	}
	if m.Conditions != "" || readsHeaders(m) || len(m.QueryParameters) > 0 || m.RuntimeFraction != nil {
		return jwtRule{}, errors.New("a match on more than the path is not supported")
	}
	path, err := compilePathMatch(m)
	if err != nil {
		return jwtRule{}, err
	}
	rule := jwtRule{path: path}
	if r.RequirementName != "" {
		return jwtRule{}, errors.New("requirement_name is not supported (give the requirement)")
	}
	if r.Requires == nil {
		return rule, nil // no requirement: the request is not verified
	}
	need, err := j.compileNeed(r.Requires, true)
	rule.need = need
	return rule, err
}

// compileNeed reads a requirement into an or-list (requires_any of the
// provider and the allowances; nested lists are not).
func (j *JWT) compileNeed(r *xdswire.JWTRequirement, top bool) (jwtNeed, error) {
	var n jwtNeed
	switch {
	case r.Unsupported != "":
		return n, fmt.Errorf("requirement %s is not supported", r.Unsupported)
	case r.ProviderName != nil:
		if *r.ProviderName != j.provider {
			return n, fmt.Errorf("requirement names provider %q, which is not the filter's", *r.ProviderName)
		}
		n.provider = true
	case r.AllowMissing != nil:
		n.missing = true
	case r.AllowMissingOrFailed != nil:
		n.missing, n.failed = true, true
	case r.RequiresAll != nil && len(r.RequiresAll.Requirements) == 1:
		return j.compileNeed(r.RequiresAll.Requirements[0], top)
	case r.RequiresAny != nil && top:
		for _, sub := range r.RequiresAny.Requirements {
			s, err := j.compileNeed(sub, false)
			if err != nil {
				return n, err
			}
			n.provider, n.missing, n.failed = n.provider || s.provider, n.missing || s.missing, n.failed || s.failed
		}
	default:
		return n, errors.New("only provider_name, allow_missing, allow_missing_or_failed and requires_any of them are supported")
	}
	return n, nil
}

// Check applies the filter to a request: the first rule matching its path
// says whether it needs a token; a token it carries is verified. It
// answers the token's claims (nil when none verified) and, when the
// request may not pass (401), why — ErrNoToken or the reason its token
// did not verify.
func (j *JWT) Check(path string, h http.Header, now time.Time) (map[string]any, error) {
	var rule *jwtRule
	for i := range j.rules {
		if j.rules[i].path.matches(path) {
			rule = &j.rules[i]
			break
		}
	}
	if rule == nil || rule.need == (jwtNeed{}) {
		return nil, nil // not verified; the token goes on as it came
	}
	v, ok := h[j.header]
	if !ok || len(v) == 0 || !strings.HasPrefix(v[0], j.prefix) {
		if rule.need.missing {
			return nil, nil
		}
		return nil, ErrNoToken
	}
	token := v[0][len(j.prefix):]
	claims, err := j.verify(token, now)
	if err != nil {
		if rule.need.failed {
			return nil, nil
		}
		return nil, err
	}
	if !j.forward {
		h.Del(j.header)
	}
	return claims, nil
}

// PayloadKey is where a verified token's claims are in the filter's
// metadata (payload_in_metadata), as RBAC's metadata principals name it.
func (j *JWT) PayloadKey() string { return j.payloadKey }

func (j *JWT) verify(token string, now time.Time) (map[string]any, error) {
	j.mu.Lock()
	c, ok := j.cache[token]
	j.mu.Unlock()
	if ok && now.Before(c.until) {
		return c.claims, nil
	}
	claims, until, err := j.verifySlow(token, now)
	if err != nil {
		return nil, err
	}
	j.mu.Lock()
	if len(j.cache) >= maxTokenCache {
		clear(j.cache)
	}
	j.cache[token] = verified{claims, until}
	j.mu.Unlock()
	return claims, nil
}

// verifySlow checks the signature and the claims; until is when the
// answer stops holding (the expiry with the skew, at most an hour on).
func (j *JWT) verifySlow(token string, now time.Time) (map[string]any, time.Time, error) {
	fail := func(format string, a ...any) (map[string]any, time.Time, error) {
		return nil, time.Time{}, fmt.Errorf("the access token "+format, a...)
	}
	if len(token) > maxToken {
		return fail("is longer than %d bytes", maxToken)
	}
	head, rest, ok1 := strings.Cut(token, ".")
	body, sig, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(sig, ".") {
		return fail("is not a JWT (three parts)")
	}
	var header struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	if err := decodeJSONPart(head, &header); err != nil {
		return fail("header: %v", err)
	}
	s, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return fail("signature is not base64url")
	}
	signed := token[:len(head)+1+len(body)]
	good, known := false, false
	for _, k := range j.keys {
		if (header.Kid != "" && k.kid != "" && k.kid != header.Kid) || k.alg != header.Alg {
			continue
		}
		known = true
		if verifyES(k, signed, s) {
			good = true
			break
		}
	}
	switch {
	case !known:
		return fail("is signed with a key the mesh does not know (alg %q, kid %q)", header.Alg, header.Kid)
	case !good:
		return fail("has a bad signature")
	}
	var claims map[string]any
	if err := decodeJSONPart(body, &claims); err != nil {
		return fail("claims: %v", err)
	}
	if j.issuer != "" {
		if iss, _ := claims["iss"].(string); iss != j.issuer {
			return fail("is issued by %q, not %q", iss, j.issuer)
		}
	}
	if len(j.audiences) > 0 && !audienceIn(claims["aud"], j.audiences) {
		return fail("is not for audience %s", strings.Join(j.audiences, " or "))
	}
	until := now.Add(time.Hour)
	if exp, ok := claims["exp"]; ok {
		e, ok := exp.(float64)
		if !ok {
			return fail("exp is not a number")
		}
		expiry := time.Unix(int64(e), 0).Add(j.skew)
		if !now.Before(expiry) {
			return fail("expired at %s", time.Unix(int64(e), 0).UTC().Format(time.RFC3339))
		}
		if expiry.Before(until) {
			until = expiry
		}
	}
	if nbf, ok := claims["nbf"]; ok {
		n, ok := nbf.(float64)
		if !ok {
			return fail("nbf is not a number")
		}
		if now.Add(j.skew).Before(time.Unix(int64(n), 0)) {
			return fail("is not valid before %s", time.Unix(int64(n), 0).UTC().Format(time.RFC3339))
		}
	}
	return claims, until, nil
}

func decodeJSONPart(part string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		return errors.New("not base64url")
	}
	if err := json.Unmarshal(b, v); err != nil {
		return errors.New("not a JSON object")
	}
	return nil
}

func audienceIn(aud any, want []string) bool {
	var have []string
	switch a := aud.(type) {
	case string:
		have = []string{a}
	case []any:
		for _, x := range a {
			if s, ok := x.(string); ok {
				have = append(have, s)
			}
		}
	}
	for _, h := range have {
		for _, w := range want {
			if h == w {
				return true
			}
		}
	}
	return false
}

// ecAlg is a JWS ECDSA algorithm, with its curve (by its JWK name) and
// hash.
type ecAlg struct {
	alg, crv string
	curve    func() elliptic.Curve
	hash     func() hash.Hash
}

var ecAlgs = []ecAlg{
	{"ES256", "P-256", elliptic.P256, sha256.New},
	{"ES384", "P-384", elliptic.P384, sha512.New384},
	{"ES512", "P-521", elliptic.P521, sha512.New},
}

// verifyES checks a JWS ECDSA signature: r and s, each the curve's size,
// over the key's algorithm's hash.
func verifyES(k jwk, signed string, sig []byte) bool {
	size := (k.key.Curve.Params().BitSize + 7) / 8
	if len(sig) != 2*size {
		return false
	}
	h := k.hash()
	h.Write([]byte(signed))
	r, s := new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])
	return ecdsa.Verify(k.key, h.Sum(nil), r, s)
}

// parseJWKS reads a JWK set of EC public keys (P-256, P-384, P-521).
func parseJWKS(b []byte) ([]jwk, error) {
	var set struct {
		Keys []struct {
			Kty, Crv, X, Y, Kid, Alg, Use string
		} `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("the JWK set is not JSON: %w", err)
	}
	var out []jwk
	for i, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if k.Kty != "EC" {
			return nil, fmt.Errorf("JWK %d: key type %q is not supported (EC)", i, k.Kty)
		}
		ai := slices.IndexFunc(ecAlgs, func(a ecAlg) bool { return a.crv == k.Crv })
		if ai < 0 {
			return nil, fmt.Errorf("JWK %d: curve %q is not supported (P-256, P-384, P-521)", i, k.Crv)
		}
		alg, curve := ecAlgs[ai].alg, ecAlgs[ai].curve()
		if k.Alg != "" && k.Alg != alg {
			return nil, fmt.Errorf("JWK %d: algorithm %q does not fit curve %s", i, k.Alg, k.Crv)
		}
		x, err1 := base64.RawURLEncoding.DecodeString(k.X)
		y, err2 := base64.RawURLEncoding.DecodeString(k.Y)
		size := (curve.Params().BitSize + 7) / 8
		if err1 != nil || err2 != nil || len(x) != size || len(y) != size {
			return nil, fmt.Errorf("JWK %d: x and y are not %d bytes of base64url", i, size)
		}
		key, err := ecdsa.ParseUncompressedPublicKey(curve, append(append([]byte{4}, x...), y...))
		if err != nil {
			return nil, fmt.Errorf("JWK %d: %w", i, err)
		}
		out = append(out, jwk{kid: k.Kid, alg: alg, hash: ecAlgs[ai].hash, key: key})
	}
	return out, nil
}
