// Package store is the store primitive: records {key, value, metadata,
// expiry} in tables, tables in databases (a database is a namespace). The
// Backend interface has two implementations — bbolt (embedded, the
// default) and PostgreSQL — which one behavioural suite (storetest) checks
// alike. Server serves a Backend as the Store API on the mesh, taking the
// database from the caller's identity.
package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits, enforced before a backend sees a request.
const (
	MaxKeyLen           = 1024
	MaxValueLen         = 1 << 20
	MaxMetadata         = 64
	MaxMetadataKeyLen   = 256
	MaxMetadataValueLen = 4096
)

// Record is one record.
type Record struct {
	Key      string
	Value    []byte
	Metadata map[string]string
	// Expiry is when it expires; zero for never.
	Expiry time.Time
}

// expired reports whether r has expired at now.
func (r *Record) expired(now time.Time) bool { return !r.Expiry.IsZero() && !now.Before(r.Expiry) }

// Order of results: by key.
type Order int

// Orders.
const (
	Asc Order = iota
	Desc
)

// Query filters and orders keys: Read uses Key with Prefix or Suffix; List
// uses Prefix and Suffix as strings.
type Query struct {
	Key            string
	Prefix, Suffix bool   // Read: Key is a prefix / suffix
	PrefixStr      string // List: keys starting with it
	SuffixStr      string // List: keys ending with it
	Limit, Offset  int
	Order          Order
}

// Scope is a database and a table.
type Scope struct {
	Database, Table string
}

func (s Scope) String() string { return s.Database + "/" + s.Table }

// Backend stores records.
type Backend interface {
	// Read returns records matching q (an exact key returns one or
	// ErrNotFound).
	Read(ctx context.Context, s Scope, q Query) ([]Record, error)
	// Write stores r durably before it returns.
	Write(ctx context.Context, s Scope, r Record) error
	// Delete removes the key, if present.
	Delete(ctx context.Context, s Scope, key string) error
	// List returns the keys matching q.
	List(ctx context.Context, s Scope, q Query) ([]string, error)
	// Databases lists the databases holding at least one table.
	Databases(ctx context.Context) ([]string, error)
	// Tables lists a database's tables.
	Tables(ctx context.Context, database string) ([]string, error)
	Close() error
}

// Errors.
var (
	ErrNotFound = errors.New("not found")
	ErrInvalid  = errors.New("invalid")
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidateScope checks database and table names.
func ValidateScope(s Scope) error {
	if !nameRE.MatchString(s.Database) {
		return fmt.Errorf("%w: database %q: 1–64 of A-Z a-z 0-9 _ -", ErrInvalid, s.Database)
	}
	if !nameRE.MatchString(s.Table) {
		return fmt.Errorf("%w: table %q: 1–64 of A-Z a-z 0-9 _ -", ErrInvalid, s.Table)
	}
	return nil
}

// ValidateKey checks a key.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty key", ErrInvalid)
	case len(key) > MaxKeyLen:
		return fmt.Errorf("%w: key of %d bytes (limit %d)", ErrInvalid, len(key), MaxKeyLen)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: key is not valid UTF-8", ErrInvalid)
	case strings.ContainsRune(key, 0):
		return fmt.Errorf("%w: key contains NUL", ErrInvalid)
	}
	return nil
}

// ValidateRecord checks a record to write.
func ValidateRecord(r Record) error {
	if err := ValidateKey(r.Key); err != nil {
		return err
	}
	if len(r.Value) > MaxValueLen {
		return fmt.Errorf("%w: value of %d bytes (limit %d)", ErrInvalid, len(r.Value), MaxValueLen)
	}
	if len(r.Metadata) > MaxMetadata {
		return fmt.Errorf("%w: %d metadata entries (limit %d)", ErrInvalid, len(r.Metadata), MaxMetadata)
	}
	for k, v := range r.Metadata {
		if k == "" || len(k) > MaxMetadataKeyLen || !utf8.ValidString(k) {
			return fmt.Errorf("%w: metadata key %q: 1–%d bytes of UTF-8", ErrInvalid, k, MaxMetadataKeyLen)
		}
		if len(v) > MaxMetadataValueLen || !utf8.ValidString(v) {
			return fmt.Errorf("%w: metadata %q: value up to %d bytes of UTF-8", ErrInvalid, k, MaxMetadataValueLen)
		}
	}
	return nil
}

// ValidateQuery checks a query; read says whether it is a Read's.
func ValidateQuery(q Query, read bool) error {
	if q.Limit < 0 || q.Offset < 0 {
		return fmt.Errorf("%w: negative limit or offset", ErrInvalid)
	}
	if read {
		if q.Prefix && q.Suffix {
			return fmt.Errorf("%w: prefix and suffix together", ErrInvalid)
		}
		if !q.Prefix && !q.Suffix {
			return ValidateKey(q.Key)
		}
		if len(q.Key) > MaxKeyLen {
			return fmt.Errorf("%w: key of %d bytes (limit %d)", ErrInvalid, len(q.Key), MaxKeyLen)
		}
	}
	return nil
}

// match reports whether key passes q's filter.
func (q Query) match(key string) bool {
	switch {
	case q.Prefix:
		return strings.HasPrefix(key, q.Key)
	case q.Suffix:
		return strings.HasSuffix(key, q.Key)
	}
	return strings.HasPrefix(key, q.PrefixStr) && strings.HasSuffix(key, q.SuffixStr)
}

// seekPrefix is where in key order the matches start.
func (q Query) seekPrefix() string {
	if q.Prefix {
		return q.Key
	}
	return q.PrefixStr
}
