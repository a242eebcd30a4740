// Package traces keeps the spans proxies export to the control plane: a
// collector of OTLP/gRPC (opentelemetry.proto.collector.trace.v1), the
// durable store behind it (bbolt: a span acknowledged is on disk), with
// retention by age and count, and the queries the CLI and the dashboard
// read traces with (micromesh.trace.v1.TraceService).
package traces

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	tracev1 "github.com/micromesh/micromesh/proto/trace/v1"
)

// Buckets: spans by trace then span ID; the same keys by start time, for
// the newest traces and for retention.
var (
	spansBucket = []byte("spans")
	timeBucket  = []byte("by_start")
)

// Retention defaults.
const (
	DefaultMaxAge   = 24 * time.Hour
	DefaultMaxSpans = 200_000
)

// Options configure Open.
type Options struct {
	MaxAge   time.Duration // spans older than this go (default DefaultMaxAge)
	MaxSpans int           // past this many (give or take one commit's), the oldest go (default DefaultMaxSpans)
	Logger   *slog.Logger
}

// Store keeps spans on disk.
type Store struct {
	db  *bolt.DB
	o   Options
	log *slog.Logger

	mu    sync.Mutex // count
	count int
}

// Open opens (or creates) the store in dir/traces.db.
func Open(dir string, o Options) (*Store, error) {
	if o.MaxAge <= 0 {
		o.MaxAge = DefaultMaxAge
	}
	if o.MaxSpans <= 0 {
		o.MaxSpans = DefaultMaxSpans
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("traces: %w", err)
	}
	path := filepath.Join(dir, "traces.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("traces: %s is held by another process (a running `meshctl server`?)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("traces: open %s: %w", path, err)
	}
	s := &Store{db: db, o: o, log: o.Logger.With("component", "traces")}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(spansBucket)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(timeBucket); err != nil {
			return err
		}
		s.count = b.Stats().KeyN
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("traces: %w", err)
	}
	return s, nil
}

// Close closes the store.
func (s *Store) Close() error { return s.db.Close() }

// Count is the number of spans kept.
func (s *Store) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// spanKey is trace ID (16 bytes) then span ID (8).
func spanKey(traceID, spanID string) ([]byte, error) {
	k := make([]byte, 24)
	if len(traceID) != 32 || len(spanID) != 16 {
		return nil, fmt.Errorf("trace ID %q / span ID %q: want 32 and 16 hex digits", traceID, spanID)
	}
	if _, err := hex.Decode(k[:16], []byte(traceID)); err != nil {
		return nil, fmt.Errorf("trace ID %q: %w", traceID, err)
	}
	if _, err := hex.Decode(k[16:], []byte(spanID)); err != nil {
		return nil, fmt.Errorf("span ID %q: %w", spanID, err)
	}
	return k, nil
}

// timeKey is the start (Unix nanoseconds, big-endian) then the span key.
func timeKey(start time.Time, key []byte) []byte {
	k := make([]byte, 8, 32)
	binary.BigEndian.PutUint64(k, uint64(start.UnixNano()))
	return append(k, key...)
}

// Add keeps spans (validated by the caller) and returns once they are on
// disk. Concurrent calls share one commit. A span sent again (same trace
// and span ID) replaces the first.
func (s *Store) Add(spans []*tracev1.Span) error {
	if len(spans) == 0 {
		return nil
	}
	type rec struct{ key, tkey, val []byte }
	recs := make([]rec, 0, len(spans))
	for _, sp := range spans {
		k, err := spanKey(sp.TraceId, sp.SpanId)
		if err != nil {
			return err
		}
		v, err := proto.Marshal(sp)
		if err != nil {
			return err
		}
		recs = append(recs, rec{k, timeKey(sp.Start.AsTime(), k), v})
	}
	var added int
	err := s.db.Batch(func(tx *bolt.Tx) error {
		added = 0
		b, tb := tx.Bucket(spansBucket), tx.Bucket(timeBucket)
		for _, r := range recs {
			if old := b.Get(r.key); old != nil {
				var prev tracev1.Span
				if proto.Unmarshal(old, &prev) == nil {
					if err := tb.Delete(timeKey(prev.Start.AsTime(), r.key)); err != nil {
						return err
					}
				}
			} else {
				added++
			}
			if err := b.Put(r.key, r.val); err != nil {
				return err
			}
			if err := tb.Put(r.tkey, nil); err != nil {
				return err
			}
		}
		s.mu.Lock()
		over := s.count + added - s.o.MaxSpans
		s.mu.Unlock()
		if over > 0 {
			n, err := prune(tx, func([]byte) bool { return true }, over)
			if err != nil {
				return err
			}
			added -= n
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("traces: %w", err)
	}
	s.mu.Lock()
	s.count += added
	s.mu.Unlock()
	return nil
}

// prune deletes up to max of the oldest spans while old says their time
// key is to go; it returns how many went.
func prune(tx *bolt.Tx, old func(tkey []byte) bool, max int) (int, error) {
	b, tb := tx.Bucket(spansBucket), tx.Bucket(timeBucket)
	c := tb.Cursor()
	n := 0
	for k, _ := c.First(); k != nil && n < max && old(k); k, _ = c.First() {
		if err := b.Delete(k[8:]); err != nil {
			return n, err
		}
		if err := c.Delete(); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// Expire deletes the spans that started before now - MaxAge.
func (s *Store) Expire(now time.Time) error {
	cut := make([]byte, 8)
	binary.BigEndian.PutUint64(cut, uint64(now.Add(-s.o.MaxAge).UnixNano()))
	for {
		var n int
		err := s.db.Update(func(tx *bolt.Tx) error {
			var err error
			n, err = prune(tx, func(k []byte) bool { return bytes.Compare(k[:8], cut) < 0 }, 10_000)
			return err
		})
		if err != nil {
			return fmt.Errorf("traces: %w", err)
		}
		s.mu.Lock()
		s.count -= n
		s.mu.Unlock()
		if n < 10_000 {
			return nil
		}
	}
}

// Get returns a trace's spans by start time (none: NotFound is the
// caller's to say).
func (s *Store) Get(traceID string) ([]*tracev1.Span, error) {
	prefix := make([]byte, 16)
	if len(traceID) != 32 || !isLowerHex(traceID) {
		return nil, fmt.Errorf("trace ID %q: want 32 lower-case hex digits", traceID)
	}
	_, _ = hex.Decode(prefix, []byte(traceID))
	var out []*tracev1.Span
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(spansBucket).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			sp := &tracev1.Span{}
			if err := proto.Unmarshal(v, sp); err != nil {
				return fmt.Errorf("span %x: %w", k, err)
			}
			out = append(out, sp)
		}
		return nil
	})
	slices.SortStableFunc(out, func(a, b *tracev1.Span) int { return a.Start.AsTime().Compare(b.Start.AsTime()) })
	return out, err
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Query selects traces for List.
type Query struct {
	Service     string // "name" or "name.namespace"; "" for all
	Limit       int
	ErrorsOnly  bool
	MinDuration time.Duration
}

// maxScan bounds how many of the newest spans a List looks through.
const maxScan = 50_000

// List summarizes the newest traces that match q, newest first.
func (s *Store) List(q Query) ([]*tracev1.TraceSummary, error) {
	if q.Limit <= 0 {
		q.Limit = 20
	}
	var out []*tracev1.TraceSummary
	err := s.db.View(func(tx *bolt.Tx) error {
		seen := map[string]bool{}
		b := tx.Bucket(spansBucket)
		c := tx.Bucket(timeBucket).Cursor()
		scanned := 0
		for k, _ := c.Last(); k != nil && len(out) < q.Limit && scanned < maxScan; k, _ = c.Prev() {
			scanned++
			tid := string(k[8:24])
			if seen[tid] {
				continue
			}
			seen[tid] = true
			sum, err := summarize(b, k[8:24])
			if err != nil {
				return err
			}
			if q.matches(sum) {
				out = append(out, sum)
			}
		}
		return nil
	})
	return out, err
}

func (q Query) matches(t *tracev1.TraceSummary) bool {
	if q.ErrorsOnly && t.Errors == 0 {
		return false
	}
	if q.MinDuration > 0 && t.Duration.AsDuration() < q.MinDuration {
		return false
	}
	if q.Service == "" {
		return true
	}
	for _, s := range t.Services {
		if s == q.Service || (!strings.Contains(q.Service, ".") && strings.HasPrefix(s, q.Service+".")) {
			return true
		}
	}
	return false
}

// summarize reads one trace's spans into its summary.
func summarize(b *bolt.Bucket, traceID []byte) (*tracev1.TraceSummary, error) {
	sum := &tracev1.TraceSummary{TraceId: hex.EncodeToString(traceID)}
	var first, last, rootStart time.Time
	rooted := false // the root found has no parent
	services := map[string]bool{}
	c := b.Cursor()
	for k, v := c.Seek(traceID); k != nil && bytes.HasPrefix(k, traceID); k, v = c.Next() {
		var sp tracev1.Span
		if err := proto.Unmarshal(v, &sp); err != nil {
			return nil, fmt.Errorf("span %x: %w", k, err)
		}
		sum.Spans++
		if sp.Error {
			sum.Errors++
		}
		services[sp.Service] = true
		start := sp.Start.AsTime()
		end := start.Add(sp.Duration.AsDuration())
		// The root: the earliest span with no parent, else the earliest
		// (its parent was not kept).
		noParent := sp.ParentSpanId == ""
		if sum.Spans == 1 || (noParent && !rooted) || (noParent == rooted && start.Before(rootStart)) {
			sum.RootService, sum.RootName, rootStart, rooted = sp.Service, sp.Name, start, noParent
		}
		if first.IsZero() || start.Before(first) {
			first = start
		}
		if end.After(last) {
			last = end
		}
	}
	sum.Start = timestamppb.New(first)
	sum.Duration = durationpb.New(last.Sub(first))
	for s := range services {
		sum.Services = append(sum.Services, s)
	}
	slices.Sort(sum.Services)
	return sum, nil
}
