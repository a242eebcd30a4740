package runtime

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// source is where a service's code is: a local directory, or a git URL and
// a ref.
type source struct {
	dir string // local directory
	url string // git URL
	ref string // git ref ("" for the default branch)
}

// IsGit tells a git URL from a path (the CLI makes paths absolute, not URLs).
func IsGit(s string) bool {
	return strings.Contains(s, "://") || strings.HasPrefix(s, "git@") || strings.HasSuffix(strings.SplitN(s, "@", 2)[0], ".git")
}

// parseSource reads PATH or GIT-URL[@ref]. A path must be absolute (the
// CLI resolves relative ones where the user is).
func parseSource(s string) (source, error) {
	if s == "" {
		return source{}, fmt.Errorf("%w: no source: give a directory with a main package, or a git URL", ErrInvalid)
	}
	if !IsGit(s) {
		if !filepath.IsAbs(s) {
			return source{}, fmt.Errorf("%w: source %q: the path must be absolute", ErrInvalid, s)
		}
		st, err := os.Stat(s)
		if err != nil {
			return source{}, fmt.Errorf("%w: source %q: %v", ErrInvalid, s, err)
		}
		if !st.IsDir() {
			return source{}, fmt.Errorf("%w: source %q is not a directory", ErrInvalid, s)
		}
		return source{dir: filepath.Clean(s)}, nil
	}
	src := source{url: s}
	// A ref follows an '@' after the last '/' and ':' (the '@' of
	// git@host:repo or https://user@host/repo comes before them).
	if i := strings.LastIndexByte(s, '@'); i > strings.LastIndexByte(s, '/') && i > strings.LastIndexByte(s, ':') {
		src.url, src.ref = s[:i], s[i+1:]
		if src.ref == "" {
			return source{}, fmt.Errorf("%w: source %q: empty ref after @", ErrInvalid, s)
		}
	}
	return src, nil
}

// defaultName is the service name a source suggests: its directory's or
// repository's last element.
// DefaultName is the service name the runtime gives a service run from
// src (a directory or a git URL) when none is given: the directory's or
// repository's name, lower-cased.
func DefaultName(src string) (string, error) {
	s, err := parseSource(src)
	if err != nil {
		return "", err
	}
	return s.defaultName(), nil
}

func (s source) defaultName() string {
	p := s.dir
	if p == "" {
		p = strings.TrimSuffix(strings.TrimRight(s.url, "/"), ".git")
		if i := strings.LastIndexAny(p, "/:"); i >= 0 {
			p = p[i+1:]
		}
	}
	return strings.ToLower(filepath.Base(p))
}

func (s source) String() string {
	if s.dir != "" {
		return s.dir
	}
	if s.ref != "" {
		return s.url + "@" + s.ref
	}
	return s.url
}

// fetch returns the directory to build: the local one, or a fresh clone
// of the git source under into (replacing an older one), with the commit
// it checked out.
func (s source) fetch(ctx context.Context, into string) (dir, commit string, err error) {
	if s.dir != "" {
		return s.dir, "", nil
	}
	if err := os.MkdirAll(filepath.Dir(into), 0o700); err != nil {
		return "", "", err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(into), ".clone-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(tmp)
	if out, err := run(ctx, "", "git", "clone", "--quiet", "--", s.url, tmp); err != nil {
		return "", "", fmt.Errorf("%w: git clone %s: %s", ErrBuild, s.url, out)
	}
	if s.ref != "" {
		if out, err := run(ctx, tmp, "git", "checkout", "--quiet", s.ref, "--"); err != nil {
			return "", "", fmt.Errorf("%w: git checkout %s: %s", ErrBuild, s.ref, out)
		}
	}
	out, err := run(ctx, tmp, "git", "rev-parse", "--short", "HEAD")
	if err != nil {
		return "", "", fmt.Errorf("%w: git rev-parse: %s", ErrBuild, out)
	}
	if err := os.RemoveAll(into); err != nil {
		return "", "", err
	}
	if err := os.Rename(tmp, into); err != nil {
		return "", "", err
	}
	return into, strings.TrimSpace(out), nil
}

// build compiles the main package in dir into binDir, named by its
// content hash, which it returns too. The build cache and a vendor
// directory are honoured as go build honours them.
func build(ctx context.Context, goBin, dir, binDir string) (path, hash string, err error) {
	if err := os.MkdirAll(binDir, 0o700); err != nil {
		return "", "", err
	}
	tmp := filepath.Join(binDir, ".build-"+randomID())
	defer os.Remove(tmp)
	if out, err := run(ctx, dir, goBin, "build", "-o", tmp, "."); err != nil {
		if ctx.Err() != nil {
			return "", "", ctx.Err()
		}
		return "", "", fmt.Errorf("%w: go build in %s failed:\n%s", ErrBuild, dir, strings.TrimSpace(limit(out, 8<<10)))
	}
	f, err := os.Open(tmp)
	if err != nil {
		return "", "", err
	}
	h := sha256.New()
	_, err = io.Copy(h, f)
	f.Close()
	if err != nil {
		return "", "", err
	}
	hash = hex.EncodeToString(h.Sum(nil))[:12]
	path = filepath.Join(binDir, hash)
	if err := os.Rename(tmp, path); err != nil {
		return "", "", err
	}
	return path, hash, nil
}

func run(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func limit(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "\n… (cut)"
}
