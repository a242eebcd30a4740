package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	client "github.com/micromesh/micromesh/service/events"
)

// withEvents calls the events service through the mesh as the CLI's admin
// identity; timeout 0 means until ctx ends.
func withEvents(ctx context.Context, g *globalOptions, o *brokerOptions, timeout time.Duration, call func(context.Context, *client.Client) error) error {
	o.namespace = g.namespaceOr(o.namespace)
	return withPlatform(ctx, g, o.controlPlane, "events", timeout, func(ctx context.Context, conn *grpc.ClientConn) error {
		return call(ctx, client.NewClient(conn))
	})
}

// printEvent writes one event per line: sequence, time, payload.
func printEvent(w io.Writer, output string, ev *client.Event) error {
	if output == outputJSON {
		return json.NewEncoder(w).Encode(map[string]any{"topic": ev.Topic, "sequence": ev.Sequence, "time": ev.Time,
			"payload": printable(ev.Payload), "metadata": ev.Metadata, "publisher": ev.Publisher})
	}
	_, err := fmt.Fprintf(w, "%d\t%s\t%s\n", ev.Sequence, ev.Time.UTC().Format(time.RFC3339Nano), printable(ev.Payload))
	return err
}

func newEventsCommand(g *globalOptions, s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Publish, consume and read persistent, ordered events (JetStream)",
	}
	cmd.AddCommand(newEventsPublishCommand(g, s), newEventsConsumeCommand(g, s), newEventsReadCommand(g, s))
	return cmd
}

func newEventsPublishCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &brokerOptions{}
	cmd := &cobra.Command{
		Use:     "publish TOPIC PAYLOAD",
		Short:   "Append an event to a topic (on disk when the command returns); prints its sequence number",
		Args:    cobra.ExactArgs(2),
		Example: "  meshctl events publish orders '{\"id\":42}'",
		RunE: func(cmd *cobra.Command, args []string) error {
			var seq uint64
			err := withEvents(cmd.Context(), g, o, adminCallTimeout, func(ctx context.Context, c *client.Client) (err error) {
				seq, err = c.Publish(ctx, args[0], []byte(args[1]), client.Namespace(o.namespace))
				return err
			})
			if err != nil {
				return err
			}
			return render(s.Out, g.output, map[string]any{"topic": args[0], "sequence": seq}, func() string { return fmt.Sprintln(seq) })
		},
	}
	o.add(cmd)
	return cmd
}

func newEventsConsumeCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &brokerOptions{}
	var group string
	var offset uint64
	cmd := &cobra.Command{
		Use:   "consume TOPIC",
		Short: "Print a topic's events as they come (sequence, time, payload), acknowledging each, until interrupted",
		Args:  cobra.ExactArgs(1),
		Example: `  meshctl events consume orders
  meshctl events consume orders --group billing
  meshctl events consume orders --offset 1`,
		RunE: func(cmd *cobra.Command, args []string) error {
			err := withEvents(cmd.Context(), g, o, 0, func(ctx context.Context, c *client.Client) error {
				opts := []client.Option{client.Namespace(o.namespace), client.Offset(offset)}
				if group != "" {
					opts = append(opts, client.Group(group))
				}
				cons, err := c.Consume(ctx, args[0], opts...)
				if err != nil {
					return err
				}
				fmt.Fprintf(s.Err, "consuming %s in namespace %s\n", args[0], o.namespace)
				for {
					ev, err := cons.Next()
					if err != nil {
						return err
					}
					if err := printEvent(s.Out, g.output, ev); err != nil {
						return err
					}
					if err := cons.Ack(ev); err != nil {
						return err
					}
				}
			})
			if cmd.Context().Err() != nil {
				return nil // interrupted
			}
			return err
		},
	}
	o.add(cmd)
	cmd.Flags().StringVar(&group, "group", "", "consume as a member of a durable group")
	cmd.Flags().Uint64Var(&offset, "offset", 0, "start at this sequence number (1 is the first)")
	return cmd
}

func newEventsReadCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &brokerOptions{}
	var offset uint64
	var limit uint32
	cmd := &cobra.Command{
		Use:     "read TOPIC",
		Short:   "Print stored events without consuming them (sequence, time, payload)",
		Args:    cobra.ExactArgs(1),
		Example: "  meshctl events read orders --offset 10 --limit 5",
		RunE: func(cmd *cobra.Command, args []string) error {
			var evs []*client.Event
			err := withEvents(cmd.Context(), g, o, adminCallTimeout, func(ctx context.Context, c *client.Client) (err error) {
				evs, err = c.Read(ctx, args[0], client.Namespace(o.namespace), client.Offset(offset), client.Limit(limit))
				return err
			})
			if err != nil {
				return err
			}
			for _, ev := range evs {
				if err := printEvent(s.Out, g.output, ev); err != nil {
					return err
				}
			}
			return nil
		},
	}
	o.add(cmd)
	cmd.Flags().Uint64Var(&offset, "offset", 1, "first sequence number")
	cmd.Flags().Uint32Var(&limit, "limit", 100, "at most this many (up to 1000)")
	return cmd
}
