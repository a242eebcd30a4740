package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	client "github.com/micromesh/micromesh/service/config"
)

// withConfig calls the config service through the mesh as the CLI's
// admin identity.
func withConfig(ctx context.Context, g *globalOptions, o *brokerOptions, call func(context.Context, *client.Client) error) error {
	o.namespace = g.namespaceOr(o.namespace)
	return withPlatform(ctx, g, o.controlPlane, "config", adminCallTimeout, func(ctx context.Context, conn *grpc.ClientConn) error {
		return call(ctx, client.NewClient(conn))
	})
}

func newConfigCommand(g *globalOptions, s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Read and write a namespace's config: a JSON tree by dotted path, with secrets",
	}
	cmd.AddCommand(newConfigGetCommand(g, s), newConfigSetCommand(g, s), newConfigDelCommand(g, s))
	return cmd
}

func newConfigGetCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &brokerOptions{}
	var secret bool
	cmd := &cobra.Command{
		Use:     "get [PATH]",
		Short:   "Print the JSON value at a path (the whole tree without one); secrets show as [secret]",
		Args:    cobra.MaximumNArgs(1),
		Example: "  meshctl config get db.pool.size\n  meshctl config get db.password --secret",
		RunE: func(cmd *cobra.Command, args []string) error {
			path := ""
			if len(args) == 1 {
				path = args[0]
			}
			var v *client.Value
			err := withConfig(cmd.Context(), g, o, func(ctx context.Context, c *client.Client) (err error) {
				opts := []client.Option{client.Namespace(o.namespace)}
				if secret {
					opts = append(opts, client.Secret())
				}
				v, err = c.Get(ctx, path, opts...)
				return err
			})
			if err != nil {
				return err
			}
			var out bytes.Buffer
			if g.output == outputJSON {
				if err := json.Indent(&out, v.JSON, "", "  "); err != nil {
					return err
				}
			} else {
				out.Write(v.JSON)
			}
			out.WriteByte('\n')
			_, err = s.Out.Write(out.Bytes())
			return err
		},
	}
	o.add(cmd)
	cmd.Flags().BoolVar(&secret, "secret", false, "show secrets' values")
	return cmd
}

func newConfigSetCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &brokerOptions{}
	var secret bool
	var readers []string
	cmd := &cobra.Command{
		Use:   "set PATH VALUE",
		Short: "Set a value at a path (JSON when it parses as JSON, else a string; objects merge)",
		Args:  cobra.ExactArgs(2),
		Example: `  meshctl config set db.pool '{"size":20}'
  meshctl config set db.host db.internal
  meshctl config set db.password hunter2 --secret --reader web`,
		RunE: func(cmd *cobra.Command, args []string) error {
			value := json.RawMessage(args[1])
			if !json.Valid(value) {
				b, _ := json.Marshal(args[1])
				value = b
			}
			var rev uint64
			err := withConfig(cmd.Context(), g, o, func(ctx context.Context, c *client.Client) (err error) {
				opts := []client.Option{client.Namespace(o.namespace)}
				if secret {
					opts = append(opts, client.Secret(), client.Readers(readers...))
				}
				rev, err = c.Set(ctx, args[0], value, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return render(s.Out, g.output, map[string]any{"path": args[0], "revision": rev}, func() string { return "" })
		},
	}
	o.add(cmd)
	cmd.Flags().BoolVar(&secret, "secret", false, "store the value encrypted")
	cmd.Flags().StringArrayVar(&readers, "reader", nil, "a service of the namespace that may read the secret (repeatable; default: all)")
	return cmd
}

func newConfigDelCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &brokerOptions{}
	cmd := &cobra.Command{
		Use:     "del PATH",
		Aliases: []string{"delete"},
		Short:   "Delete a path",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var rev uint64
			err := withConfig(cmd.Context(), g, o, func(ctx context.Context, c *client.Client) (err error) {
				rev, err = c.Delete(ctx, args[0], client.Namespace(o.namespace))
				return err
			})
			if err != nil {
				return err
			}
			return render(s.Out, g.output, map[string]any{"deleted": args[0], "revision": rev}, func() string { return fmt.Sprint() })
		},
	}
	o.add(cmd)
	return cmd
}
