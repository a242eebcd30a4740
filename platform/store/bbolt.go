package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	storev1 "github.com/micromesh/micromesh/proto/store/v1"
)

// Bolt is the embedded backend: one bbolt file, opened once, a bucket per
// database holding a bucket per table. Writes from concurrent callers
// commit together (bbolt's Batch: one fsync for many); expired records are
// skipped when read and purged in the background.
type Bolt struct {
	db   *bolt.DB
	log  *slog.Logger
	stop chan struct{}
	done sync.WaitGroup
	now  func() time.Time
}

// OpenBolt opens (or creates) the store file at path and starts purging
// expired records every purgeEvery (0: every 30 s).
func OpenBolt(path string, purgeEvery time.Duration, log *slog.Logger) (*Bolt, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("store: opening %s: %w", path, err)
	}
	if log == nil {
		log = slog.Default()
	}
	if purgeEvery <= 0 {
		purgeEvery = 30 * time.Second
	}
	b := &Bolt{db: db, log: log, stop: make(chan struct{}), now: time.Now}
	b.done.Add(1)
	go b.purgeLoop(purgeEvery)
	return b, nil
}

func encodeRecord(r Record) ([]byte, error) {
	m := &storev1.Record{Value: r.Value, Metadata: r.Metadata}
	if !r.Expiry.IsZero() {
		m.Expiry = timestamppb.New(r.Expiry)
	}
	return proto.Marshal(m)
}

func decodeRecord(key, data []byte) (Record, error) {
	var m storev1.Record
	if err := proto.Unmarshal(data, &m); err != nil {
		return Record{}, fmt.Errorf("store: record %q is damaged: %w", key, err)
	}
	r := Record{Key: string(key), Value: m.GetValue(), Metadata: m.GetMetadata()}
	if m.GetExpiry() != nil {
		r.Expiry = m.GetExpiry().AsTime()
	}
	return r, nil
}

// table returns the scope's bucket, or nil.
func table(tx *bolt.Tx, s Scope) *bolt.Bucket {
	db := tx.Bucket([]byte(s.Database))
	if db == nil {
		return nil
	}
	return db.Bucket([]byte(s.Table))
}

// scan calls f with each live record matching q, in q's order; f returns
// false to stop.
func (b *Bolt) scan(tx *bolt.Tx, s Scope, q Query, f func(k, v []byte) bool) {
	t := table(tx, s)
	if t == nil {
		return
	}
	c := t.Cursor()
	seek := []byte(q.seekPrefix())
	if q.Order == Desc {
		// Start after the last key with the prefix.
		var k, v []byte
		if len(seek) == 0 {
			k, v = c.Last()
		} else if end := prefixEnd(seek); end == nil {
			k, v = c.Last()
		} else if k, _ = c.Seek(end); k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		for ; k != nil; k, v = c.Prev() {
			if !bytes.HasPrefix(k, seek) {
				if len(seek) > 0 && bytes.Compare(k, seek) < 0 {
					return
				}
				continue
			}
			if q.match(string(k)) && !f(k, v) {
				return
			}
		}
		return
	}
	for k, v := c.Seek(seek); k != nil; k, v = c.Next() {
		if !bytes.HasPrefix(k, seek) {
			return
		}
		if q.match(string(k)) && !f(k, v) {
			return
		}
	}
}

// prefixEnd is the smallest key greater than every key with prefix p, or
// nil if there is none.
func prefixEnd(p []byte) []byte {
	end := slices.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// page hands keep the live records matching q after its offset, at most
// its limit, in its order.
func (b *Bolt) page(tx *bolt.Tx, s Scope, q Query, now time.Time, keep func(Record)) error {
	skip, kept := q.Offset, 0
	var err error
	b.scan(tx, s, q, func(k, v []byte) bool {
		r, derr := decodeRecord(k, v)
		if derr != nil {
			err = derr
			return false
		}
		if r.expired(now) {
			return true
		}
		if skip > 0 {
			skip--
			return true
		}
		keep(r)
		kept++
		return q.Limit == 0 || kept < q.Limit
	})
	return err
}

// Read implements Backend.
func (b *Bolt) Read(ctx context.Context, s Scope, q Query) ([]Record, error) {
	now := b.now()
	var out []Record
	err := b.db.View(func(tx *bolt.Tx) error {
		if !q.Prefix && !q.Suffix {
			t := table(tx, s)
			if t == nil {
				return ErrNotFound
			}
			v := t.Get([]byte(q.Key))
			if v == nil {
				return ErrNotFound
			}
			r, err := decodeRecord([]byte(q.Key), v)
			if err != nil {
				return err
			}
			if r.expired(now) {
				return ErrNotFound
			}
			out = []Record{r}
			return nil
		}
		return b.page(tx, s, q, now, func(r Record) {
			// Values are only valid inside the transaction.
			r.Value = slices.Clone(r.Value)
			out = append(out, r)
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Write implements Backend.
func (b *Bolt) Write(ctx context.Context, s Scope, r Record) error {
	data, err := encodeRecord(r)
	if err != nil {
		return err
	}
	return b.db.Batch(func(tx *bolt.Tx) error {
		db, err := tx.CreateBucketIfNotExists([]byte(s.Database))
		if err != nil {
			return err
		}
		t, err := db.CreateBucketIfNotExists([]byte(s.Table))
		if err != nil {
			return err
		}
		return t.Put([]byte(r.Key), data)
	})
}

// Delete implements Backend.
func (b *Bolt) Delete(ctx context.Context, s Scope, key string) error {
	return b.db.Batch(func(tx *bolt.Tx) error {
		t := table(tx, s)
		if t == nil {
			return nil
		}
		return t.Delete([]byte(key))
	})
}

// List implements Backend.
func (b *Bolt) List(ctx context.Context, s Scope, q Query) ([]string, error) {
	now := b.now()
	out := []string{}
	err := b.db.View(func(tx *bolt.Tx) error {
		return b.page(tx, s, q, now, func(r Record) { out = append(out, r.Key) })
	})
	return out, err
}

// Databases implements Backend.
func (b *Bolt) Databases(ctx context.Context) ([]string, error) {
	out := []string{}
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			out = append(out, string(name))
			return nil
		})
	})
	return out, err
}

// Tables implements Backend.
func (b *Bolt) Tables(ctx context.Context, database string) ([]string, error) {
	out := []string{}
	err := b.db.View(func(tx *bolt.Tx) error {
		db := tx.Bucket([]byte(database))
		if db == nil {
			return nil
		}
		return db.ForEachBucket(func(name []byte) error {
			out = append(out, string(name))
			return nil
		})
	})
	return out, err
}

// Purge deletes expired records now; it returns how many.
func (b *Bolt) Purge() (int, error) {
	now := b.now()
	n := 0
	err := b.db.Update(func(tx *bolt.Tx) error {
		return tx.ForEach(func(_ []byte, db *bolt.Bucket) error {
			return db.ForEachBucket(func(name []byte) error {
				t := db.Bucket(name)
				var dead [][]byte
				err := t.ForEach(func(k, v []byte) error {
					r, err := decodeRecord(k, v)
					if err == nil && r.expired(now) {
						dead = append(dead, slices.Clone(k))
					}
					return nil
				})
				if err != nil {
					return err
				}
				for _, k := range dead {
					if err := t.Delete(k); err != nil {
						return err
					}
				}
				n += len(dead)
				return nil
			})
		})
	})
	return n, err
}

func (b *Bolt) purgeLoop(every time.Duration) {
	defer b.done.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		if n, err := b.Purge(); err != nil {
			if !errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
				b.log.Warn("purging expired records", "err", err)
			}
		} else if n > 0 {
			b.log.Debug("purged expired records", "count", n)
		}
	}
}

// Close stops purging and closes the file.
func (b *Bolt) Close() error {
	close(b.stop)
	b.done.Wait()
	return b.db.Close()
}
