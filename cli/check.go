package cli

import (
	"context"
	"crypto/x509"

	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/micromesh/micromesh/internal/version"
	adminv1 "github.com/micromesh/micromesh/proto/admin/v1"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
	statsv1 "github.com/micromesh/micromesh/proto/stats/v1"
)

// Check outcomes.
const (
	checkOK   = "ok"
	checkWarn = "warn"
	checkFail = "fail"
)

// checkJSON is one check of meshctl check.
type checkJSON struct {
	Section string `json:"section"`
	Check   string `json:"check"`
	Status  string `json:"status"` // ok, warn, fail
	Detail  string `json:"detail,omitempty"`
}

// Thresholds of meshctl check: a certificate warns within 30 days of its
// end, or a quarter of its life for shorter ones (workload certificates
// renew at half of theirs).
const (
	certWarnWithin  = 30 * 24 * time.Hour
	successWarnRate = 0.95
	successMinCalls = 20
	staleRecheck    = 2 * time.Second
)

type checker struct {
	out []checkJSON
	now time.Time
}

func (c *checker) add(section, check, status, detail string) {
	c.out = append(c.out, checkJSON{Section: section, Check: check, Status: status, Detail: detail})
}

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
			c := &checker{now: time.Now()}
			err := withAdmin(cmd.Context(), g, addr, func(ctx context.Context, conn *grpc.ClientConn) error {
				status := c.controlPlane(ctx, conn)
				if status == nil {
					return nil
				}
				c.proxies(ctx, conn, status)
				c.services(ctx, conn)
				c.traffic(ctx, conn)
				return nil
			})
			if err != nil {
				c.add("control plane", "reachable", checkFail, describe(err)+" (meshctl server starts the local one; --env names another)")
			}
			if rerr := render(s.Out, g.output, c.out, func() string { return renderChecks(c.out) }); rerr != nil {
				return rerr
			}
			failed := 0
			for _, r := range c.out {
				if r.Status == checkFail {
					failed++
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d check(s) failed", failed)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "controlplane", "", "control plane address (default: the local server)")
	return cmd
}

// controlPlane checks that the control plane answers (its admin API: the
// remote proxy relays it too) and that the chain it serves with — or, in
// a remote environment, the remote proxy's — is not about to expire. It
// returns the proxies' status, nil if the control plane is out of reach.
func (c *checker) controlPlane(ctx context.Context, conn *grpc.ClientConn) *adminv1.ProxyStatusResponse {
	var p peer.Peer
	resp, err := adminv1.NewAdminServiceClient(conn).ProxyStatus(ctx, &adminv1.ProxyStatusRequest{}, grpc.Peer(&p))
	if err != nil {
		c.add("control plane", "reachable", checkFail, describe(err)+" (meshctl server starts the local one; --env names another)")
		return nil
	}
	c.add("control plane", "reachable", checkOK, "at "+conn.Target())
	c.status(ctx, conn)
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		c.add("control plane", "certificates", checkWarn, "no certificate chain seen on the connection")
		return resp
	}
	chain := info.State.PeerCertificates
	c.cert("its certificate", chain[0], "renewed at half its life: a certificate this close to its end means renewals fail (the server's log says why)")
	if len(chain) > 1 {
		c.cert("the CA's intermediate", chain[1], "the server replaces it at start once a third of its life is left: restart the server")
	}
	return resp
}

// status checks the server's version against meshctl's and whether its
// registry answers.
func (c *checker) status(ctx context.Context, conn *grpc.ClientConn) {
	st, err := adminv1.NewAdminServiceClient(conn).Status(ctx, &adminv1.StatusRequest{})
	if err != nil {
		c.add("control plane", "status", checkWarn, describe(err)+" (a server older than this meshctl?)")
		return
	}
	if st.Version != version.Version {
		c.add("control plane", "version", checkWarn, fmt.Sprintf("the server is %s, this meshctl %s: commands may not match its API (use the server's build)", st.Version, version.Version))
	} else {
		c.add("control plane", "version", checkOK, fmt.Sprintf("%s, up %s", st.Version, days(c.now.Sub(st.Started.AsTime()))))
	}
	r := st.Registry
	where := r.Backend
	if r.Address != "" {
		where += " at " + r.Address
	}
	if r.Unreachable {
		c.add("control plane", "registry", checkFail, fmt.Sprintf("%s unreachable for %s (%s): proxies keep their last configuration, but nothing can register or deregister until it answers",
			where, days(c.now.Sub(r.Since.AsTime())), r.Error))
		return
	}
	c.add("control plane", "registry", checkOK, where)
}

func (c *checker) cert(what string, cert *x509.Certificate, fix string) {
	left := cert.NotAfter.Sub(c.now)
	switch {
	case left <= 0:
		c.add("control plane", what, checkFail, fmt.Sprintf("expired %s ago (%s); %s", short(-left), cert.NotAfter.UTC().Format(time.RFC3339), fix))
	case left < min(certWarnWithin, cert.NotAfter.Sub(cert.NotBefore)/4):
		c.add("control plane", what, checkWarn, fmt.Sprintf("expires in %s (%s); %s", days(left), cert.NotAfter.UTC().Format(time.RFC3339), fix))
	default:
		c.add("control plane", what, checkOK, fmt.Sprintf("valid for %s", days(left)))
	}
}

// days is a long duration for people.
func days(d time.Duration) string {
	if d < time.Hour {
		return d.Round(time.Second).String()
	}
	if d < 48*time.Hour {
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%d days", int(d.Hours()/24))
}

// proxies checks that every connected proxy runs what it is served: a
// NACK fails; a lag that lasts past a second look warns.
func (c *checker) proxies(ctx context.Context, conn *grpc.ClientConn, resp *adminv1.ProxyStatusResponse) {
	client := adminv1.NewAdminServiceClient(conn)
	look := func() (*adminv1.ProxyStatusResponse, error) {
		return client.ProxyStatus(ctx, &adminv1.ProxyStatusRequest{})
	}
	stale := func(r *adminv1.ProxyStatusResponse) bool {
		for _, p := range r.Proxies {
			for _, t := range p.Types {
				if typeState(t) == "STALE" {
					return true
				}
			}
		}
		return false
	}
	if stale(resp) { // a push in flight: look again
		select {
		case <-time.After(staleRecheck):
		case <-ctx.Done():
		}
		if again, err := look(); err == nil {
			resp = again
		}
	}
	bad := 0
	for _, p := range resp.Proxies {
		for _, t := range p.Types {
			switch typeState(t) {
			case "NACKED":
				bad++
				c.add("proxies", p.NodeId, checkFail, fmt.Sprintf("rejected its %s (version %s): %s — meshctl proxy-config %s shows what it was served", t.Type, t.NackedVersion, t.NackError, p.NodeId))
			case "STALE":
				bad++
				c.add("proxies", p.NodeId, checkWarn, fmt.Sprintf("has not acknowledged its %s (served %s, running %s): it may be overloaded or cut off", t.Type, t.ServedVersion, orNone(t.AckedVersion)))
			}
		}
	}
	if bad == 0 {
		c.add("proxies", "in sync", checkOK, fmt.Sprintf("%d connected, each running what it is served", len(resp.Proxies)))
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// services checks that every service has a passing instance, and warns of
// critical ones.
func (c *checker) services(ctx context.Context, conn *grpc.ClientConn) {
	resp, err := registryv1.NewRegistryServiceClient(conn).ListServices(ctx, &registryv1.ListServicesRequest{})
	if err != nil {
		c.add("services", "registry", checkFail, describe(err))
		return
	}
	bad := 0
	for _, s := range resp.Services {
		name := s.Name + "." + s.Namespace
		passing, critical := 0, []string{}
		for _, in := range s.Instances {
			switch in.Health {
			case "passing":
				passing++
			case "critical":
				critical = append(critical, in.Id)
			}
		}
		switch {
		case len(s.Instances) > 0 && passing == 0:
			bad++
			c.add("services", name, checkFail, fmt.Sprintf("no instance passing (%d registered): calls to it fail — meshctl logs %s", len(s.Instances), s.Name))
		case len(critical) > 0:
			bad++
			c.add("services", name, checkWarn, fmt.Sprintf("%d of %d instances critical (%s): callers skip them — meshctl logs %s", len(critical), len(s.Instances), strings.Join(critical, ", "), s.Name))
		}
	}
	if bad == 0 {
		c.add("services", "healthy", checkOK, fmt.Sprintf("%d services, each with its instances passing", len(resp.Services)))
	}
}

// traffic warns of services that failed more than 5 % of the last
// minute's requests.
func (c *checker) traffic(ctx context.Context, conn *grpc.ClientConn) {
	resp, err := statsv1.NewStatsServiceClient(conn).GetStats(ctx, &statsv1.GetStatsRequest{})
	if err != nil {
		c.add("traffic", "stats", checkWarn, describe(err))
		return
	}
	bad, busy := 0, 0
	for _, s := range resp.Services {
		t := s.Traffic
		if t.GetRequests() == 0 {
			continue
		}
		busy++
		if t.GetRequests() >= successMinCalls && t.GetSuccessRate() < successWarnRate {
			bad++
			c.add("traffic", s.Service, checkWarn, fmt.Sprintf("answered %.1f%% of %d requests in the last minute: meshctl stat %s; meshctl traces --errors --service %s",
				100*t.GetSuccessRate(), t.GetRequests(), s.Service, s.Service))
		}
	}
	if bad == 0 {
		c.add("traffic", "success", checkOK, fmt.Sprintf("%d services with requests in the last minute, none failing more than %d %%", busy, 100-int(100*successWarnRate)))
	}
}

func renderChecks(rs []checkJSON) string {
	var b strings.Builder
	section := ""
	marks := map[string]string{checkOK: "√", checkWarn: "‼", checkFail: "×"}
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
		case checkWarn:
			warn++
		case checkFail:
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
