package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/micromesh/micromesh/identity"
	client "github.com/micromesh/micromesh/service/broker"
)

// brokerOptions are the flags of the broker commands.
type brokerOptions struct {
	namespace, controlPlane string
}

func (o *brokerOptions) add(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&o.namespace, "namespace", "n", "", "the namespace it acts in (default: default; in a remote environment, the account's own)")
	cmd.Flags().StringVar(&o.controlPlane, "controlplane", "", "control plane address (default: the local server)")
}

// withBroker calls the broker through the mesh as the CLI's admin
// identity; timeout 0 means until ctx ends.
func withBroker(ctx context.Context, g *globalOptions, o *brokerOptions, timeout time.Duration, call func(context.Context, *client.Client) error) error {
	o.namespace = g.namespaceOr(o.namespace)
	return withPlatform(ctx, g, o.controlPlane, "broker", timeout, func(ctx context.Context, conn *grpc.ClientConn) error {
		return call(ctx, client.NewClient(conn))
	})
}

// withPlatform connects to platform service name through the mesh as the
// CLI's admin identity and runs call; timeout 0 means until ctx ends.
func withPlatform(ctx context.Context, g *globalOptions, controlPlane, name string, timeout time.Duration, call func(context.Context, *grpc.ClientConn) error) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	conn, err := dialService(ctx, g, &serviceTarget{namespace: identity.SystemNamespace, controlPlane: controlPlane, explicitNS: true}, name)
	if err != nil {
		return err
	}
	defer conn.Close()
	return call(ctx, conn)
}

func newBrokerCommand(g *globalOptions, s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "broker",
		Short: "Publish and subscribe to ephemeral messages (core NATS)",
	}
	cmd.AddCommand(newBrokerPublishCommand(g, s), newBrokerSubscribeCommand(g, s))
	return cmd
}

func newBrokerPublishCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &brokerOptions{}
	cmd := &cobra.Command{
		Use:     "publish TOPIC MESSAGE",
		Short:   "Publish a message to a topic's current subscribers",
		Args:    cobra.ExactArgs(2),
		Example: "  meshctl broker publish orders.created '{\"id\":42}'",
		RunE: func(cmd *cobra.Command, args []string) error {
			err := withBroker(cmd.Context(), g, o, adminCallTimeout, func(ctx context.Context, c *client.Client) error {
				return c.Publish(ctx, args[0], []byte(args[1]), client.Namespace(o.namespace))
			})
			if err != nil {
				return err
			}
			return render(s.Out, g.output, map[string]string{"published": args[0]}, func() string { return "" })
		},
	}
	o.add(cmd)
	return cmd
}

func newBrokerSubscribeCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &brokerOptions{}
	var queue string
	cmd := &cobra.Command{
		Use:     "subscribe TOPIC",
		Short:   "Print a topic's messages, one per line, until interrupted",
		Args:    cobra.ExactArgs(1),
		Example: "  meshctl broker subscribe orders.created\n  meshctl broker subscribe orders.created --queue billing -o json",
		RunE: func(cmd *cobra.Command, args []string) error {
			err := withBroker(cmd.Context(), g, o, 0, func(ctx context.Context, c *client.Client) error {
				opts := []client.Option{client.Namespace(o.namespace)}
				if queue != "" {
					opts = append(opts, client.Queue(queue))
				}
				sub, err := c.Subscribe(ctx, args[0], opts...)
				if err != nil {
					return err
				}
				fmt.Fprintf(s.Err, "subscribed to %s in namespace %s\n", args[0], o.namespace)
				for {
					msg, err := sub.Next()
					if err != nil {
						return err
					}
					if g.output == outputJSON {
						if err := json.NewEncoder(s.Out).Encode(map[string]any{"topic": msg.Topic, "body": printable(msg.Body),
							"metadata": msg.Metadata, "publisher": msg.Publisher, "time": msg.Time}); err != nil {
							return err
						}
						continue
					}
					if _, err := fmt.Fprintf(s.Out, "%s\n", printable(msg.Body)); err != nil {
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
	cmd.Flags().StringVar(&queue, "queue", "", "join a queue group: each message goes to one member")
	return cmd
}
