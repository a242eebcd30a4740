// Package storetest is the behavioural suite every store backend passes.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/micromesh/micromesh/platform/store"
)

// Run runs the suite; open returns an empty backend (closed by the suite)
// and a function that moves its clock (nil if it cannot).
func Run(t *testing.T, open func(t *testing.T) store.Backend) {
	ctx := context.Background()
	s := store.Scope{Database: "default", Table: "users"}
	write := func(t *testing.T, b store.Backend, sc store.Scope, keys ...string) {
		t.Helper()
		for _, k := range keys {
			if err := b.Write(ctx, sc, store.Record{Key: k, Value: []byte("v:" + k)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	keysOf := func(rs []store.Record) []string {
		out := []string{}
		for _, r := range rs {
			out = append(out, r.Key)
		}
		return out
	}

	t.Run("write read delete", func(t *testing.T) {
		b := open(t)
		rec := store.Record{Key: "alice", Value: []byte("1"), Metadata: map[string]string{"role": "admin"}}
		if err := b.Write(ctx, s, rec); err != nil {
			t.Fatal(err)
		}
		got, err := b.Read(ctx, s, store.Query{Key: "alice"})
		if err != nil || len(got) != 1 || string(got[0].Value) != "1" || got[0].Metadata["role"] != "admin" || !got[0].Expiry.IsZero() {
			t.Fatalf("read = %+v, %v", got, err)
		}
		rec.Value = []byte("2")
		if err := b.Write(ctx, s, rec); err != nil {
			t.Fatal(err)
		}
		if got, _ := b.Read(ctx, s, store.Query{Key: "alice"}); string(got[0].Value) != "2" {
			t.Errorf("overwrite: %q", got[0].Value)
		}
		if err := b.Delete(ctx, s, "alice"); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Read(ctx, s, store.Query{Key: "alice"}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("read after delete: %v", err)
		}
		if err := b.Delete(ctx, s, "alice"); err != nil {
			t.Errorf("deleting a missing key: %v", err)
		}
		if _, err := b.Read(ctx, store.Scope{Database: "nodb", Table: "none"}, store.Query{Key: "x"}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("read in a missing table: %v", err)
		}
	})

	t.Run("prefix suffix limit offset order", func(t *testing.T) {
		b := open(t)
		write(t, b, s, "user/1", "user/2", "user/3", "user/10", "admin/1", "users", "zz")
		for _, tc := range []struct {
			q    store.Query
			want []string
		}{
			{store.Query{Key: "user/", Prefix: true}, []string{"user/1", "user/10", "user/2", "user/3"}},
			{store.Query{Key: "user/", Prefix: true, Order: store.Desc}, []string{"user/3", "user/2", "user/10", "user/1"}},
			{store.Query{Key: "user/", Prefix: true, Limit: 2, Offset: 1}, []string{"user/10", "user/2"}},
			{store.Query{Key: "user/", Prefix: true, Limit: 2, Offset: 1, Order: store.Desc}, []string{"user/2", "user/10"}},
			{store.Query{Key: "/1", Suffix: true}, []string{"admin/1", "user/1"}},
			{store.Query{Key: "", Prefix: true}, []string{"admin/1", "user/1", "user/10", "user/2", "user/3", "users", "zz"}},
			{store.Query{Key: "", Prefix: true, Order: store.Desc, Limit: 2}, []string{"zz", "users"}},
			{store.Query{Key: "nomatch", Prefix: true}, []string{}},
			{store.Query{Key: "user/", Prefix: true, Offset: 10}, []string{}},
		} {
			got, err := b.Read(ctx, s, tc.q)
			if err != nil || !slices.Equal(keysOf(got), tc.want) {
				t.Errorf("Read %+v = %v, %v; want %v", tc.q, keysOf(got), err, tc.want)
			}
		}
		for _, tc := range []struct {
			q    store.Query
			want []string
		}{
			{store.Query{}, []string{"admin/1", "user/1", "user/10", "user/2", "user/3", "users", "zz"}},
			{store.Query{PrefixStr: "user"}, []string{"user/1", "user/10", "user/2", "user/3", "users"}},
			{store.Query{PrefixStr: "user/", SuffixStr: "0"}, []string{"user/10"}},
			{store.Query{SuffixStr: "1", Order: store.Desc}, []string{"user/1", "admin/1"}},
			{store.Query{Limit: 3, Offset: 2}, []string{"user/10", "user/2", "user/3"}},
		} {
			got, err := b.List(ctx, s, tc.q)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Errorf("List %+v = %v, %v; want %v", tc.q, got, err, tc.want)
			}
		}
	})

	t.Run("tables and databases are apart", func(t *testing.T) {
		b := open(t)
		other := store.Scope{Database: "default", Table: "orders"}
		elsewhere := store.Scope{Database: "prod", Table: "users"}
		write(t, b, s, "k")
		write(t, b, other, "k", "o")
		write(t, b, elsewhere, "p")
		if got, _ := b.List(ctx, other, store.Query{}); !slices.Equal(got, []string{"k", "o"}) {
			t.Errorf("orders = %v", got)
		}
		if _, err := b.Read(ctx, elsewhere, store.Query{Key: "k"}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a key of another database: %v", err)
		}
		dbs, err := b.Databases(ctx)
		slices.Sort(dbs)
		if err != nil || !slices.Equal(dbs, []string{"default", "prod"}) {
			t.Errorf("databases = %v, %v", dbs, err)
		}
		tables, err := b.Tables(ctx, "default")
		slices.Sort(tables)
		if err != nil || !slices.Equal(tables, []string{"orders", "users"}) {
			t.Errorf("tables = %v, %v", tables, err)
		}
		if tables, err := b.Tables(ctx, "nodb"); err != nil || len(tables) != 0 {
			t.Errorf("tables of a missing database = %v, %v", tables, err)
		}
	})

	t.Run("expiry", func(t *testing.T) {
		b := open(t)
		past := store.Record{Key: "gone", Value: []byte("x"), Expiry: time.Now().Add(-time.Second)}
		soon := store.Record{Key: "soon", Value: []byte("x"), Expiry: time.Now().Add(time.Hour)}
		for _, r := range []store.Record{past, soon} {
			if err := b.Write(ctx, s, r); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := b.Read(ctx, s, store.Query{Key: "gone"}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("an expired record is read: %v", err)
		}
		if keys, _ := b.List(ctx, s, store.Query{}); !slices.Equal(keys, []string{"soon"}) {
			t.Errorf("list shows expired records: %v", keys)
		}
		got, err := b.Read(ctx, s, store.Query{Key: "soon"})
		if err != nil || got[0].Expiry.Sub(soon.Expiry).Abs() > time.Millisecond {
			t.Errorf("expiry kept: %+v %v", got, err)
		}
	})

	t.Run("concurrent writers lose nothing", func(t *testing.T) {
		b := open(t)
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for w := range 16 {
			wg.Go(func() {
				for i := range 50 {
					if err := b.Write(ctx, s, store.Record{Key: fmt.Sprintf("w%02d-%03d", w, i), Value: []byte("x")}); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if keys, err := b.List(ctx, s, store.Query{}); err != nil || len(keys) != 800 {
			t.Errorf("%d keys after 800 writes, %v", len(keys), err)
		}
	})
}
