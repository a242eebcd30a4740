package store_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/micromesh/micromesh/platform/store"
	"github.com/micromesh/micromesh/platform/store/storetest"
)

func openBolt(t *testing.T, path string) *store.Bolt {
	t.Helper()
	b, err := store.OpenBolt(path, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBolt(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Backend {
		b := openBolt(t, filepath.Join(t.TempDir(), "store.db"))
		t.Cleanup(func() { _ = b.Close() })
		return b
	})
}

func TestBoltKeepsWhatItAcknowledgedAndPurges(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "store.db")
	s := store.Scope{Database: "default", Table: "t"}
	b := openBolt(t, path)
	if err := b.Write(ctx, s, store.Record{Key: "kept", Value: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	if err := b.Write(ctx, s, store.Record{Key: "expired", Value: []byte("1"), Expiry: time.Now().Add(-time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openBolt(t, path)
	defer b.Close()
	if got, err := b.Read(ctx, s, store.Query{Key: "kept"}); err != nil || string(got[0].Value) != "1" {
		t.Fatalf("after reopening: %v %v", got, err)
	}
	if n, err := b.Purge(); err != nil || n != 1 {
		t.Fatalf("purge = %d, %v", n, err)
	}
	if n, _ := b.Purge(); n != 0 {
		t.Errorf("second purge = %d", n)
	}
}
