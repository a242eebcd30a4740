package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/micromesh/micromesh/codegen"
	"github.com/micromesh/micromesh/scaffold"
)

func newNewCommand(g *globalOptions, s Streams) *cobra.Command {
	var dir, modulePath, micromesh string
	cmd := &cobra.Command{
		Use:   "new NAME [--dir DIR] [--module PATH] [--micromesh DIR]",
		Short: "Write a new service: main.go, a handler with tests, a .proto API and its Go code",
		Long: `Write a new service into DIR (default ./NAME): main.go, handler/ with
its tests, proto/NAME.proto with the Go generated from it (no protoc needed:
meshctl compiles it and runs protoc-gen-go and protoc-gen-go-grpc, which
make build puts beside meshctl), a README and a .gitignore. The service has
a unary endpoint (Call) and a server stream (Stream); meshctl run DIR starts
it and meshctl call reaches it.

Inside a Go module that has Micromesh (this checkout, or a module requiring
it) the service is a package of that module. Elsewhere it gets a go.mod of
its own, module PATH (default NAME), building against the Micromesh checkout
meshctl was built from (--micromesh to name another): the module is not
published.`,
		Args: cobra.ExactArgs(1),
		Example: `  meshctl new orders                       # ./orders
  meshctl run ./orders
  meshctl call orders Orders.Call '{"name":"Alice"}'
  meshctl new order-history --dir ~/src/history --module example.com/history`,
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := scaffold.ValidateName(name); err != nil {
				return err
			}
			if dir == "" {
				dir = name
			}
			plugins, err := codegen.FindPlugins()
			if err != nil {
				return err
			}
			if micromesh == "" {
				micromesh = builtFrom()
			}
			res, err := scaffold.New(cmd.Context(), scaffold.Options{
				Name: name, Dir: dir, ModulePath: modulePath, Micromesh: micromesh, Plugins: plugins,
			})
			if err != nil {
				return err
			}
			return render(s.Out, g.output, res, func() string {
				var b strings.Builder
				where := res.ImportPath + ", a package of the module around it"
				if res.GoMod {
					where = "module " + res.ImportPath
				}
				fmt.Fprintf(&b, "Created %s in %s (%s):\n", name, dir, where)
				for _, f := range res.Files {
					fmt.Fprintf(&b, "  %s\n", f)
				}
				run := dir
				if !filepath.IsAbs(run) && !strings.HasPrefix(run, ".") {
					run = "./" + run
				}
				fmt.Fprintf(&b, "\nNext:\n  meshctl run %s\n  meshctl call %s %s '{\"name\":\"Alice\"}'\n  meshctl %s stream --count 3\n",
					run, name, res.Endpoints[0], name)
				fmt.Fprintf(&b, "After editing proto/*.proto: meshctl generate %s\n", run)
				return b.String()
			})
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory to write the service into (default ./NAME)")
	cmd.Flags().StringVar(&modulePath, "module", "", "module path of the service's own go.mod (default NAME)")
	cmd.Flags().StringVar(&micromesh, "micromesh", "", "Micromesh checkout the service's go.mod points at (default: the one meshctl was built from)")
	return cmd
}

func newGenerateCommand(g *globalOptions, s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "generate [DIR]",
		Short: "Regenerate the Go code of every .proto under DIR (default .), beside each",
		Long: `Compile every .proto under DIR (imports are relative to DIR; Google's
well-known types are built in) and write the Go code protoc-gen-go and
protoc-gen-go-grpc generate for each, beside it — what buf generate with
paths=source_relative would. Nothing is written if a file does not compile:
the error names its file, line and column.`,
		Args:    cobra.MaximumNArgs(1),
		Example: `  meshctl generate            # in a service made by meshctl new, after editing proto/*.proto`,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := "."
			if len(args) == 1 {
				dir = args[0]
			}
			if st, err := os.Stat(dir); err != nil {
				return err
			} else if !st.IsDir() {
				return fmt.Errorf("%s is not a directory: give the directory the .proto files are under", dir)
			}
			plugins, err := codegen.FindPlugins()
			if err != nil {
				return err
			}
			files, err := codegen.Generate(cmd.Context(), dir, plugins)
			if err != nil {
				return err
			}
			return render(s.Out, g.output, map[string]any{"dir": dir, "files": files}, func() string {
				return strings.Join(files, "\n") + "\n"
			})
		},
	}
	return cmd
}

// builtFrom is the Micromesh checkout holding the running meshctl when it
// is that checkout's bin/meshctl (make build), else "".
func builtFrom() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return ""
	}
	root := filepath.Dir(filepath.Dir(exe))
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !strings.HasPrefix(string(data), "module "+scaffold.Module+"\n") {
		return ""
	}
	return root
}
