package srcwatch_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/micromesh/micromesh/internal/srcwatch"
)

func write(t *testing.T, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// What a build reads counts; what it cannot read does not.
func TestChangesThatCount(t *testing.T) {
	root := t.TempDir()
	write(t, root, "main.go", "package main")
	base, err := srcwatch.Take(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{".git/index", ".main.go.swp", "main.go~", "handler/handler_test.go", "testdata/golden.json", "node_modules/x/y.js", "_scratch/a.go"} {
		write(t, root, rel, "x")
	}
	after, _ := srcwatch.Take(root)
	if got := srcwatch.Changed(base, after); len(got) != 0 {
		t.Fatalf("ignored files counted as changes: %v", got)
	}
	write(t, root, "handler/handler.go", "package handler")
	write(t, root, "proto/a.proto", "syntax")
	write(t, root, "main.go", "package main // edited")
	write(t, root, "static/index.html", "<p>") // go:embed reads any file
	after, _ = srcwatch.Take(root)
	want := []string{"handler/handler.go", "main.go", "proto/a.proto", "static/index.html"}
	if got := srcwatch.Changed(base, after); !slices.Equal(got, want) {
		t.Fatalf("changed %v, want %v", got, want)
	}
	if err := os.Remove(filepath.Join(root, "main.go")); err != nil {
		t.Fatal(err)
	}
	gone, _ := srcwatch.Take(root)
	if got := srcwatch.Changed(after, gone); !slices.Equal(got, []string{"main.go"}) {
		t.Fatalf("a removed file: %v", got)
	}
}

// Several saves in a row are one change, reported once they hold still;
// what the callback writes itself (generated code) is not a change.
func TestWatchReportsASettledChangeOnce(t *testing.T) {
	root := t.TempDir()
	write(t, root, "main.go", "package main")
	base, err := srcwatch.Take(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	calls := make(chan []string, 10)
	done := make(chan error, 1)
	go func() {
		done <- srcwatch.Watch(ctx, root, base, 20*time.Millisecond, 150*time.Millisecond, func(ctx context.Context, changed []string) (srcwatch.Snapshot, error) {
			calls <- changed
			write(t, root, "proto/a.pb.go", "generated") // as generate does
			return srcwatch.Take(root)
		})
	}()
	for i := range 5 { // an editor saving, 50 ms apart: within the quiet time
		write(t, root, "main.go", "package main // "+string(rune('a'+i)))
		time.Sleep(50 * time.Millisecond)
	}
	write(t, root, "proto/a.proto", "syntax")
	select {
	case got := <-calls:
		if !slices.Equal(got, []string{"main.go", "proto/a.proto"}) {
			t.Fatalf("changed %v", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no change reported")
	}
	select {
	case got := <-calls:
		t.Fatalf("reported again: %v (the callback's own write, or the burst in two)", got)
	case <-time.After(500 * time.Millisecond):
	}
	write(t, root, "main.go", "package main // again")
	select {
	case got := <-calls:
		if !slices.Equal(got, []string{"main.go"}) {
			t.Fatalf("second change: %v", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second change was not reported")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
