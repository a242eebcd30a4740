// Package codegen turns a service's .proto files into Go without protoc or
// buf: it compiles them in-process (bufbuild/protocompile, the parser buf
// itself is built on) and runs the Go generators — protoc-gen-go and
// protoc-gen-go-grpc, the same binaries `make proto` runs — as protoc
// plugins, writing each generated file beside its .proto
// (paths=source_relative). `meshctl new` and `meshctl generate` use it.
package codegen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bufbuild/protocompile"
	"github.com/bufbuild/protocompile/linker"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"

	"github.com/micromesh/micromesh/internal/atomicfile"
)

// The plugins, in the order they run.
const (
	PluginGo   = "protoc-gen-go"
	PluginGRPC = "protoc-gen-go-grpc"
)

// ErrNoProtos is returned when a directory holds no .proto file.
var ErrNoProtos = errors.New("no .proto files")

// Plugins are the generators' executables.
type Plugins struct {
	Go, GRPC string
}

// PluginsIn returns the generators in dir (bin/ of a checkout after
// `make build`), or an error naming the one missing.
func PluginsIn(dir string) (Plugins, error) {
	var p Plugins
	for _, f := range []struct {
		name string
		path *string
	}{{PluginGo, &p.Go}, {PluginGRPC, &p.GRPC}} {
		path := filepath.Join(dir, f.name)
		st, err := os.Stat(path)
		if err != nil {
			return Plugins{}, fmt.Errorf("codegen: %w", err)
		}
		if !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
			return Plugins{}, fmt.Errorf("codegen: %s is not an executable file", path)
		}
		*f.path = path
	}
	return p, nil
}

// FindPlugins looks for the generators beside the running executable
// (bin/ holds meshctl and both plugins after `make build`), then on PATH.
func FindPlugins() (Plugins, error) {
	var dir string
	if exe, err := os.Executable(); err == nil {
		dir = filepath.Dir(exe)
		if p, err := PluginsIn(dir); err == nil {
			return p, nil
		}
	}
	var p Plugins
	for _, f := range []struct {
		name string
		path *string
	}{{PluginGo, &p.Go}, {PluginGRPC, &p.GRPC}} {
		path, err := exec.LookPath(f.name)
		if err != nil {
			return Plugins{}, fmt.Errorf("%s is neither beside %s (%s) nor on PATH: `make build` in the micromesh checkout puts it in bin/, or `go install` it", f.name, filepath.Base(os.Args[0]), dir)
		}
		*f.path = path
	}
	return p, nil
}

// Protos lists the .proto files under root, relative to it with forward
// slashes, sorted; hidden directories, vendor and testdata are skipped, as
// the go command skips them.
func Protos(root string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "vendor" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(name, ".proto") {
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("codegen: listing %s: %w", root, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("codegen: %w under %s", ErrNoProtos, root)
	}
	slices.Sort(files)
	return files, nil
}

// Compile parses and links files (relative to root, which is also the
// import path root; google/protobuf's well-known types are built in) and
// returns the request a protoc plugin reads: every file the targets need,
// dependencies first, with source info so comments reach the Go code.
// A syntax or link error names the file, line and column.
func Compile(ctx context.Context, root string, files []string) (*pluginpb.CodeGeneratorRequest, error) {
	c := protocompile.Compiler{
		Resolver:       protocompile.WithStandardImports(&protocompile.SourceResolver{ImportPaths: []string{root}}),
		SourceInfoMode: protocompile.SourceInfoStandard,
	}
	linked, err := c.Compile(ctx, files...)
	if err != nil {
		return nil, fmt.Errorf("codegen: %w", err)
	}
	req := &pluginpb.CodeGeneratorRequest{FileToGenerate: files}
	seen := map[string]bool{}
	var add func(f protoreflect.FileDescriptor)
	add = func(f protoreflect.FileDescriptor) {
		if seen[f.Path()] {
			return
		}
		seen[f.Path()] = true
		imports := f.Imports()
		for i := range imports.Len() {
			add(imports.Get(i).FileDescriptor)
		}
		req.ProtoFile = append(req.ProtoFile, fileProto(f))
	}
	for _, f := range linked {
		add(f)
	}
	return req, nil
}

// fileProto is f as a protoc plugin gets it. (protocompile's parser fills
// in every field's json_name, as protoc does: protoc-gen-go embeds the
// descriptor as given.)
func fileProto(f protoreflect.FileDescriptor) *descriptorpb.FileDescriptorProto {
	if r, ok := f.(linker.Result); ok {
		return r.FileDescriptorProto()
	}
	return protodesc.ToFileDescriptorProto(f)
}

// Run hands req to plugin (with parameter, e.g. "paths=source_relative")
// and returns the files it generated. A plugin's own error (a proto it
// cannot generate for) comes back as an error naming the plugin.
func Run(ctx context.Context, plugin, parameter string, req *pluginpb.CodeGeneratorRequest) ([]*pluginpb.CodeGeneratorResponse_File, error) {
	r := proto.Clone(req).(*pluginpb.CodeGeneratorRequest)
	if parameter != "" {
		r.Parameter = proto.String(parameter)
	}
	in, err := proto.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("codegen: %w", err)
	}
	name := filepath.Base(plugin)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, plugin)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(in), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("codegen: %s: %w: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	var resp pluginpb.CodeGeneratorResponse
	if err := proto.Unmarshal(stdout.Bytes(), &resp); err != nil {
		return nil, fmt.Errorf("codegen: %s answered something other than a CodeGeneratorResponse: %w", name, err)
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("codegen: %s: %s", name, resp.GetError())
	}
	for _, f := range resp.GetFile() {
		if f.GetInsertionPoint() != "" {
			return nil, fmt.Errorf("codegen: %s: insertion points are not supported (%s)", name, f.GetName())
		}
		if n := f.GetName(); n == "" || filepath.IsAbs(n) || !filepath.IsLocal(filepath.FromSlash(n)) {
			return nil, fmt.Errorf("codegen: %s wants to write %q, outside the source tree", name, n)
		}
	}
	return resp.GetFile(), nil
}

// Generate compiles every .proto under root and writes the Go code for
// each beside it; it returns the files written, relative to root. Nothing
// is written unless every file compiles and both plugins succeed.
func Generate(ctx context.Context, root string, plugins Plugins) ([]string, error) {
	files, err := Protos(root)
	if err != nil {
		return nil, err
	}
	req, err := Compile(ctx, root, files)
	if err != nil {
		return nil, err
	}
	var out []*pluginpb.CodeGeneratorResponse_File
	for _, p := range []string{plugins.Go, plugins.GRPC} {
		gen, err := Run(ctx, p, "paths=source_relative", req)
		if err != nil {
			return nil, err
		}
		out = append(out, gen...)
	}
	var written []string
	for _, f := range out {
		path := filepath.Join(root, filepath.FromSlash(f.GetName()))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return written, fmt.Errorf("codegen: %w", err)
		}
		if err := atomicfile.Write(path, []byte(f.GetContent()), 0o644); err != nil {
			return written, fmt.Errorf("codegen: %w", err)
		}
		written = append(written, f.GetName())
	}
	return written, nil
}
