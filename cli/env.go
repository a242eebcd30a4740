package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/clienv"
	"github.com/micromesh/micromesh/platform/remote"
	authv1 "github.com/micromesh/micromesh/proto/auth/v1"
)

// Environments: meshctl talks to the local server (its $MESH_HOME, as the
// server's admin) or to a remote one through that server's remote proxy,
// as the account it logged in with (docs/environments.md).

// remoteAnnotation marks a command that works in a remote environment.
const remoteAnnotation = "micromesh/remote"

// remoteOK marks cmd as working in a remote environment.
func remoteOK(cmd *cobra.Command) *cobra.Command {
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	cmd.Annotations[remoteAnnotation] = "yes"
	return cmd
}

// environment is the environment commands talk to: nil for the local
// server.
func (g *globalOptions) environment() (*clienv.Env, error) {
	c, err := clienv.Load(g.homeDir())
	if err != nil {
		return nil, err
	}
	return c.Resolve(g.env)
}

// checkRemote refuses, in a remote environment, a command that needs the
// server's machine.
func (g *globalOptions) checkRemote(cmd *cobra.Command) error {
	for c := cmd; c != nil; c = c.Parent() {
		if c.Annotations[remoteAnnotation] != "" || c.Parent() != nil && c.Parent().Parent() == nil && (c.Name() == "help" || c.Name() == "completion") {
			return nil
		}
	}
	env, err := g.environment()
	if err != nil || env == nil {
		return err
	}
	return fmt.Errorf("meshctl %s acts as the server's admin, on the server's machine; the environment is %s, remote, where call, describe, services, SERVICE commands, store, config, broker, events, login and logout work, and for accounts with the scope admin auth, policy, split, registry, proxy-status, proxy-config, run (from git), status, logs, update and kill (--env local, or meshctl env use local, for this machine's server)",
		strings.TrimPrefix(cmd.CommandPath(), "meshctl "), env.Name)
}

// namespaceOr is ns, or when it is "" the namespace platform commands act
// in by default: in a remote environment the logged-in account's (read
// from its token's subject), else default.
func (g *globalOptions) namespaceOr(ns string) string {
	if ns != "" {
		return ns
	}
	env, err := g.environment()
	if err != nil || env == nil {
		return identity.DefaultNamespace
	}
	tok, err := clienv.LoadToken(g.homeDir(), env.Name)
	if err != nil || tok == nil {
		return identity.DefaultNamespace // the call says to log in
	}
	id, err := identity.ParseID(tok.Subject)
	if err != nil {
		return identity.DefaultNamespace
	}
	return id.Namespace
}

// dialRemote connects to env's remote proxy for calls to the service at
// authority; withToken, as the account the CLI logged in with (its access
// token refreshed first when it has less than a minute left).
func dialRemote(ctx context.Context, g *globalOptions, env *clienv.Env, authority string, withToken bool) (*grpc.ClientConn, error) {
	opts := []grpc.DialOption{grpc.WithAuthority(authority)}
	if withToken {
		tok, err := accessToken(ctx, g, env)
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken(tok)))
	}
	return dialProxy(env, opts...)
}

// dialProxy connects to env's remote proxy, its certificate checked
// against the environment's root and the proxy's SPIFFE ID.
func dialProxy(env *clienv.Env, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	bundle, err := env.Bundle()
	if err != nil {
		return nil, err
	}
	proxyID := identity.ID{TrustDomain: env.TrustDomain, Namespace: identity.SystemNamespace, Kind: identity.KindService, Name: remote.Service}
	cfg := identity.ClientTLSConfig(func() *identity.Bundle { return bundle }, nil, identity.AuthorizeID(proxyID))
	return grpc.NewClient(env.Proxy, append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))...)
}

// accessToken is the access token of env's login, refreshed through its
// session when it is about to expire.
func accessToken(ctx context.Context, g *globalOptions, env *clienv.Env) (string, error) {
	access, _, err := loginAccess(ctx, g, env)
	return access, err
}

// loginAccess is accessToken with the time it stops being usable (a
// minute before it expires).
func loginAccess(ctx context.Context, g *globalOptions, env *clienv.Env) (string, time.Time, error) {
	h := g.homeDir()
	var access string
	var until time.Time
	err := clienv.Locked(h, env.Name, func() error {
		tok, err := clienv.LoadToken(h, env.Name)
		if err != nil {
			return err
		}
		if tok == nil {
			return fmt.Errorf("not logged in to environment %s: meshctl login ACCOUNT [-n NAMESPACE]", env.Name)
		}
		now := time.Now()
		if tok.Usable(now) {
			access, until = tok.AccessToken, tok.Expires.Add(-time.Minute)
			return nil
		}
		if !tok.Refreshable(now) {
			return fmt.Errorf("the login to environment %s (%s) expired at %s: meshctl login again", env.Name, tok.Subject, tok.Until().Local().Format(time.DateTime))
		}
		conn, err := dialProxy(env, grpc.WithAuthority(remote.LoginAuthority))
		if err != nil {
			return err
		}
		defer conn.Close()
		req := &authv1.RefreshRequest{RefreshToken: tok.RefreshToken}
		if tok.TTL > 0 {
			req.Ttl = durationpb.New(tok.TTL)
		}
		resp, err := authv1.NewAuthServiceClient(conn).Refresh(ctx, req)
		if status.Code(err) == codes.Unauthenticated {
			return fmt.Errorf("the session of environment %s (%s) ended: %s", env.Name, tok.Subject, status.Convert(err).Message())
		}
		if err != nil {
			return fmt.Errorf("renewing the access token of environment %s: %w", env.Name, err)
		}
		tok.AccessToken, tok.Expires = resp.GetAccessToken(), resp.GetExpires().AsTime()
		tok.RefreshToken, tok.RefreshExpires = resp.GetRefreshToken(), resp.GetRefreshExpires().AsTime()
		if err := clienv.SaveToken(h, env.Name, *tok); err != nil {
			return err
		}
		access, until = tok.AccessToken, tok.Expires.Add(-time.Minute)
		return nil
	})
	return access, until, err
}

// bearerToken sends an access token with each call (over TLS only).
type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

func (bearerToken) RequireTransportSecurity() bool { return true }

func newEnvCommand(g *globalOptions, s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "env",
		Short: "List, add and switch environments: the local server, or remote ones through their remote proxy",
		Long: `An environment is a Micromesh server meshctl talks to. "local" is the
server of $MESH_HOME, where meshctl acts as its admin. A remote one (staging,
prod) is reached through its remote proxy (meshctl server --proxy-addr) as
the account you log in with (meshctl login); there meshctl call, describe and
the services' own commands work, kept to your account's namespace.

--env NAME (or $MESH_ENV) picks one for a single command.`,
		Example: `  meshctl cert bundle > root.pem                  # on the server
  meshctl env add staging --proxy staging.example.com:8081 --bundle root.pem
  meshctl env use staging
  echo "$SECRET" | meshctl login alice -n shop
  meshctl call orders Orders.List '{}'
  meshctl env use local`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return listEnvs(g, s) },
	}
	add := &cobra.Command{
		Use:     "add NAME --proxy HOST:PORT --bundle ROOT.pem",
		Short:   "Add a remote environment (its remote proxy, and the mesh's root to check it by)",
		Example: "  meshctl env add staging --proxy staging.example.com:8081 --bundle root.pem",
		Args:    cobra.ExactArgs(1),
	}
	var bundle string
	e := clienv.Env{}
	add.Flags().StringVar(&e.Proxy, "proxy", "", "the remote proxy's address (HOST:PORT; the server's --proxy-addr)")
	add.Flags().StringVar(&bundle, "bundle", "", "the mesh's root certificate, PEM (meshctl cert bundle on the server)")
	add.Flags().StringVar(&e.TrustDomain, "trust-domain", identity.DefaultTrustDomain, "the mesh's trust domain")
	add.RunE = func(cmd *cobra.Command, args []string) error {
		e.Name = args[0]
		if bundle == "" {
			return errors.New("--bundle: give the mesh's root certificate (meshctl cert bundle > root.pem on the server): the remote proxy's certificate is checked against it")
		}
		roots, err := os.ReadFile(bundle)
		if err != nil {
			return fmt.Errorf("--bundle: %w", err)
		}
		e.Roots = string(roots)
		if err := e.Validate(); err != nil {
			return err
		}
		c, err := clienv.Load(g.homeDir())
		if err != nil {
			return err
		}
		if _, ok := c.Envs[e.Name]; ok {
			return fmt.Errorf("environment %s exists (meshctl env remove %s first)", e.Name, e.Name)
		}
		c.Envs[e.Name] = e
		if err := c.Save(g.homeDir()); err != nil {
			return err
		}
		return render(s.Out, g.output, map[string]string{"added": e.Name, "proxy": e.Proxy}, func() string {
			return fmt.Sprintf("environment %s added (remote proxy %s): meshctl env use %s, then meshctl login\n", e.Name, e.Proxy, e.Name)
		})
	}
	use := &cobra.Command{
		Use:     "use NAME",
		Short:   "Make an environment the current one",
		Example: "  meshctl env use staging\n  meshctl env use local",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := clienv.Load(g.homeDir())
			if err != nil {
				return err
			}
			if _, err := c.Resolve(args[0]); err != nil {
				return err
			}
			c.Current = args[0]
			if args[0] == clienv.Local {
				c.Current = ""
			}
			if err := c.Save(g.homeDir()); err != nil {
				return err
			}
			return render(s.Out, g.output, map[string]string{"current": args[0]}, func() string {
				return "now talking to environment " + args[0] + "\n"
			})
		},
	}
	rm := &cobra.Command{
		Use:     "remove NAME",
		Aliases: []string{"rm"},
		Short:   "Remove a remote environment and the token logged in to it",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := clienv.Load(g.homeDir())
			if err != nil {
				return err
			}
			if args[0] == clienv.Local {
				return fmt.Errorf("environment %s is the local server's: it cannot be removed", clienv.Local)
			}
			if _, err := c.Resolve(args[0]); err != nil {
				return err
			}
			delete(c.Envs, args[0])
			if c.Current == args[0] {
				c.Current = ""
			}
			if _, err := clienv.RemoveToken(g.homeDir(), args[0]); err != nil {
				return err
			}
			if err := c.Save(g.homeDir()); err != nil {
				return err
			}
			return render(s.Out, g.output, map[string]string{"removed": args[0]}, func() string {
				return "environment " + args[0] + " removed\n"
			})
		},
	}
	list := &cobra.Command{Use: "list", Aliases: []string{"ls"}, Short: "List the environments (the default)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return listEnvs(g, s) }}
	cmd.AddCommand(add, use, rm, list)
	return remoteOK(cmd)
}

type envJSON struct {
	Name     string    `json:"name"`
	Current  bool      `json:"current"`
	Proxy    string    `json:"proxy,omitempty"`
	Subject  string    `json:"subject,omitempty"`
	Expires  time.Time `json:"expires,omitzero"`
	Problems string    `json:"problem,omitempty"`
}

func listEnvs(g *globalOptions, s Streams) error {
	c, err := clienv.Load(g.homeDir())
	if err != nil {
		return err
	}
	current := g.env
	if current == "" {
		current = c.Current
	}
	if current == "" {
		current = clienv.Local
	}
	var out []envJSON
	for _, name := range c.Names() {
		e := envJSON{Name: name, Current: name == current}
		if name != clienv.Local {
			e.Proxy = c.Envs[name].Proxy
			tok, err := clienv.LoadToken(g.homeDir(), name)
			if err != nil {
				e.Problems = err.Error()
			} else if tok != nil {
				e.Subject, e.Expires = tok.Subject, tok.Until()
			}
		}
		out = append(out, e)
	}
	return render(s.Out, g.output, out, func() string {
		rows := [][]string{}
		for _, e := range out {
			mark, proxy, as := "", e.Proxy, "-"
			if e.Current {
				mark = "*"
			}
			switch {
			case e.Name == clienv.Local:
				proxy, as = "(this machine's server, $MESH_HOME)", "admin"
			case e.Problems != "":
				as = e.Problems
			case e.Subject != "" && time.Now().Before(e.Expires):
				as = e.Subject + " until " + e.Expires.Local().Format(time.DateTime)
			case e.Subject != "":
				as = "expired: meshctl login"
			default:
				as = "not logged in: meshctl login"
			}
			rows = append(rows, []string{mark, e.Name, proxy, as})
		}
		return table([]string{"", "ENV", "PROXY", "AS"}, rows)
	})
}

func newLoginCommand(g *globalOptions, s Streams) *cobra.Command {
	var (
		ns  string
		ttl time.Duration
	)
	cmd := &cobra.Command{
		Use:   "login ACCOUNT",
		Short: "Log in to the current remote environment with an account's secret (standard input)",
		Long: `Trade an account's secret for an access token and a session through the
environment's remote proxy, and keep them (under $MESH_HOME/cli/tokens, 0600)
for the commands that follow. The secret is read from standard input, or
asked for without echo at a terminal. Access tokens last --ttl and are
renewed through the session as they run out; the session lasts 30 days
from its last use, until meshctl logout ends it, or the account is deleted.`,
		Example: `  echo "$SECRET" | meshctl login alice -n shop
  meshctl login alice --env staging --ttl 8h`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl < time.Minute || ttl > 24*time.Hour {
				return fmt.Errorf("--ttl %v: must be 1m to 24h", ttl)
			}
			env, err := g.environment()
			if err != nil {
				return err
			}
			if env == nil {
				return errors.New("the local environment needs no login: meshctl acts there as the server's admin (meshctl auth token ACCOUNT gives an account's token for the API gateway)")
			}
			secret, err := promptSecret(s, args[0])
			if err != nil {
				return err
			}
			conn, err := dialRemote(cmd.Context(), g, env, remote.LoginAuthority, false)
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), adminCallTimeout)
			defer cancel()
			resp, err := authv1.NewAuthServiceClient(conn).Token(ctx, &authv1.TokenRequest{Name: args[0], Namespace: ns, Secret: secret, Ttl: durationpb.New(ttl), Refreshable: true})
			if err != nil {
				return fmt.Errorf("environment %s (%s): %w", env.Name, env.Proxy, err)
			}
			tok := clienv.Token{AccessToken: resp.GetAccessToken(), Subject: resp.GetSubject(), Expires: resp.GetExpires().AsTime(), TTL: ttl,
				RefreshToken: resp.GetRefreshToken(), RefreshExpires: resp.GetRefreshExpires().AsTime()}
			err = clienv.Locked(g.homeDir(), env.Name, func() error { return clienv.SaveToken(g.homeDir(), env.Name, tok) })
			if err != nil {
				return err
			}
			return render(s.Out, g.output, map[string]any{"env": env.Name, "subject": tok.Subject, "expires": tok.Until()}, func() string {
				return fmt.Sprintf("logged in to %s as %s until %s (access tokens of %v, renewed as they run out)\n", env.Name, tok.Subject, tok.Until().Local().Format(time.DateTime), ttl)
			})
		},
	}
	cmd.Flags().StringVarP(&ns, "namespace", "n", identity.DefaultNamespace, "the account's namespace")
	cmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long each access token lasts (1m to 24h)")
	return remoteOK(cmd)
}

func newLogoutCommand(g *globalOptions, s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "logout",
		Short: "End the session of the current remote environment and forget its tokens",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := g.environment()
			if err != nil {
				return err
			}
			if env == nil {
				return errors.New("the local environment has no login")
			}
			h := g.homeDir()
			var ended error // why the session could not be ended on the server
			err = clienv.Locked(h, env.Name, func() error {
				tok, err := clienv.LoadToken(h, env.Name)
				if err != nil || tok == nil || tok.RefreshToken == "" {
					return err
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
				defer cancel()
				conn, err := dialProxy(env, grpc.WithAuthority(remote.LoginAuthority))
				if err != nil {
					ended = err
					return nil
				}
				defer conn.Close()
				_, ended = authv1.NewAuthServiceClient(conn).Revoke(ctx, &authv1.RevokeRequest{RefreshToken: tok.RefreshToken})
				return nil
			})
			if err != nil {
				return err
			}
			had, err := clienv.RemoveToken(h, env.Name)
			if err != nil {
				return err
			}
			return render(s.Out, g.output, map[string]any{"env": env.Name, "logged_out": had, "session_ended": had && ended == nil}, func() string {
				switch {
				case !had:
					return "not logged in to " + env.Name + "\n"
				case ended != nil:
					return fmt.Sprintf("logged out of %s here; the session could not be ended on the server (%v): it lapses 30 days after its last use\n", env.Name, ended)
				}
				return "logged out of " + env.Name + " (session ended; an access token already issued lasts until it expires)\n"
			})
		},
	}
	return remoteOK(cmd)
}

// promptSecret reads an account's secret: asked for without echo at a
// terminal, else the first line of standard input.
func promptSecret(s Streams, account string) (string, error) {
	if f, ok := s.In.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(s.Err, "secret for %s: ", account)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(s.Err)
		if err != nil {
			return "", fmt.Errorf("reading the secret: %w", err)
		}
		if len(b) == 0 {
			return "", errors.New("no secret given")
		}
		return string(b), nil
	}
	return readSecret(s.In)
}
