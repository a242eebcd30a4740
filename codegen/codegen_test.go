package codegen_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/micromesh/micromesh/codegen"
)

// repoPlugins are the generators `make proto` runs (the Makefile builds
// them into bin/ before the tests).
func repoPlugins(t *testing.T) codegen.Plugins {
	t.Helper()
	p, err := codegen.PluginsIn("../bin")
	if err != nil {
		t.Fatalf("%v: `make tools` builds the plugins", err)
	}
	return p
}

// copyProtos copies the .proto files under src to a new directory,
// keeping their paths.
func copyProtos(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	files, err := codegen.Protos(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dst, f)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// The code generated in-process is byte for byte what `make proto` (buf
// with the same plugins) checked in, for the platform's APIs (every kind
// of stream, well-known types, imports between files) and the examples.
func TestGeneratesWhatBufGenerates(t *testing.T) {
	plugins := repoPlugins(t)
	for _, root := range []string{"../proto", "../examples"} {
		t.Run(filepath.Base(root), func(t *testing.T) {
			dir := copyProtos(t, root)
			written, err := codegen.Generate(context.Background(), dir, plugins)
			if err != nil {
				t.Fatal(err)
			}
			protos, _ := codegen.Protos(root)
			if want := 2 * len(protos); len(written) < want {
				t.Fatalf("wrote %d files for %d protos: %v", len(written), len(protos), written)
			}
			for _, f := range written {
				got, err := os.ReadFile(filepath.Join(dir, f))
				if err != nil {
					t.Fatal(err)
				}
				want, err := os.ReadFile(filepath.Join(root, f))
				if err != nil {
					t.Fatalf("generated %s, which make proto does not: %v", f, err)
				}
				if string(got) != string(want) {
					t.Errorf("%s differs from the checked-in file:\n%s", f, firstDiff(string(got), string(want)))
				}
			}
		})
	}
}

func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := range min(len(g), len(w)) {
		if g[i] != w[i] {
			return fmt.Sprintf("line %d:\n got  %s\n want %s", i+1, g[i], w[i])
		}
	}
	return fmt.Sprintf("lengths differ: %d against %d lines", len(g), len(w))
}

// Bad input: a syntax error names the file, line and column and writes
// nothing; an unknown import names the file; a directory without protos
// says so; a missing plugin names itself.
func TestRefusesWhatItCannotGenerate(t *testing.T) {
	plugins := repoPlugins(t)
	ctx := context.Background()
	write := func(t *testing.T, files map[string]string) string {
		dir := t.TempDir()
		for name, content := range files {
			path := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	const good = "syntax = \"proto3\";\npackage a.v1;\noption go_package = \"example.com/a/proto;a\";\nmessage M { string s = 1; }\n"
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"syntax error", map[string]string{"proto/a.proto": good, "proto/b.proto": "syntax = \"proto3\";\npackage b.v1;\nmessage N { string s = 1 }\n"}, "proto/b.proto:3:26"},
		{"unknown import", map[string]string{"proto/a.proto": "syntax = \"proto3\";\npackage a.v1;\nimport \"missing.proto\";\n"}, "missing.proto"},
		{"unknown type", map[string]string{"proto/a.proto": "syntax = \"proto3\";\npackage a.v1;\noption go_package = \"example.com/a/proto;a\";\nmessage M { Nope n = 1; }\n"}, "proto/a.proto:4:13"},
		{"no go_package", map[string]string{"proto/a.proto": "syntax = \"proto3\";\npackage a.v1;\nmessage M { string s = 1; }\n"}, "go_package"},
		{"no protos", map[string]string{"main.go": "package main\n"}, "no .proto files"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := write(t, tc.files)
			_, err := codegen.Generate(ctx, dir, plugins)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
			matches, _ := filepath.Glob(filepath.Join(dir, "proto", "*.go"))
			if len(matches) != 0 {
				t.Fatalf("wrote %v despite the error", matches)
			}
		})
	}
	t.Run("no protos is ErrNoProtos", func(t *testing.T) {
		_, err := codegen.Generate(ctx, write(t, map[string]string{"x.txt": ""}), plugins)
		if !errors.Is(err, codegen.ErrNoProtos) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("missing plugin", func(t *testing.T) {
		dir := write(t, map[string]string{"proto/a.proto": good})
		_, err := codegen.Generate(ctx, dir, codegen.Plugins{Go: filepath.Join(dir, "protoc-gen-go"), GRPC: plugins.GRPC})
		if err == nil || !strings.Contains(err.Error(), "protoc-gen-go") {
			t.Fatalf("got %v", err)
		}
	})
}
