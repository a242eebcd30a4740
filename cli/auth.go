package cli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/micromesh/micromesh/identity"
	authv1 "github.com/micromesh/micromesh/proto/auth/v1"
)

type authOptions struct {
	namespace    string
	controlPlane string
}

func (o *authOptions) add(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&o.namespace, "namespace", "n", identity.DefaultNamespace, "the account's namespace")
	cmd.Flags().StringVar(&o.controlPlane, "controlplane", "", "control plane address (default: the local server)")
}

// withAuth calls the auth service through the mesh as the CLI's admin
// identity.
func withAuth(ctx context.Context, g *globalOptions, o *authOptions, call func(context.Context, authv1.AuthServiceClient) error) error {
	return withPlatform(ctx, g, o.controlPlane, "auth", adminCallTimeout, func(ctx context.Context, conn *grpc.ClientConn) error {
		return call(ctx, authv1.NewAuthServiceClient(conn))
	})
}

func newAuthCommand(g *globalOptions, s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "auth",
		Short: "User accounts and their access tokens (the API gateway checks them)",
		Long: `Manage user accounts and get access tokens. An account is a name and a secret
in a namespace; its access token (a JWT, 1 hour by default) names it as
spiffe://<td>/ns/<namespace>/user/<name>. The API gateway verifies the
token a request carries (Authorization: Bearer ...) and, with
--gateway-auth required, refuses requests without one.`,
	}
	cmd.AddCommand(newAuthCreateCommand(g, s), newAuthDeleteCommand(g, s), newAuthListCommand(g, s), newAuthTokenCommand(g, s))
	return cmd
}

func newAuthCreateCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &authOptions{}
	var scopes []string
	var secretStdin bool
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an account; prints the secret made for it (once) unless --secret-stdin gives one",
		Example: `  meshctl auth create alice
  meshctl auth create ops -n shop --scope admin
  echo 'a long enough secret' | meshctl auth create bob --secret-stdin`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			secret := ""
			if secretStdin {
				var err error
				if secret, err = readSecret(s.In); err != nil {
					return err
				}
			}
			return withAuth(cmd.Context(), g, o, func(ctx context.Context, c authv1.AuthServiceClient) error {
				resp, err := c.CreateAccount(ctx, &authv1.CreateAccountRequest{
					Account: &authv1.Account{Name: args[0], Namespace: o.namespace, Scopes: scopes}, Secret: secret})
				if err != nil {
					return err
				}
				type created struct {
					Name      string   `json:"name"`
					Namespace string   `json:"namespace"`
					Scopes    []string `json:"scopes,omitempty"`
					Secret    string   `json:"secret,omitempty"`
				}
				a := resp.GetAccount()
				return render(s.Out, g.output, created{a.GetName(), a.GetNamespace(), a.GetScopes(), resp.GetSecret()}, func() string {
					if resp.GetSecret() == "" {
						return fmt.Sprintf("account %s created in namespace %s\n", a.GetName(), a.GetNamespace())
					}
					return fmt.Sprintf("account %s created in namespace %s; its secret (shown once): %s\n", a.GetName(), a.GetNamespace(), resp.GetSecret())
				})
			})
		},
	}
	o.add(cmd)
	cmd.Flags().StringArrayVar(&scopes, "scope", nil, "a scope its tokens carry (repeatable)")
	cmd.Flags().BoolVar(&secretStdin, "secret-stdin", false, "read the secret (12–256 characters) from the first line of standard input")
	return cmd
}

func newAuthDeleteCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &authOptions{}
	cmd := &cobra.Command{
		Use:     "delete NAME",
		Short:   "Delete an account (its tokens stop working when they expire)",
		Example: "  meshctl auth delete alice",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAuth(cmd.Context(), g, o, func(ctx context.Context, c authv1.AuthServiceClient) error {
				if _, err := c.DeleteAccount(ctx, &authv1.DeleteAccountRequest{Name: args[0], Namespace: o.namespace}); err != nil {
					return err
				}
				_, err := fmt.Fprintf(s.Out, "account %s of namespace %s deleted\n", args[0], o.namespace)
				return err
			})
		},
	}
	o.add(cmd)
	return cmd
}

func newAuthListCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &authOptions{}
	var all bool
	cmd := &cobra.Command{
		Use:     "accounts",
		Short:   "List a namespace's accounts (-A: every namespace's)",
		Example: "  meshctl auth accounts\n  meshctl auth accounts -A -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ns := o.namespace
			if all {
				ns = ""
			}
			return withAuth(cmd.Context(), g, o, func(ctx context.Context, c authv1.AuthServiceClient) error {
				resp, err := c.ListAccounts(ctx, &authv1.ListAccountsRequest{Namespace: ns})
				if err != nil {
					return err
				}
				type account struct {
					Name      string    `json:"name"`
					Namespace string    `json:"namespace"`
					Scopes    []string  `json:"scopes,omitempty"`
					Created   time.Time `json:"created"`
				}
				list := []account{}
				var rows [][]string
				for _, a := range resp.GetAccounts() {
					list = append(list, account{a.GetName(), a.GetNamespace(), a.GetScopes(), a.GetCreated().AsTime()})
					rows = append(rows, []string{a.GetName(), a.GetNamespace(), strings.Join(a.GetScopes(), ","), a.GetCreated().AsTime().Format(time.RFC3339)})
				}
				return render(s.Out, g.output, list, func() string {
					if len(rows) == 0 {
						return "no accounts (meshctl auth create NAME makes one)\n"
					}
					return table([]string{"NAME", "NAMESPACE", "SCOPES", "CREATED"}, rows)
				})
			})
		},
	}
	o.add(cmd)
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "every namespace's accounts")
	return cmd
}

func newAuthTokenCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &authOptions{}
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "token NAME",
		Short: "Trade an account's secret (first line of standard input) for an access token",
		Example: `  echo "$SECRET" | meshctl auth token alice
  TOKEN=$(echo "$SECRET" | meshctl auth token alice --ttl 10m)
  curl -H "Authorization: Bearer $TOKEN" -d '{"name":"Alice"}' localhost:8080/helloworld/call`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			secret, err := readSecret(s.In)
			if err != nil {
				return err
			}
			return withAuth(cmd.Context(), g, o, func(ctx context.Context, c authv1.AuthServiceClient) error {
				resp, err := c.Token(ctx, &authv1.TokenRequest{Name: args[0], Namespace: o.namespace, Secret: secret, Ttl: durationpb.New(ttl)})
				if err != nil {
					return err
				}
				type token struct {
					AccessToken string    `json:"access_token"`
					Expires     time.Time `json:"expires"`
					Subject     string    `json:"subject"`
				}
				return render(s.Out, g.output, token{resp.GetAccessToken(), resp.GetExpires().AsTime(), resp.GetSubject()}, func() string {
					return resp.GetAccessToken() + "\n"
				})
			})
		},
	}
	o.add(cmd)
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token lasts (1m to 24h)")
	return cmd
}

// readSecret reads a secret from the first line of in.
func readSecret(in io.Reader) (string, error) {
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("reading the secret from standard input: %w", err)
	}
	secret := strings.TrimRight(line, "\r\n")
	if secret == "" {
		return "", fmt.Errorf("no secret on standard input: echo it in (echo \"$SECRET\" | meshctl auth ...)")
	}
	return secret, nil
}
