// Package srcwatch tells when a service's source tree changes, for
// `meshctl run --watch`. It polls: a service's tree is a few hundred files
// at most, a pass costs well under a millisecond, and polling behaves the
// same on every file system (inotify misses changes on network and
// container mounts, and needs a watch per directory).
package srcwatch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Snapshot is a tree's files: path relative to the root → what changes
// when the file does.
type Snapshot map[string]stamp

type stamp struct {
	size    int64
	modTime time.Time
	mode    fs.FileMode
}

// Ignored reports whether a change to rel (slash-separated, relative to
// the root) cannot change what `go build` makes: hidden files and
// directories (.git, editors' swap files), test files and directories,
// backups ending in ~, and node_modules.
func Ignored(rel string, dir bool) bool {
	base := rel[strings.LastIndexByte(rel, '/')+1:]
	switch {
	case strings.HasPrefix(base, "."), strings.HasSuffix(base, "~"):
		return true
	case dir:
		return base == "testdata" || base == "node_modules" || strings.HasPrefix(base, "_")
	default:
		return strings.HasSuffix(base, "_test.go")
	}
}

// Take reads the tree under root.
func Take(root string) (Snapshot, error) {
	s := Snapshot{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path != root && errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we walked
			}
			return err
		}
		if path == root {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if Ignored(rel, d.IsDir()) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		s[rel] = stamp{size: info.Size(), modTime: info.ModTime(), mode: info.Mode()}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("srcwatch: %w", err)
	}
	return s, nil
}

// Changed lists the paths added, removed or modified from a to b, sorted.
func Changed(a, b Snapshot) []string {
	var out []string
	for p, st := range b {
		if old, ok := a[p]; !ok || old != st {
			out = append(out, p)
		}
	}
	for p := range a {
		if _, ok := b[p]; !ok {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// Watch polls root every interval from the snapshot base. When the tree
// has changed and then held still for quiet (an editor saving several
// files, a git checkout), it calls fn with the paths that changed; fn
// returns the snapshot to compare with from then on (fn may itself write
// files, generated code, that must not count as a change). Watch returns
// when ctx is done, or with the first error reading the tree.
func Watch(ctx context.Context, root string, base Snapshot, interval, quiet time.Duration, fn func(ctx context.Context, changed []string) (Snapshot, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var pending Snapshot // the tree as last seen changed, while it settles
	var since time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			cur, err := Take(root)
			if err != nil {
				return err
			}
			if len(Changed(base, cur)) == 0 {
				pending = nil
				continue
			}
			if pending == nil || len(Changed(pending, cur)) > 0 {
				pending, since = cur, now
				continue
			}
			if now.Sub(since) < quiet {
				continue
			}
			changed := Changed(base, cur)
			pending = nil
			if base, err = fn(ctx, changed); err != nil {
				return err
			}
		}
	}
}
