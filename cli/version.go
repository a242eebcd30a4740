package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/micromesh/micromesh/internal/version"
)

func newVersionCommand(g *globalOptions, s Streams) *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version of meshctl",
		Args:    cobra.NoArgs,
		Example: "  meshctl version\n  meshctl version -o json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := version.Get()
			return render(s.Out, g.output, v, func() string {
				return fmt.Sprintf("meshctl %s (%s, %s)\n", v.Version, v.GoVersion, v.Platform)
			})
		},
	}
}
