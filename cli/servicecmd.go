package cli

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/service/endpoints"
)

// Every running service is a command of meshctl, as in Micro's CLI: its
// endpoints are subcommands and their request's fields flags.
//
//	meshctl helloworld                        # its endpoints, with their flags
//	meshctl helloworld call --name Alice      # Helloworld.Call {"name":"Alice"}
//	meshctl helloworld.prod call '{"name":"Bo"}'
//
// The words naming an endpoint are the API gateway's (endpoints.Set.Match).
// The command exists only for the word it is run with: serviceWord picks
// it out of the arguments and the endpoints come from the running service
// (reflection), so it parses its own arguments.

// serviceWord is the first word of args when it names no command of root
// and could name a service (name or name.namespace); "" otherwise. The
// root's own flags before it are skipped.
func serviceWord(root *cobra.Command, args []string) string {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--home" || a == "-o" || a == "--output" || a == "--env":
			i++ // its value
			continue
		case strings.HasPrefix(a, "-"):
			continue
		}
		if a == "help" || a == "completion" || a == cobra.ShellCompRequestCmd || a == cobra.ShellCompNoDescRequestCmd {
			return ""
		}
		for _, c := range root.Commands() {
			if c.Name() == a || c.HasAlias(a) {
				return ""
			}
		}
		if _, _, err := identity.SplitService(a); err != nil {
			return ""
		}
		return a
	}
	return ""
}

// serviceArgs is what a service command was given.
type serviceArgs struct {
	call   callOptions
	words  []string   // naming the endpoint
	body   string     // a JSON request ("-": standard input)
	fields url.Values // --field value
	help   bool
}

// parseServiceArgs reads a service command's arguments: its own flags
// (meshctl's and call's), the endpoint's words, a JSON request, and any
// other --name value as a field of the request (--flag alone: true).
func parseServiceArgs(g *globalOptions, args []string) (*serviceArgs, error) {
	a := &serviceArgs{fields: url.Values{}}
	a.call.target.namespace = identity.DefaultNamespace
	a.call.timeout = 30 * time.Second
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "-" || strings.HasPrefix(arg, "{") || strings.HasPrefix(arg, "[") {
			if a.body != "" {
				return nil, fmt.Errorf("two requests given: %s and %s", a.body, arg)
			}
			a.body = arg
			continue
		}
		if !strings.HasPrefix(arg, "-") {
			a.words = append(a.words, arg)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		if name == "h" || name == "help" {
			a.help = true
			continue
		}
		// A flag's value: after '=', or the next argument unless it is a
		// flag itself (-3 is a value; --x is not); a field alone is true.
		takeValue := func(field bool) (string, error) {
			if hasValue {
				return value, nil
			}
			if i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") && (field || !strings.HasPrefix(args[i+1], "-")) {
				i++
				return args[i], nil
			}
			if field {
				return "true", nil
			}
			return "", fmt.Errorf("%s needs a value", arg)
		}
		single := !strings.HasPrefix(arg, "--")
		switch {
		case name == "home" && !single, name == "o" && single, name == "output" && !single, name == "env" && !single,
			name == "n" && single, name == "namespace" && !single, name == "as" && !single,
			name == "timeout" && !single, name == "metadata" && !single, name == "controlplane" && !single:
			v, err := takeValue(false)
			if err != nil {
				return nil, err
			}
			switch name {
			case "home":
				g.home = v
			case "env":
				g.env = v
			case "o", "output":
				g.output = v
			case "n", "namespace":
				a.call.target.namespace = v
				a.call.target.explicitNS = true
			case "as":
				a.call.as = v
			case "timeout":
				d, err := time.ParseDuration(v)
				if err != nil {
					return nil, fmt.Errorf("--timeout %q: %w", v, err)
				}
				a.call.timeout = d
			case "metadata":
				a.call.metadata = append(a.call.metadata, v)
			case "controlplane":
				a.call.target.controlPlane = v
			}
		case single:
			return nil, fmt.Errorf("unknown flag %s: a request's fields are --NAME VALUE", arg)
		default:
			v, err := takeValue(true)
			if err != nil {
				return nil, err
			}
			a.fields.Add(name, v)
		}
	}
	return a, g.validate()
}

func newServiceCommand(g *globalOptions, s Streams, word string) *cobra.Command {
	return &cobra.Command{
		Use:                word + " ENDPOINT [--FIELD VALUE ...] [JSON]",
		Short:              "Call service " + word + " (its endpoints are subcommands)",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := parseServiceArgs(g, args)
			if err != nil {
				return err
			}
			name, ns, _ := identity.SplitService(word)
			if ns != "" {
				a.call.target.namespace = ns
				a.call.target.explicitNS = true
			}
			md, err := a.call.validate()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), a.call.timeout)
			defer cancel()
			conn, set, err := describeService(ctx, g, &a.call.target, name)
			if err != nil {
				if near := slices.DeleteFunc(cmd.Root().SuggestionsFor(word), func(c string) bool { return c == word }); len(near) > 0 {
					return fmt.Errorf("unknown command %q (did you mean %s?), and no service of that name: %w", word, strings.Join(near, ", "), err)
				}
				return err
			}
			defer conn.Close()
			if len(a.words) == 0 {
				_, err := fmt.Fprint(s.Out, serviceUsage(word, name, set))
				return err
			}
			found := set.Match(name, a.words)
			if len(found) != 1 {
				var names []string
				for _, ep := range found {
					names = append(names, strings.Join(set.Words(name, ep), " "))
				}
				what := "no endpoint"
				if len(found) > 1 {
					what = "more than one endpoint (" + strings.Join(names, ", ") + ")"
				}
				return fmt.Errorf("%q names %s of %s: meshctl %s lists them", strings.Join(a.words, " "), what, word, word)
			}
			ep := found[0]
			if a.help {
				_, err := fmt.Fprint(s.Out, endpointUsage(word, set.Words(name, ep), ep))
				return err
			}
			arg := a.body
			if len(a.fields) > 0 {
				if arg != "" {
					return fmt.Errorf("give the request as --FIELD flags or as JSON, not both")
				}
				if ep.ClientStreaming {
					return fmt.Errorf("%s takes a stream of requests: give them as a JSON array, or - for one per line of standard input", ep.Name)
				}
				b, err := ep.ValuesJSON(a.fields)
				if err != nil {
					return err
				}
				arg = string(b)
			}
			return a.call.invoke(ctx, g, s, conn, name, ep, arg, md)
		},
	}
}

// serviceUsage lists a service's endpoints as commands.
func serviceUsage(word, name string, set *endpoints.Set) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: meshctl %s ENDPOINT [--FIELD VALUE ...] [JSON]\n\nEndpoints:\n", word)
	var rows [][]string
	for _, ep := range set.Endpoints {
		rows = append(rows, []string{"  " + strings.Join(set.Words(name, ep), " "), ep.Name, flagList(ep)})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i][0] < rows[j][0] })
	b.WriteString(columns(rows))
	fmt.Fprintf(&b, "\nFlags: -n/--namespace NS, --as SERVICE, --timeout 30s, --metadata k=v, --controlplane ADDR, -o json.\n"+
		"A request's fields are flags (--name Alice; a message field's value is JSON); or give the request as JSON.\n"+
		"meshctl %s ENDPOINT --help shows one.\n", word)
	return b.String()
}

// endpointUsage shows one endpoint's flags.
func endpointUsage(word string, words []string, ep *endpoints.Endpoint) string {
	var b strings.Builder
	kind := ""
	switch {
	case ep.ClientStreaming && ep.ServerStreaming:
		kind = " (a bidirectional stream: requests as a JSON array, or - for one per line)"
	case ep.ClientStreaming:
		kind = " (a stream of requests: a JSON array, or - for one per line)"
	case ep.ServerStreaming:
		kind = " (answers a stream: a JSON line per message)"
	}
	fmt.Fprintf(&b, "Usage: meshctl %s %s [--FIELD VALUE ...] [JSON]\n\n%s%s\n\nRequest %s:\n", word, strings.Join(words, " "), ep.Name, kind, ep.Request.Name)
	var rows [][]string
	for _, f := range ep.Request.Fields {
		rows = append(rows, []string{"  --" + f.Name, f.Type})
	}
	if len(rows) == 0 {
		rows = append(rows, []string{"  (no fields)"})
	}
	b.WriteString(columns(rows))
	fmt.Fprintf(&b, "\nResponse %s: %s\n", ep.Response.Name, fieldList(ep.Response.Fields))
	return b.String()
}

// flagList writes an endpoint's request fields as flags (a repeated
// field's flag with "...": it repeats).
func flagList(ep *endpoints.Endpoint) string {
	if ep.ClientStreaming {
		return "[JSON ...]"
	}
	var flags []string
	for _, f := range ep.Request.Fields {
		flag := "--" + f.Name + " " + f.Type
		if t, ok := strings.CutPrefix(f.Type, "repeated "); ok {
			flag = "--" + f.Name + " " + t + "..."
		}
		flags = append(flags, flag)
	}
	return strings.Join(flags, " ")
}

// columns aligns rows in columns, with no header.
func columns(rows [][]string) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
	_ = w.Flush()
	return b.String()
}
