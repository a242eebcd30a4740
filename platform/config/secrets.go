package config

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// A secret is stored in the tree as an object with one key, secretKey:
// {"$secret": {"box": base64(nonce ‖ AES-GCM(value JSON)), "readers": [...]}}.
const secretKey = "$secret"

// Shown is what a secret reads as without the right (or without asking).
const Shown = "[secret]"

type sealed struct {
	Box     string   `json:"box"`
	Readers []string `json:"readers,omitempty"`
}

func isSecret(m map[string]any) bool {
	if len(m) != 1 {
		return false
	}
	_, ok := m[secretKey]
	return ok
}

// sealer encrypts and decrypts secrets with one AES-256-GCM key.
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("config: the secret key must be 32 bytes, not %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

// seal wraps v as a secret; ad binds it to its namespace and path.
func (s *sealer) seal(v any, readers []string, ad string) (any, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	box := s.aead.Seal(nonce, nonce, plain, []byte(ad))
	return map[string]any{secretKey: map[string]any{"box": base64.StdEncoding.EncodeToString(box), "readers": toAny(readers)}}, nil
}

func toAny(ss []string) []any {
	out := make([]any, 0, len(ss))
	for _, s := range ss {
		out = append(out, s)
	}
	return out
}

var errNoRight = errors.New("no right to read this secret")

// reveal replaces secrets in v (in place) by their values when decrypt
// and the reader may read them, by Shown otherwise; ad is the path prefix
// of v.
func (s *sealer) reveal(v any, decrypt bool, reader string, platform bool, ns string, path string) (any, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return v, nil
	}
	if isSecret(m) {
		if !decrypt {
			return Shown, nil
		}
		raw, _ := json.Marshal(m[secretKey])
		var sl sealed
		if err := json.Unmarshal(raw, &sl); err != nil {
			return nil, fmt.Errorf("config: a damaged secret at %s", path)
		}
		if !platform && len(sl.Readers) > 0 && !slices.Contains(sl.Readers, reader) {
			return nil, fmt.Errorf("%w at %s (readers: %v)", errNoRight, path, sl.Readers)
		}
		box, err := base64.StdEncoding.DecodeString(sl.Box)
		if err != nil || len(box) < s.aead.NonceSize() {
			return nil, fmt.Errorf("config: a damaged secret at %s", path)
		}
		plain, err := s.aead.Open(nil, box[:s.aead.NonceSize()], box[s.aead.NonceSize():], []byte(ns+"/"+path))
		if err != nil {
			return nil, fmt.Errorf("config: the secret at %s does not decrypt with this key", path)
		}
		var out any
		if err := json.Unmarshal(plain, &out); err != nil {
			return nil, err
		}
		return out, nil
	}
	for k, child := range m {
		p := k
		if path != "" {
			p = path + "." + k
		}
		r, err := s.reveal(child, decrypt, reader, platform, ns, p)
		if err != nil {
			return nil, err
		}
		m[k] = r
	}
	return m, nil
}
