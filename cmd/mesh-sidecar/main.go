// Command mesh-sidecar is the built-in sidecar on its own: the same command
// as `meshctl sidecar`, in a binary that links only the data plane (no CA,
// registry, platform or CLI), so each injected proxy maps a third of
// meshctl's code. The runtime starts it when it sits next to meshctl (make
// build puts both in bin/). It cannot mint join tokens: pass --token or
// $MESH_TOKEN (meshctl cert token --service NAME mints one).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/micromesh/micromesh/cli/sidecarcmd"
	"github.com/micromesh/micromesh/internal/envconfig"
	"github.com/micromesh/micromesh/internal/home"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	homeDir, output := envconfig.HomeDir(), "text"
	cmd := sidecarcmd.New(sidecarcmd.Config{
		Out: os.Stdout, Err: os.Stderr,
		Home:   func() home.Dir { return home.Dir(homeDir) },
		Output: func() string { return output },
	})
	cmd.Use = "mesh-sidecar"
	cmd.Example = `  MESH_TOKEN=$(meshctl cert token --service hello) mesh-sidecar --service hello --app 127.0.0.1:8080 --inbound-port 18443 --outbound 127.0.0.1:15001
  mesh-sidecar --service loadgen --app none --outbound 127.0.0.1:15002 --token "$TOKEN" --controlplane 10.0.0.5:8443`
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	cmd.Flags().StringVar(&homeDir, "home", homeDir, "state directory ($"+envconfig.Home+")")
	cmd.Flags().StringVarP(&output, "output", "o", output, "output format: text or json")
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if output != "text" && output != "json" {
			return fmt.Errorf("--output %q: must be \"text\" or \"json\"", output)
		}
		return nil
	}
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "mesh-sidecar: "+err.Error())
		stop()
		os.Exit(1)
	}
}
