package cli

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	client "github.com/micromesh/micromesh/service/store"
)

// storeOptions are the flags every store command takes.
type storeOptions struct {
	database, table string
	controlPlane    string
}

func (o *storeOptions) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.database, "database", "", "database: a namespace (default: default; in a remote environment, the account's own)")
	cmd.Flags().StringVar(&o.table, "table", "default", "table (services write to their own name's by default)")
	cmd.Flags().StringVar(&o.controlPlane, "controlplane", "", "control plane address (default: the local server)")
}

func (o *storeOptions) scope() []client.Option {
	return []client.Option{client.Database(o.database), client.Table(o.table)}
}

// withStore calls the store through the mesh as the CLI's admin identity.
func withStore(ctx context.Context, g *globalOptions, o *storeOptions, call func(context.Context, *client.Client) error) error {
	o.database = g.namespaceOr(o.database)
	return withPlatform(ctx, g, o.controlPlane, "store", adminCallTimeout, func(ctx context.Context, conn *grpc.ClientConn) error {
		return call(ctx, client.NewClient(conn))
	})
}

type recordJSON struct {
	Key      string            `json:"key"`
	Value    string            `json:"value"`
	Metadata map[string]string `json:"metadata,omitempty"`
	Expiry   string            `json:"expiry,omitempty"`
}

func newStoreCommand(g *globalOptions, s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "store",
		Short: "Read and write the store (records in tables, tables in databases)",
		Long: `Read and write the store primitive through the mesh. A database is a
namespace; services use their own namespace's and a table named after
themselves. The CLI, an identity of the platform, may name any database and
table (--database, --table).`,
	}
	cmd.AddCommand(newStoreReadCommand(g, s), newStoreWriteCommand(g, s), newStoreDeleteCommand(g, s),
		newStoreListCommand(g, s), newStoreDatabasesCommand(g, s), newStoreTablesCommand(g, s))
	return cmd
}

func newStoreReadCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &storeOptions{}
	var prefix, suffix bool
	var limit, offset uint32
	var order string
	cmd := &cobra.Command{
		Use:     "read KEY",
		Short:   "Read a record, or with --prefix/--suffix the records whose keys match",
		Args:    cobra.ExactArgs(1),
		Example: "  meshctl store read user/1\n  meshctl store read -p user/ -l 10 --order desc --table users",
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := o.scope()
			if prefix {
				opts = append(opts, client.Prefix())
			}
			if suffix {
				opts = append(opts, client.Suffix())
			}
			more, err := pageOptions(limit, offset, order)
			if err != nil {
				return err
			}
			opts = append(opts, more...)
			var recs []*client.Record
			err = withStore(cmd.Context(), g, o, func(ctx context.Context, c *client.Client) (err error) {
				recs, err = c.Read(ctx, args[0], opts...)
				return err
			})
			if err != nil {
				return err
			}
			out := make([]recordJSON, 0, len(recs))
			for _, r := range recs {
				j := recordJSON{Key: r.Key, Value: printable(r.Value), Metadata: r.Metadata}
				if !r.Expiry.IsZero() {
					j.Expiry = r.Expiry.UTC().Format(time.RFC3339)
				}
				out = append(out, j)
			}
			return render(s.Out, g.output, out, func() string {
				if !prefix && !suffix && len(out) == 1 {
					return out[0].Value + "\n"
				}
				var b strings.Builder
				for _, r := range out {
					fmt.Fprintf(&b, "%s\t%s\n", r.Key, r.Value)
				}
				return b.String()
			})
		},
	}
	o.add(cmd)
	cmd.Flags().BoolVarP(&prefix, "prefix", "p", false, "KEY is a prefix")
	cmd.Flags().BoolVar(&suffix, "suffix", false, "KEY is a suffix")
	addPageFlags(cmd, &limit, &offset, &order)
	return cmd
}

func addPageFlags(cmd *cobra.Command, limit, offset *uint32, order *string) {
	cmd.Flags().Uint32VarP(limit, "limit", "l", 0, "at most this many (0: all)")
	cmd.Flags().Uint32Var(offset, "offset", 0, "skip this many")
	cmd.Flags().StringVar(order, "order", "asc", "by key: asc or desc")
}

func pageOptions(limit, offset uint32, order string) ([]client.Option, error) {
	opts := []client.Option{client.Limit(limit), client.Offset(offset)}
	switch order {
	case "asc":
	case "desc":
		opts = append(opts, client.Desc())
	default:
		return nil, fmt.Errorf("--order %q: asc or desc", order)
	}
	return opts, nil
}

// printable shows a value as text when it is UTF-8, else as hex.
func printable(v []byte) string {
	if utf8.Valid(v) {
		return string(v)
	}
	return fmt.Sprintf("0x%x", v)
}

func newStoreWriteCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &storeOptions{}
	var ttl time.Duration
	var metadata []string
	cmd := &cobra.Command{
		Use:     "write KEY VALUE",
		Short:   "Write a record (durable when the command returns)",
		Args:    cobra.ExactArgs(2),
		Example: "  meshctl store write user/1 '{\"name\":\"Alice\"}'\n  meshctl store write session/9 x --ttl 30m --metadata owner=web",
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("ttl") && ttl <= 0 {
				return fmt.Errorf("--ttl %v: must be positive", ttl)
			}
			md := map[string]string{}
			for _, kv := range metadata {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return fmt.Errorf("--metadata %q: want key=value", kv)
				}
				md[k] = v
			}
			opts := o.scope()
			if ttl > 0 {
				opts = append(opts, client.TTL(ttl))
			}
			err := withStore(cmd.Context(), g, o, func(ctx context.Context, c *client.Client) error {
				return c.Write(ctx, &client.Record{Key: args[0], Value: []byte(args[1]), Metadata: md}, opts...)
			})
			if err != nil {
				return err
			}
			return render(s.Out, g.output, map[string]string{"written": args[0]}, func() string { return "" })
		},
	}
	o.add(cmd)
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "expire after this long")
	cmd.Flags().StringArrayVar(&metadata, "metadata", nil, "metadata key=value (repeatable)")
	return cmd
}

func newStoreDeleteCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &storeOptions{}
	cmd := &cobra.Command{
		Use:   "delete KEY",
		Short: "Delete a record",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			err := withStore(cmd.Context(), g, o, func(ctx context.Context, c *client.Client) error {
				return c.Delete(ctx, args[0], o.scope()...)
			})
			if err != nil {
				return err
			}
			return render(s.Out, g.output, map[string]string{"deleted": args[0]}, func() string { return "" })
		},
	}
	o.add(cmd)
	return cmd
}

func newStoreListCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &storeOptions{}
	var prefix, suffix, order string
	var limit, offset uint32
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List keys",
		Args:    cobra.NoArgs,
		Example: "  meshctl store list --prefix user/ --table users",
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts := append(o.scope(), client.ListPrefix(prefix), client.ListSuffix(suffix))
			more, err := pageOptions(limit, offset, order)
			if err != nil {
				return err
			}
			opts = append(opts, more...)
			var keys []string
			err = withStore(cmd.Context(), g, o, func(ctx context.Context, c *client.Client) (err error) {
				keys, err = c.List(ctx, opts...)
				return err
			})
			if err != nil {
				return err
			}
			if keys == nil {
				keys = []string{}
			}
			return render(s.Out, g.output, keys, func() string { return lines(keys) })
		},
	}
	o.add(cmd)
	cmd.Flags().StringVarP(&prefix, "prefix", "p", "", "keys starting with this")
	cmd.Flags().StringVar(&suffix, "suffix", "", "keys ending with this")
	addPageFlags(cmd, &limit, &offset, &order)
	return cmd
}

func lines(ss []string) string {
	if len(ss) == 0 {
		return ""
	}
	return strings.Join(ss, "\n") + "\n"
}

func newStoreDatabasesCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &storeOptions{}
	cmd := &cobra.Command{
		Use:   "databases",
		Short: "List the databases",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var dbs []string
			err := withStore(cmd.Context(), g, o, func(ctx context.Context, c *client.Client) (err error) {
				dbs, err = c.Databases(ctx)
				return err
			})
			if err != nil {
				return err
			}
			return render(s.Out, g.output, dbs, func() string { return lines(dbs) })
		},
	}
	cmd.Flags().StringVar(&o.controlPlane, "controlplane", "", "control plane address (default: the local server)")
	return cmd
}

func newStoreTablesCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &storeOptions{}
	cmd := &cobra.Command{
		Use:   "tables",
		Short: "List the tables of a database",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var tables []string
			err := withStore(cmd.Context(), g, o, func(ctx context.Context, c *client.Client) (err error) {
				tables, err = c.Tables(ctx, o.database)
				return err
			})
			if err != nil {
				return err
			}
			return render(s.Out, g.output, tables, func() string { return lines(tables) })
		},
	}
	cmd.Flags().StringVar(&o.database, "database", "", "database: a namespace (default: default; in a remote environment, the account's own)")
	cmd.Flags().StringVar(&o.controlPlane, "controlplane", "", "control plane address (default: the local server)")
	return cmd
}
