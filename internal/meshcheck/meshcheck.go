// Package meshcheck checks that a mesh is healthy, as an operator would
// before trusting it — the control plane, its registry and certificates,
// the proxies, the services, their traffic — and says what to do about
// each problem: `meshctl check` and the dashboard's health view.
package meshcheck

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/identity"
	adminv1 "github.com/micromesh/micromesh/proto/admin/v1"
	identityv1 "github.com/micromesh/micromesh/proto/identity/v1"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
	statsv1 "github.com/micromesh/micromesh/proto/stats/v1"
)

// Check outcomes.
const (
	OK   = "ok"
	Warn = "warn"
	Fail = "fail"
)

// Result is one check.
type Result struct {
	Section string `json:"section"`
	Check   string `json:"check"`
	Status  string `json:"status"` // ok, warn, fail
	Detail  string `json:"detail,omitempty"`
}

// Thresholds: a certificate warns within 30 days of its
// end, or a quarter of its life for shorter ones (workload certificates
// renew at half of theirs).
const (
	certWarnWithin  = 30 * 24 * time.Hour
	successWarnRate = 0.95
	successMinCalls = 20
	staleRecheck    = 2 * time.Second
)

type checker struct {
	out     []Result
	now     time.Time
	target  string // the control plane's address, as the caller reached it
	version string // the caller's
}

func (c *checker) add(section, check, status, detail string) {
	c.out = append(c.out, Result{Section: section, Check: check, Status: status, Detail: detail})
}

// describe is an error for a check's detail: a gRPC status as its code and
// message.
func describe(err error) string {
	if st, ok := status.FromError(err); ok {
		return st.Code().String() + ": " + st.Message()
	}
	return err.Error()
}

// TypeState summarizes one resource type of a proxy: SYNCED when it ACKed
// what is served, NACKED when it rejected the served version, STALE while
// an ACK is awaited, "-" when nothing is served.
func TypeState(t *adminv1.TypeStatus) string {
	switch {
	case t.GetServedVersion() == "" || t.GetServedVersion() == "empty" && t.GetAckedVersion() == "":
		return "-"
	case t.GetAckedVersion() == t.GetServedVersion():
		return "SYNCED"
	case t.GetNackedVersion() == t.GetServedVersion():
		return "NACKED"
	default:
		return "STALE"
	}
}

// Run checks the mesh whose control plane conn reaches (at target, for
// the message), as a client of version; the results in order, by
// section. A control plane out of reach is one failed check.
func Run(ctx context.Context, conn *grpc.ClientConn, target, version string) []Result {
	c := &checker{now: time.Now(), target: target, version: version}
	status := c.controlPlane(ctx, conn)
	if status == nil {
		return c.out
	}
	c.proxies(ctx, conn, status)
	c.services(ctx, conn)
	c.traffic(ctx, conn)
	return c.out
}

// Failed counts the failed checks.
func Failed(rs []Result) int {
	n := 0
	for _, r := range rs {
		if r.Status == Fail {
			n++
		}
	}
	return n
}

// controlPlane checks that the control plane answers (its admin API: the
// remote proxy relays it too) and that the chain it serves with — or, in
// a remote environment, the remote proxy's — is not about to expire. It
// returns the proxies' status, nil if the control plane is out of reach.
func (c *checker) controlPlane(ctx context.Context, conn *grpc.ClientConn) *adminv1.ProxyStatusResponse {
	var p peer.Peer
	resp, err := adminv1.NewAdminServiceClient(conn).ProxyStatus(ctx, &adminv1.ProxyStatusRequest{}, grpc.Peer(&p))
	if err != nil {
		c.add("control plane", "reachable", Fail, describe(err)+" (meshctl server starts the local one; meshctl --env names another)")
		return nil
	}
	c.add("control plane", "reachable", OK, "at "+c.target)
	c.status(ctx, conn)
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		c.add("control plane", "certificates", Warn, "no certificate chain seen on the connection")
		return resp
	}
	chain := info.State.PeerCertificates
	c.cert("its certificate", chain[0], "renewed at half its life: a certificate this close to its end means renewals fail (the server's log says why)")
	if len(chain) > 1 {
		c.cert("the CA's intermediate", chain[1], "the server replaces it at start once a third of its life is left: restart the server")
	}
	c.revocations(ctx, conn)
	return resp
}

// revocations reports what is revoked, and fails a revocation list past
// its next update: Envoy refuses every peer once the list it holds is
// stale (the server reissues it half-way through its life).
func (c *checker) revocations(ctx context.Context, conn *grpc.ClientConn) {
	resp, err := identityv1.NewIdentityServiceClient(conn).ListRevoked(ctx, &identityv1.ListRevokedRequest{})
	if err != nil {
		c.add("control plane", "revocations", Warn, describe(err)+" (a server older than this meshctl?)")
		return
	}
	if len(resp.GetRevoked()) == 0 {
		c.add("control plane", "revocations", OK, "no certificate revoked")
		return
	}
	counts := map[string]int{}
	var ids []string
	for _, r := range resp.GetRevoked() {
		if counts[r.GetSpiffeId()] == 0 {
			ids = append(ids, r.GetSpiffeId())
		}
		counts[r.GetSpiffeId()]++
	}
	var who []string
	for _, id := range ids {
		who = append(who, fmt.Sprintf("%s ×%d", id, counts[id]))
	}
	detail := fmt.Sprintf("%d certificate(s) revoked (%s): meshctl cert revoked lists them", len(resp.GetRevoked()), strings.Join(who, ", "))
	list, err := identity.NewRevocations(resp.GetCrl())
	if err != nil {
		c.add("control plane", "revocations", Fail, detail+"; but the revocation list does not parse: "+err.Error())
		return
	}
	switch left := list.NextUpdate().Sub(c.now); {
	case left <= 0:
		c.add("control plane", "revocations", Fail, fmt.Sprintf("%s; the revocation list went stale %s ago: Envoy refuses every peer with it — the server reissues it hourly when due (its log says why not): restart the server", detail, days(-left)))
	case left < 24*time.Hour:
		c.add("control plane", "revocations", Warn, fmt.Sprintf("%s; the revocation list goes stale in %s and has not been reissued (the server does it half-way through its 7 days): its log says why", detail, days(left)))
	default:
		c.add("control plane", "revocations", OK, detail)
	}
}

// status checks the server's version against meshctl's and whether its
// registry answers.
func (c *checker) status(ctx context.Context, conn *grpc.ClientConn) {
	st, err := adminv1.NewAdminServiceClient(conn).Status(ctx, &adminv1.StatusRequest{})
	if err != nil {
		c.add("control plane", "status", Warn, describe(err)+" (a server older than this meshctl?)")
		return
	}
	if st.Version != c.version {
		c.add("control plane", "version", Warn, fmt.Sprintf("the server is %s, this meshctl %s: commands may not match its API (use the server's build)", st.Version, c.version))
	} else {
		c.add("control plane", "version", OK, fmt.Sprintf("%s, up %s", st.Version, days(c.now.Sub(st.Started.AsTime()))))
	}
	r := st.Registry
	where := r.Backend
	if r.Address != "" {
		where += " at " + r.Address
	}
	if r.Unreachable {
		c.add("control plane", "registry", Fail, fmt.Sprintf("%s unreachable for %s (%s): proxies keep their last configuration, but nothing can register or deregister until it answers",
			where, days(c.now.Sub(r.Since.AsTime())), r.Error))
		return
	}
	c.add("control plane", "registry", OK, where)
}

func (c *checker) cert(what string, cert *x509.Certificate, fix string) {
	left := cert.NotAfter.Sub(c.now)
	switch {
	case left <= 0:
		c.add("control plane", what, Fail, fmt.Sprintf("expired %s ago (%s); %s", days(-left), cert.NotAfter.UTC().Format(time.RFC3339), fix))
	case left < min(certWarnWithin, cert.NotAfter.Sub(cert.NotBefore)/4):
		c.add("control plane", what, Warn, fmt.Sprintf("expires in %s (%s); %s", days(left), cert.NotAfter.UTC().Format(time.RFC3339), fix))
	default:
		c.add("control plane", what, OK, fmt.Sprintf("valid for %s", days(left)))
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
				if TypeState(t) == "STALE" {
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
			switch TypeState(t) {
			case "NACKED":
				bad++
				c.add("proxies", p.NodeId, Fail, fmt.Sprintf("rejected its %s (version %s): %s — meshctl proxy-config %s shows what it was served", t.Type, t.NackedVersion, t.NackError, p.NodeId))
			case "STALE":
				bad++
				c.add("proxies", p.NodeId, Warn, fmt.Sprintf("has not acknowledged its %s (served %s, running %s): it may be overloaded or cut off", t.Type, t.ServedVersion, orNone(t.AckedVersion)))
			}
		}
	}
	if bad == 0 {
		c.add("proxies", "in sync", OK, fmt.Sprintf("%d connected, each running what it is served", len(resp.Proxies)))
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
		c.add("services", "registry", Fail, describe(err))
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
			c.add("services", name, Fail, fmt.Sprintf("no instance passing (%d registered): calls to it fail — meshctl logs %s", len(s.Instances), s.Name))
		case len(critical) > 0:
			bad++
			c.add("services", name, Warn, fmt.Sprintf("%d of %d instances critical (%s): callers skip them — meshctl logs %s", len(critical), len(s.Instances), strings.Join(critical, ", "), s.Name))
		}
	}
	if bad == 0 {
		c.add("services", "healthy", OK, fmt.Sprintf("%d services, each with its instances passing", len(resp.Services)))
	}
	c.splits(resp)
	c.externals(resp)
}

// externals warns of services outside the mesh that a mesh service of
// the same name hides (registered after them: its callers reach the mesh
// service).
func (c *checker) externals(resp *registryv1.ListServicesResponse) {
	for _, e := range resp.GetExternals() {
		name := e.GetName() + "." + e.GetNamespace()
		if slices.ContainsFunc(resp.GetServices(), func(s *registryv1.Service) bool {
			return s.GetName() == e.GetName() && s.GetNamespace() == e.GetNamespace()
		}) {
			c.add("outside the mesh", name, Warn, fmt.Sprintf("a mesh service has that name, so callers reach it, not %s — meshctl external remove %s -n %s, and declare it under another name",
				e.GetHost(), e.GetName(), e.GetNamespace()))
			continue
		}
		c.add("outside the mesh", name, OK, "reaches "+e.GetHost())
	}
}

// rolledBackWithin is how long a rolled back rollout is warned of.
const rolledBackWithin = time.Hour

// splits checks that each split sends its calls to versions with an
// instance passing, and says where each rollout is: one waiting for
// traffic, or rolled back within the hour, is a warning.
func (c *checker) splits(resp *registryv1.ListServicesResponse) {
	passing := map[string]map[string]bool{} // versions with an instance passing, by "name.ns"
	registered := map[string]int{}          // instances by "name.ns|version"
	for _, s := range resp.Services {
		name := s.Name + "." + s.Namespace
		if passing[name] == nil {
			passing[name] = map[string]bool{}
		}
		for _, in := range s.Instances {
			registered[name+"|"+in.GetVersion()]++
			if in.Health == "passing" {
				passing[name][in.GetVersion()] = true
			}
		}
	}
	for _, sp := range resp.Splits {
		name := sp.GetService() + "." + sp.GetNamespace()
		shares := registry.WeightsOf(sp.GetVersions())
		unserved := registry.Unserved(shares, passing[name])
		for _, v := range unserved {
			why := "no instance of it is registered"
			if n := registered[name+"|"+v]; n > 0 {
				why = fmt.Sprintf("none of its %d instances is passing", n)
			}
			weight := shares[slices.IndexFunc(shares, func(w registry.VersionWeight) bool { return w.Version == v })].Weight
			c.add("splits", name, Fail, fmt.Sprintf("its split gives %s %d %% of the calls, but %s: those calls fail — meshctl run --version %s, or meshctl split set %s",
				v, weight, why, v, sp.GetService()))
		}
		r := sp.GetRollout()
		switch {
		case r == nil:
			if len(unserved) == 0 {
				c.add("splits", name, OK, registry.Shares(shares))
			}
		case r.GetState() == registry.RolloutProgressing && strings.HasPrefix(r.GetMessage(), registry.WaitingForTraffic):
			c.add("rollouts", name, Warn, fmt.Sprintf("%s → %s: %s — meshctl rollout status %s", r.GetFrom(), r.GetTo(), r.GetMessage(), sp.GetService()))
		case r.GetState() == registry.RolloutProgressing:
			c.add("rollouts", name, OK, fmt.Sprintf("%s → %s: step %d of %d (%s)", r.GetFrom(), r.GetTo(), r.GetStep()+1, len(r.GetSteps()), registry.Shares(shares)))
		case r.GetState() == registry.RolloutRolledBack && c.now.Sub(r.GetSince().AsTime()) < rolledBackWithin:
			c.add("rollouts", name, Warn, fmt.Sprintf("%s → %s rolled back at %s: %s — meshctl logs %s --version %s",
				r.GetFrom(), r.GetTo(), r.GetSince().AsTime().Local().Format("15:04"), r.GetMessage(), sp.GetService(), r.GetTo()))
		}
	}
}

// traffic warns of services that failed more than 5 % of the last
// minute's requests.
func (c *checker) traffic(ctx context.Context, conn *grpc.ClientConn) {
	resp, err := statsv1.NewStatsServiceClient(conn).GetStats(ctx, &statsv1.GetStatsRequest{})
	if err != nil {
		c.add("traffic", "stats", Warn, describe(err))
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
			c.add("traffic", s.Service, Warn, fmt.Sprintf("answered %.1f%% of %d requests in the last minute: meshctl stat %s; meshctl traces --errors --service %s",
				100*t.GetSuccessRate(), t.GetRequests(), s.Service, s.Service))
		}
	}
	if bad == 0 {
		c.add("traffic", "success", OK, fmt.Sprintf("%d services with requests in the last minute, none failing more than %d %%", busy, 100-int(100*successWarnRate)))
	}
}
