// Package scaffold writes a new service's source tree — main.go, a handler
// with its tests, a .proto API and the Go generated from it, a README, and
// a go.mod when the directory is in no module that has Micromesh — so that
// `meshctl new orders && meshctl run ./orders` gives a running, callable
// service. Micro's `micro new`, with the code generation built in.
package scaffold

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"go/format"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"text/template"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"

	"github.com/micromesh/micromesh/codegen"
	"github.com/micromesh/micromesh/identity"
)

// Module is Micromesh's module path, which a new service requires.
const Module = "github.com/micromesh/micromesh"

//go:embed template
var templates embed.FS

// ErrExists is returned when the directory is already there and not empty.
var ErrExists = errors.New("already exists")

// Options say what to make and where.
type Options struct {
	// Name is the service's name (a DNS label starting with a letter: it
	// also names Go and protobuf identifiers).
	Name string
	// Dir is where to write it; it must not exist, or be empty.
	Dir string
	// ModulePath is the new go.mod's module path (default: Name); unused
	// when Dir is inside a module that already requires Micromesh.
	ModulePath string
	// Micromesh is a checkout of Micromesh for the new go.mod's replace
	// directive (the module is not published). Required only when a
	// go.mod is written.
	Micromesh string
	// Plugins generate the Go code from the .proto.
	Plugins codegen.Plugins
	// Go is the go command for `go mod tidy` (default "go").
	Go string
}

// Result is what New made.
type Result struct {
	Dir        string   `json:"dir"`
	Name       string   `json:"name"`
	ImportPath string   `json:"import_path"` // of the service's main package
	GoMod      bool     `json:"go_mod"`      // a go.mod was written
	Files      []string `json:"files"`       // relative to Dir
	Endpoints  []string `json:"endpoints"`
}

// names are what the templates fill in.
type names struct {
	Name         string // orders, order-history
	Type         string // Orders, OrderHistory: the proto service and the handler type
	ProtoPackage string // orders, order_history (then .v1)
	GoPackage    string // orderspb, orderhistorypb
	ProtoFile    string // orders.proto
	ImportPath   string // the service's Go import path
	Dir          string // as the README shows it
	Binary       string // what `go build` names the binary
}

// ValidateName checks that name can be a service made by New.
func ValidateName(name string) error {
	if err := identity.ValidateName("service name", name); err != nil {
		return err
	}
	if name[0] < 'a' || name[0] > 'z' {
		return fmt.Errorf("service name %q must start with a letter: it names the service's Go and protobuf identifiers", name)
	}
	return nil
}

func namesOf(name string) names {
	var typ strings.Builder
	for part := range strings.SplitSeq(name, "-") {
		if part != "" {
			typ.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	flat := strings.ReplaceAll(name, "-", "")
	return names{
		Name:         name,
		Type:         typ.String(),
		ProtoPackage: strings.ReplaceAll(name, "-", "_"),
		GoPackage:    flat + "pb",
		ProtoFile:    flat + ".proto",
	}
}

// New writes the service described by opts. It refuses a directory that
// holds anything, and removes what it wrote if a later step fails.
func New(ctx context.Context, opts Options) (res Result, err error) {
	if err := ValidateName(opts.Name); err != nil {
		return Result{}, err
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return Result{}, err
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return Result{}, fmt.Errorf("%s %w and is not empty: meshctl new writes only into a new or empty directory", opts.Dir, ErrExists)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Result{}, err
	}
	n := namesOf(opts.Name)
	n.Dir, n.Binary = opts.Dir, filepath.Base(dir)

	// The import path: inside a module that has Micromesh, the service is
	// a package of it; elsewhere it is a module of its own.
	modRoot, modPath, hasMesh, err := enclosingModule(filepath.Dir(dir))
	if err != nil {
		return Result{}, err
	}
	writeMod := !hasMesh
	var meshRoot, goVersion string
	if writeMod {
		if opts.Micromesh == "" {
			return Result{}, fmt.Errorf("%s is in no Go module that requires %s: give --micromesh DIR, a checkout of Micromesh, for the new go.mod's replace directive", opts.Dir, Module)
		}
		if meshRoot, goVersion, err = checkout(opts.Micromesh); err != nil {
			return Result{}, err
		}
		n.ImportPath = opts.ModulePath
		if n.ImportPath == "" {
			n.ImportPath = opts.Name
		}
		if err := module.CheckImportPath(n.ImportPath); err != nil {
			return Result{}, fmt.Errorf("--module: %w", err)
		}
	} else {
		rel, err := filepath.Rel(modRoot, dir)
		if err != nil {
			return Result{}, err
		}
		n.ImportPath = path.Join(modPath, filepath.ToSlash(rel))
		if opts.ModulePath != "" && opts.ModulePath != n.ImportPath {
			return Result{}, fmt.Errorf("--module %s: %s is inside module %s (%s), so its import path is %s", opts.ModulePath, opts.Dir, modPath, modRoot, n.ImportPath)
		}
	}

	created := false
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		created = true
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Result{}, err
	}
	defer func() {
		if err != nil { // leave nothing half-made behind
			if created {
				_ = os.RemoveAll(dir)
			} else if entries, rerr := os.ReadDir(dir); rerr == nil {
				for _, e := range entries { // it was empty
					_ = os.RemoveAll(filepath.Join(dir, e.Name()))
				}
			}
			res = Result{}
		}
	}()
	res = Result{Dir: dir, Name: opts.Name, ImportPath: n.ImportPath, GoMod: writeMod,
		Endpoints: []string{n.Type + ".Call", n.Type + ".Stream"}}
	write := func(rel string, data []byte) error {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return err
		}
		res.Files = append(res.Files, rel)
		return nil
	}
	err = fs.WalkDir(templates, "template", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel := strings.TrimSuffix(strings.TrimPrefix(p, "template/"), ".tmpl")
		switch rel {
		case "proto/service.proto":
			rel = "proto/" + n.ProtoFile
		case "gitignore":
			rel = ".gitignore"
		}
		data, err := render(p, n)
		if err != nil {
			return err
		}
		if strings.HasSuffix(rel, ".go") {
			if data, err = format.Source(data); err != nil {
				return fmt.Errorf("scaffold: %s: %w", rel, err)
			}
		}
		return write(rel, data)
	})
	if err != nil {
		return res, err
	}
	gen, err := codegen.Generate(ctx, dir, opts.Plugins)
	if err != nil {
		return res, err
	}
	res.Files = append(res.Files, gen...)
	if writeMod {
		mod := fmt.Sprintf("module %s\n\ngo %s\n\nrequire %s v0.0.0\n\n// Micromesh is not published: the service builds against a checkout.\nreplace %s => %s\n",
			n.ImportPath, goVersion, Module, Module, meshRoot)
		if err := write("go.mod", []byte(mod)); err != nil {
			return res, err
		}
		// The checkout's go.sum has every hash the service needs; tidy
		// then drops the others, from the module cache (GOPROXY=off:
		// nothing is fetched; -e: the tests of dependencies' dependencies
		// need modules the cache may lack, and the build needs none).
		sum, err := os.ReadFile(filepath.Join(meshRoot, "go.sum"))
		if err != nil {
			return res, err
		}
		if err := write("go.sum", sum); err != nil {
			return res, err
		}
		goCmd := opts.Go
		if goCmd == "" {
			goCmd = "go"
		}
		cmd := exec.CommandContext(ctx, goCmd, "mod", "tidy", "-e")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOPROXY=off", "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			return res, fmt.Errorf("scaffold: go mod tidy in %s: %w: %s", dir, err, bytes.TrimSpace(out))
		}
	}
	return res, nil
}

func render(name string, n names) ([]byte, error) {
	src, err := templates.ReadFile(name)
	if err != nil {
		return nil, err
	}
	t, err := template.New(path.Base(name)).Option("missingkey=error").Parse(string(src))
	if err != nil {
		return nil, fmt.Errorf("scaffold: %s: %w", name, err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, n); err != nil {
		return nil, fmt.Errorf("scaffold: %s: %w", name, err)
	}
	return b.Bytes(), nil
}

// enclosingModule finds the go.mod at or above dir: its directory, its
// module path, and whether the module is Micromesh or requires it.
func enclosingModule(dir string) (root, modPath string, hasMesh bool, err error) {
	for d := dir; ; d = filepath.Dir(d) {
		data, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil {
			f, err := modfile.ParseLax(filepath.Join(d, "go.mod"), data, nil)
			if err != nil {
				return "", "", false, fmt.Errorf("scaffold: %w", err)
			}
			if f.Module == nil {
				return "", "", false, fmt.Errorf("scaffold: %s has no module line", filepath.Join(d, "go.mod"))
			}
			has := f.Module.Mod.Path == Module
			for _, r := range f.Require {
				has = has || r.Mod.Path == Module
			}
			return d, f.Module.Mod.Path, has, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", "", false, err
		}
		if filepath.Dir(d) == d {
			return "", "", false, nil
		}
	}
}

// checkout checks that dir holds Micromesh's module and returns its
// absolute path and its go directive.
func checkout(dir string) (string, string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", "", err
	}
	data, err := os.ReadFile(filepath.Join(abs, "go.mod"))
	if err != nil {
		return "", "", fmt.Errorf("--micromesh %s is not a checkout of Micromesh: %w", dir, err)
	}
	f, err := modfile.ParseLax("go.mod", data, nil)
	if err != nil || f.Module == nil || f.Module.Mod.Path != Module {
		return "", "", fmt.Errorf("--micromesh %s is not a checkout of Micromesh: its go.mod is not module %s", dir, Module)
	}
	goVersion := "1.26"
	if f.Go != nil {
		goVersion = f.Go.Version
	}
	return abs, goVersion, nil
}
