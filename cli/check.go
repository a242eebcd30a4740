package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/micromesh/micromesh/internal/meshcheck"
	"github.com/micromesh/micromesh/internal/version"
)

func newCheckCommand(g *globalOptions, s Streams) *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that the mesh is healthy: the control plane, its certificates, the proxies, the services",
		Long: `Check the mesh as an operator would before trusting it, and say what to do
about each problem found:

  control plane  it answers; its version is meshctl's; its registry
                 (Consul) answers; the certificates it serves with (its
                 own, or the remote proxy's, and the CA's intermediate)
                 are not about to expire
  proxies        every connected proxy runs the configuration it is served
                 (none rejected one; none lags behind)
  services       every service has a passing instance; no instance is
                 critical
  traffic        no service answered fewer than 95 % of the last minute's
                 requests (of those with at least 20)

Exits 1 if a check failed; warnings alone exit 0.`,
		Example: `  meshctl check
  meshctl check -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var results []meshcheck.Result
			err := withAdmin(cmd.Context(), g, addr, func(ctx context.Context, conn *grpc.ClientConn) error {
				results = meshcheck.Run(ctx, conn, conn.Target(), version.Version)
				return nil
			})
			if err != nil {
				results = append(results, meshcheck.Result{Section: "control plane", Check: "reachable", Status: meshcheck.Fail,
					Detail: describe(err) + " (meshctl server starts the local one; --env names another)"})
			}
			if rerr := render(s.Out, g.output, results, func() string { return renderChecks(results) }); rerr != nil {
				return rerr
			}
			if n := meshcheck.Failed(results); n > 0 {
				return fmt.Errorf("%d check(s) failed", n)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "controlplane", "", "control plane address (default: the local server)")
	return cmd
}

func renderChecks(rs []meshcheck.Result) string {
	var b strings.Builder
	section := ""
	marks := map[string]string{meshcheck.OK: "√", meshcheck.Warn: "‼", meshcheck.Fail: "×"}
	warn, fail := 0, 0
	for _, r := range rs {
		if r.Section != section {
			if section != "" {
				b.WriteString("\n")
			}
			section = r.Section
			b.WriteString(section + "\n")
		}
		fmt.Fprintf(&b, "  %s %s", marks[r.Status], r.Check)
		if r.Detail != "" {
			b.WriteString(": " + r.Detail)
		}
		b.WriteString("\n")
		switch r.Status {
		case meshcheck.Warn:
			warn++
		case meshcheck.Fail:
			fail++
		}
	}
	switch {
	case fail > 0:
		fmt.Fprintf(&b, "\n%d failed, %d warning(s)\n", fail, warn)
	case warn > 0:
		fmt.Fprintf(&b, "\nno failures, %d warning(s)\n", warn)
	default:
		b.WriteString("\nall checks passed\n")
	}
	return b.String()
}
