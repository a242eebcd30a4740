package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/micromesh/micromesh/internal/pgtest"
	"github.com/micromesh/micromesh/platform/store"
	"github.com/micromesh/micromesh/platform/store/storetest"
)

// The same suite as bbolt's, against a real PostgreSQL server.
func TestPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	storetest.Run(t, func(t *testing.T) store.Backend {
		b, err := store.OpenPostgres(context.Background(), pg.NewDatabase(t), time.Hour, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	})
}

func TestPostgresPurges(t *testing.T) {
	pg := pgtest.Start(t)
	ctx := context.Background()
	b, err := store.OpenPostgres(ctx, pg.NewDatabase(t), time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s := store.Scope{Database: "default", Table: "t"}
	_ = b.Write(ctx, s, store.Record{Key: "old", Value: []byte("x"), Expiry: time.Now().Add(-time.Minute)})
	_ = b.Write(ctx, s, store.Record{Key: "new", Value: []byte("x")})
	if n, err := b.Purge(ctx); err != nil || n != 1 {
		t.Fatalf("purge = %d, %v", n, err)
	}
}
