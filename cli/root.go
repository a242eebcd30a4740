// Package cli holds meshctl's cobra commands, one file per command group.
// Commands parse and validate flags, call the packages that do the work, and
// render results as text or JSON; they hold no business logic.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/cli/sidecarcmd"
	"github.com/micromesh/micromesh/internal/envconfig"
	"github.com/micromesh/micromesh/internal/home"
)

// Streams are a command's standard streams.
type Streams struct {
	In       io.Reader
	Out, Err io.Writer
}

// globalOptions are the flags every command takes.
type globalOptions struct {
	home   string
	output string
	env    string // "" for the current one (meshctl env)
}

func (g *globalOptions) homeDir() home.Dir { return home.Dir(g.home) }

func (g *globalOptions) validate() error {
	if g.output != outputText && g.output != outputJSON {
		return fmt.Errorf("--output %q: must be %q or %q", g.output, outputText, outputJSON)
	}
	if g.home == "" {
		return errors.New("--home is empty")
	}
	return nil
}

// Execute runs meshctl with the process's arguments and returns the exit code.
func Execute() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := NewCommand(Streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}, os.Args[1:])
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "meshctl: "+describe(err))
		return 1
	}
	return 0
}

// NewCommand returns meshctl set to run args: the command tree, and when
// args' first word names no command but a service could, that service's
// command (servicecmd.go: `meshctl helloworld call --name Alice`).
func NewCommand(s Streams, args []string) *cobra.Command {
	root, g := newRoot(s)
	if word := serviceWord(root, args); word != "" {
		root.AddCommand(remoteOK(newServiceCommand(g, s, word)))
	}
	root.SetArgs(args)
	return root
}

// NewRootCommand returns the meshctl command tree.
func NewRootCommand(s Streams) *cobra.Command {
	root, _ := newRoot(s)
	return root
}

func newRoot(s Streams) (*cobra.Command, *globalOptions) {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:   "meshctl",
		Short: "Run and use a Micromesh service mesh",
		Long: `meshctl runs the Micromesh server and talks to it.

State lives under $MESH_HOME (default ~/.micromesh). Commands find the local
server there with no flags.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// A word that names no command may name a service; one close to a
		// command's name is still suggested (servicecmd.go).
		SuggestionsMinimumDistance: 2,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.validate(); err != nil {
				return err
			}
			return g.checkRemote(cmd)
		},
	}
	root.SetIn(s.In)
	root.SetOut(s.Out)
	root.SetErr(s.Err)
	root.PersistentFlags().StringVar(&g.home, "home", envconfig.HomeDir(), "state directory ($"+envconfig.Home+")")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", outputText, "output format: text or json")
	root.PersistentFlags().StringVar(&g.env, "env", envconfig.Get(envconfig.Env, ""), "environment to talk to, over the current one (meshctl env; $"+envconfig.Env+")")
	root.AddCommand(
		remoteOK(newServerCommand(g, s)), // the local server, whatever environment the CLI talks to
		newCertCommand(g, s),
		// The control plane's APIs: in a remote environment, for accounts
		// with the scope admin, through the remote proxy (adminConn).
		remoteOK(newRegistryCommand(g, s)),
		newServicesCommand(g, s),
		remoteOK(newSplitCommand(g, s)),
		remoteOK(newRolloutCommand(g, s)),
		remoteOK(newPolicyCommand(g, s)),
		remoteOK(newExternalCommand(g, s)),
		remoteOK(newProxyStatusCommand(g, s)),
		remoteOK(newProxyConfigCommand(g, s)),
		remoteOK(newTracesCommand(g, s)),
		remoteOK(newTraceCommand(g, s)),
		remoteOK(newStatCommand(g, s)),
		remoteOK(newCheckCommand(g, s)),
		remoteOK(newTapCommand(g, s)),
		// The sidecar joins with a token or certificates of its own, in any
		// environment.
		remoteOK(sidecarcmd.New(sidecarcmd.Config{
			Out: s.Out, Err: s.Err, Home: g.homeDir, Output: func() string { return g.output },
			Mint: func(service, namespace string) (string, error) { return localMint(g.homeDir())(service, namespace) },
		})),
		newBootstrapCommand(g, s),
		newEnvoyCommand(g, s),
		remoteOK(newRunCommand(g, s)),
		remoteOK(newStatusCommand(g, s)),
		remoteOK(newLogsCommand(g, s)),
		remoteOK(newKillCommand(g, s)),
		remoteOK(newUpdateCommand(g, s)),
		remoteOK(newScaleCommand(g, s)),
		remoteOK(newCallCommand(g, s)),
		remoteOK(newStoreCommand(g, s)),
		remoteOK(newBrokerCommand(g, s)),
		remoteOK(newEventsCommand(g, s)),
		remoteOK(newConfigCommand(g, s)),
		remoteOK(newAuthCommand(g, s)),
		remoteOK(newDescribeCommand(g, s)),
		remoteOK(newVersionCommand(g, s)),
		// Writing code needs no server.
		remoteOK(newNewCommand(g, s)),
		remoteOK(newGenerateCommand(g, s)),
		remoteOK(newPortForwardCommand(g, s)), // remote: relayed to the remote proxy
		newEnvCommand(g, s),
		newLoginCommand(g, s),
		newLogoutCommand(g, s),
	)
	return root, g
}

// describe turns an error into one line a person can act on; gRPC statuses
// lose their "rpc error: code = ... desc =" wrapping.
func describe(err error) string {
	// A status wrapped in context ("helloworld: reflection: …") keeps
	// the context and loses only gRPC's own wording.
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		st := se.GRPCStatus()
		prefix := strings.TrimSuffix(err.Error(), st.Err().Error())
		return prefix + st.Code().String() + ": " + st.Message()
	}
	return err.Error()
}

// newLogger returns the text logger commands hand to the packages they run.
