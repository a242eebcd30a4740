package scaffold_test

import (
	"context"
	"errors"
	"go/format"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/micromesh/micromesh/codegen"
	"github.com/micromesh/micromesh/scaffold"
)

func plugins(t *testing.T) codegen.Plugins {
	t.Helper()
	p, err := codegen.PluginsIn("../bin")
	if err != nil {
		t.Fatalf("%v: `make tools` builds the plugins", err)
	}
	return p
}

func checkout(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// goIn runs the go command in dir, offline, failing the test on an error.
func goIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
	}
	return string(out)
}

// A new service in a directory of its own: a module building against
// this checkout, gofmt-clean, vetted, its handler's tests passing; after
// a change to its .proto, generate and build again.
func TestANewServiceOfItsOwn(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "history")
	res, err := scaffold.New(ctx, scaffold.Options{Name: "order-history", Dir: dir, ModulePath: "example.com/history", Micromesh: checkout(t), Plugins: plugins(t)})
	if err != nil {
		t.Fatal(err)
	}
	if !res.GoMod || res.ImportPath != "example.com/history" || !slices.Equal(res.Endpoints, []string{"OrderHistory.Call", "OrderHistory.Stream"}) {
		t.Fatalf("result: %+v", res)
	}
	for _, f := range []string{"main.go", "handler/handler.go", "handler/handler_test.go", "proto/orderhistory.proto",
		"proto/orderhistory.pb.go", "proto/orderhistory_grpc.pb.go", "go.mod", "go.sum", "README.md", ".gitignore"} {
		if !slices.Contains(res.Files, f) {
			t.Errorf("%s not among the files written: %v", f, res.Files)
		}
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(f, ".go") {
			if formatted, err := format.Source(data); err != nil || string(formatted) != string(data) {
				t.Errorf("%s is not gofmt-clean (%v)", f, err)
			}
		}
	}
	mod, _ := os.ReadFile(filepath.Join(dir, "go.mod"))
	if !strings.Contains(string(mod), "replace github.com/micromesh/micromesh => "+checkout(t)) {
		t.Fatalf("go.mod:\n%s", mod)
	}
	proto, _ := os.ReadFile(filepath.Join(dir, "proto/orderhistory.proto"))
	for _, want := range []string{"package order_history.v1;", "service OrderHistory {", `option go_package = "example.com/history/proto;orderhistorypb";`} {
		if !strings.Contains(string(proto), want) {
			t.Fatalf("proto lacks %q:\n%s", want, proto)
		}
	}
	goIn(t, dir, "vet", "./...")
	if out := goIn(t, dir, "test", "./..."); !strings.Contains(out, "ok  \texample.com/history/handler") {
		t.Fatalf("go test:\n%s", out)
	}

	// Change the API: a new field, generated, used.
	p := filepath.Join(dir, "proto/orderhistory.proto")
	if err := os.WriteFile(p, []byte(strings.Replace(string(proto), "  string msg = 1;", "  string msg = 1;\n  int32 length = 2;", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := codegen.Generate(ctx, dir, plugins(t)); err != nil {
		t.Fatal(err)
	}
	h := filepath.Join(dir, "handler/handler.go")
	src, _ := os.ReadFile(h)
	src = []byte(strings.Replace(string(src), `Msg: "Hello " + req.GetName()}`, `Msg: "Hello " + req.GetName(), Length: int32(len(req.GetName()))}`, 1))
	if err := os.WriteFile(h, src, 0o644); err != nil {
		t.Fatal(err)
	}
	goIn(t, dir, "build", "./...")
}

// Inside a module that has Micromesh the service is a package of it: no
// go.mod of its own, its import path under the module's.
func TestANewServiceInsideAModule(t *testing.T) {
	shop := t.TempDir()
	mod := "module example.com/shop\n\ngo 1.26\n\nrequire github.com/micromesh/micromesh v0.0.0\n\nreplace github.com/micromesh/micromesh => " + checkout(t) + "\n"
	sum, err := os.ReadFile(filepath.Join(checkout(t), "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"go.mod": mod, "go.sum": string(sum)} {
		if err := os.WriteFile(filepath.Join(shop, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res, err := scaffold.New(context.Background(), scaffold.Options{Name: "orders", Dir: filepath.Join(shop, "services", "orders"), Plugins: plugins(t)})
	if err != nil {
		t.Fatal(err)
	}
	if res.GoMod || res.ImportPath != "example.com/shop/services/orders" || slices.Contains(res.Files, "go.mod") {
		t.Fatalf("result: %+v", res)
	}
	goIn(t, shop, "vet", "./services/orders/...")
}

// Bad input: refused with a message saying what to do, and nothing left
// behind — an existing directory keeps its content.
func TestRefusesAndLeavesNothing(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	full := filepath.Join(tmp, "full")
	if err := os.MkdirAll(full, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(full, "keep.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(tmp, "empty")
	if err := os.MkdirAll(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	good := scaffold.Options{Name: "orders", Micromesh: checkout(t), Plugins: plugins(t)}
	for _, tc := range []struct {
		name string
		edit func(o *scaffold.Options)
		want string
	}{
		{"upper case", func(o *scaffold.Options) { o.Name = "Orders" }, "DNS label"},
		{"leading digit", func(o *scaffold.Options) { o.Name = "3d" }, "must start with a letter"},
		{"empty", func(o *scaffold.Options) { o.Name = "" }, "empty"},
		{"a directory with files", func(o *scaffold.Options) { o.Dir = full }, "not empty"},
		{"no checkout", func(o *scaffold.Options) { o.Micromesh = "" }, "--micromesh"},
		{"not a checkout", func(o *scaffold.Options) { o.Micromesh = tmp }, "not a checkout of Micromesh"},
		{"bad module path", func(o *scaffold.Options) { o.ModulePath = "a b" }, "--module"},
		{"no plugins", func(o *scaffold.Options) {
			o.Plugins = codegen.Plugins{Go: "/nonexistent/protoc-gen-go", GRPC: "/nonexistent/protoc-gen-go-grpc"}
		}, "protoc-gen-go"},
		{"no plugins, empty dir", func(o *scaffold.Options) {
			o.Dir = empty
			o.Plugins = codegen.Plugins{Go: "/nonexistent/protoc-gen-go", GRPC: "/nonexistent/protoc-gen-go-grpc"}
		}, "protoc-gen-go"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			o.Dir = filepath.Join(tmp, "new-"+strings.ReplaceAll(tc.name, " ", "-"))
			tc.edit(&o)
			_, err := scaffold.New(ctx, o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
			switch o.Dir {
			case full:
				if !errors.Is(err, scaffold.ErrExists) {
					t.Fatalf("got %v, want ErrExists", err)
				}
				entries, _ := os.ReadDir(full)
				if len(entries) != 1 {
					t.Fatalf("the directory changed: %v", entries)
				}
			case empty:
				if entries, _ := os.ReadDir(empty); len(entries) != 0 {
					t.Fatalf("left %v behind", entries)
				}
			default:
				if _, err := os.Stat(o.Dir); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("left %s behind (%v)", o.Dir, err)
				}
			}
		})
	}
}
