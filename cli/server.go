package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/micromesh/micromesh/controlplane"
	"github.com/micromesh/micromesh/controlplane/traces"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/envconfig"
	"github.com/micromesh/micromesh/internal/home"
	"github.com/micromesh/micromesh/internal/logging"
	"github.com/micromesh/micromesh/internal/servingcert"
	"github.com/micromesh/micromesh/platform"
	"github.com/micromesh/micromesh/platform/gateway"
	"github.com/micromesh/micromesh/xds"
)

type serverOptions struct {
	addr        string
	adminAddr   string
	trustDomain string
	certTTL     time.Duration
	logLevel    string
	registry    string
	consulAddr  string
	natsURL     string
	storePG     string
	retention   time.Duration
	gatewayAddr string
	gatewayNS   string
	gatewayAuth string
	gatewayCORS []string
	gatewayTime time.Duration
	gatewayTLS  servingcert.Files
	gatewayACME gateway.ACME
	gatewayH3   bool
	gatewayRedi string
	gatewayRate float64
	gatewayBurs int
	dashboard   string
	proxyAddr   string
	advertise   string
	// Tracing: proxies trace requests, sampling percent of the traces they
	// start; the control plane keeps spans for tracesAge, at most
	// tracesMax, and sends them on to forward if set.
	tracing   bool
	sampling  float64
	tracesAge time.Duration
	tracesMax int
	forward   string
}

func (o *serverOptions) validate() error {
	if o.addr == "" || o.adminAddr == "" {
		return fmt.Errorf("--addr and --admin-addr must not be empty")
	}
	if o.registry != controlplane.RegistryEmbedded && o.registry != controlplane.RegistryConsul {
		return fmt.Errorf("--registry %q: choose %s or %s", o.registry, controlplane.RegistryEmbedded, controlplane.RegistryConsul)
	}
	if o.certTTL < 0 {
		return fmt.Errorf("--cert-ttl %v must be positive", o.certTTL)
	}
	if o.retention <= 0 {
		return fmt.Errorf("--events-retention %v must be positive", o.retention)
	}
	if o.gatewayAddr == "" {
		return fmt.Errorf("--gateway-addr must not be empty (say off for no API gateway)")
	}
	if err := gateway.ValidateAuthMode(o.gatewayAuth); err != nil {
		return fmt.Errorf("--gateway-auth: %w", err)
	}
	for _, origin := range o.gatewayCORS {
		if err := gateway.ValidateOrigin(origin); err != nil {
			return fmt.Errorf("--gateway-cors-origin: %w", err)
		}
	}
	if o.gatewayTime <= 0 {
		return fmt.Errorf("--gateway-timeout %v: must be positive", o.gatewayTime)
	}
	if err := gateway.ValidateClientLimit(o.gatewayRate, o.gatewayBurs); err != nil {
		return fmt.Errorf("--gateway-rate-limit and --gateway-rate-limit-burst: %w", err)
	}
	if err := o.gatewayTLS.Check("--gateway-tls-cert", "--gateway-tls-key"); err != nil {
		return err
	}
	if !o.gatewayACME.IsZero() {
		if !o.gatewayTLS.IsZero() {
			return fmt.Errorf("--gateway-acme-domains gets the gateway's certificate from an ACME CA: leave out --gateway-tls-cert and --gateway-tls-key, or it")
		}
		if o.gateway() == "" {
			return fmt.Errorf("--gateway-acme-domains is the API gateway's: with --gateway-addr off there is none")
		}
		if err := o.gatewayACME.Validate(); err != nil {
			return fmt.Errorf("--gateway-acme-*: %w", err)
		}
	} else if o.gatewayACME.Email != "" || o.gatewayACME.Bundle != "" || o.gatewayACME.Directory != gateway.LetsEncrypt {
		return fmt.Errorf("--gateway-acme-email, --gateway-acme-ca and --gateway-acme-ca-bundle go with --gateway-acme-domains")
	}
	if o.gatewayRedi != "" && o.gatewayTLS.IsZero() && o.gatewayACME.IsZero() {
		return fmt.Errorf("--gateway-redirect-addr sends plain HTTP to the gateway's HTTPS: it needs --gateway-tls-cert and --gateway-tls-key, or --gateway-acme-domains")
	}
	if !o.gatewayTLS.IsZero() && o.gateway() == "" {
		return fmt.Errorf("--gateway-tls-cert and --gateway-tls-key are the API gateway's: with --gateway-addr off there is none")
	}
	if !o.gatewayTLS.IsZero() {
		// Checked before anything starts (the gateway loads it again).
		if _, err := servingcert.Load(o.gatewayTLS, slog.New(slog.DiscardHandler)); err != nil {
			return fmt.Errorf("--gateway-tls-cert and --gateway-tls-key: %w", err)
		}
	}
	if o.advertise != "" {
		if ip := net.ParseIP(o.advertise); ip == nil || ip.IsUnspecified() {
			return fmt.Errorf("--advertise %q: want this host's IP address that other hosts reach it at", o.advertise)
		}
	}
	if o.proxyAddr == "" {
		return fmt.Errorf("--proxy-addr must not be empty (say off for no remote proxy)")
	}
	if o.dashboard == "" {
		return fmt.Errorf("--dashboard-addr must not be empty (say off for no dashboard)")
	}
	if o.gateway() == "" && o.dashboardAddr() != "" {
		return fmt.Errorf("the dashboard calls services through the API gateway: with --gateway-addr off, say --dashboard-addr off too")
	}
	if err := identity.ValidateName("namespace", o.gatewayNS); err != nil {
		return fmt.Errorf("--gateway-namespace: %w", err)
	}
	if o.sampling < 0 || o.sampling > 100 {
		return fmt.Errorf("--trace-sampling %v: a percentage, 0 to 100", o.sampling)
	}
	if o.tracesAge <= 0 {
		return fmt.Errorf("--traces-max-age %v: must be positive", o.tracesAge)
	}
	if o.tracesMax <= 0 {
		return fmt.Errorf("--traces-max-spans %d: must be positive", o.tracesMax)
	}
	if o.forward != "" {
		if _, _, err := traces.ParseForward(o.forward); err != nil {
			return fmt.Errorf("--traces-forward %w", err)
		}
	}
	return nil
}

// meshTracing is the mesh's tracing, nil for none.
func (o *serverOptions) meshTracing() *xds.Tracing {
	if !o.tracing {
		return nil
	}
	return &xds.Tracing{SamplingPercent: o.sampling}
}

// dashboardAddr is where the dashboard serves, "" for none.
func (o *serverOptions) dashboardAddr() string {
	if o.dashboard == "off" {
		return ""
	}
	return o.dashboard
}

// remoteProxy is where the remote proxy serves, "" for none.
func (o *serverOptions) remoteProxy() string {
	if o.proxyAddr == "off" {
		return ""
	}
	return o.proxyAddr
}

// gateway is where the API gateway serves, "" for none.
func (o *serverOptions) gateway() string {
	if o.gatewayAddr == "off" {
		return ""
	}
	return o.gatewayAddr
}

func newServerCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &serverOptions{}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the Micromesh server (control plane and embedded CA) in the foreground",
		Long: `Run the Micromesh server in the foreground until interrupted (Ctrl-C).

On first start it creates the mesh's CA under $MESH_HOME/ca; later starts reuse
it. It serves the control plane's gRPC APIs with mTLS on --addr and /metrics,
/healthz and /ready on --admin-addr, runs the platform services (store,
config, broker, events) on the mesh, serves the API gateway — HTTP and JSON
to the mesh's services, POST /helloworld/call; HTTPS and HTTP/3 with
--gateway-tls-cert and --gateway-tls-key, or with certificates it gets
itself from Let's Encrypt with --gateway-acme-domains — on --gateway-addr and the
web dashboard on --dashboard-addr, the remote proxy — gRPC over TLS with
access tokens, for meshctl in a remote environment (meshctl env) — on
--proxy-addr, and prints one line when ready.`,
		Args: cobra.NoArgs,
		Example: `  meshctl server
  meshctl server --addr 127.0.0.1:9443 --admin-addr 127.0.0.1:9090
  MESH_HOME=/tmp/mesh meshctl server --trust-domain example.org
  meshctl server --registry consul --consul-addr 127.0.0.1:8500
  meshctl server --gateway-addr 127.0.0.1:9080 --gateway-namespace shop
  meshctl server --gateway-addr off --dashboard-addr off
  meshctl server --gateway-addr 0.0.0.0:443 --gateway-auth required \
      --gateway-tls-cert /etc/letsencrypt/live/api.example.com/fullchain.pem \
      --gateway-tls-key /etc/letsencrypt/live/api.example.com/privkey.pem --gateway-redirect-addr 0.0.0.0:80 \
      --gateway-rate-limit 20 --gateway-rate-limit-burst 40                # HTTPS and HTTP/3, 20 requests/s per client
  meshctl server --gateway-addr 0.0.0.0:443 --gateway-redirect-addr 0.0.0.0:80 \
      --gateway-acme-domains api.example.com --gateway-acme-email ops@example.com   # certificates from Let's Encrypt
  meshctl server --proxy-addr 0.0.0.0:8081     # meshctl of other machines: meshctl env add
  meshctl server --trace-sampling 100           # record every request's trace (development)`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			log, err := logging.New(s.Err, o.logLevel)
			if err != nil {
				return err
			}
			srv, err := controlplane.New(cmd.Context(), controlplane.Config{
				Home:           g.homeDir(),
				Addr:           o.addr,
				AdminAddr:      o.adminAddr,
				TrustDomain:    o.trustDomain,
				CertTTL:        o.certTTL,
				Registry:       o.registry,
				ConsulAddr:     o.consulAddr,
				Advertise:      o.advertise,
				Logger:         log,
				Tracing:        o.meshTracing(),
				TracesMaxAge:   o.tracesAge,
				TracesMaxSpans: o.tracesMax,
				TracesForward:  o.forward,
			})
			if err != nil {
				return err
			}
			// The platform services stop before the control plane: their
			// sidecars deregister through it.
			cpCtx, stopCP := context.WithCancel(context.Background())
			defer stopCP()
			var (
				mu      sync.Mutex
				host    *platform.Host
				hostErr error
			)
			go func() {
				<-cmd.Context().Done()
				mu.Lock()
				if host != nil {
					host.Stop()
				}
				mu.Unlock()
				stopCP()
			}()
			err = srv.Run(cpCtx, func(info home.ServerInfo) {
				mu.Lock()
				host, hostErr = platform.Start(cmd.Context(), platform.Options{Home: g.homeDir(), ControlPlane: info.Address, AccountKeys: srv.SetAccountKeys, NATSURL: o.natsURL, StorePostgres: o.storePG, EventsRetention: o.retention,
					GatewayAddr: o.gateway(), GatewayNamespace: o.gatewayNS, GatewayAuth: o.gatewayAuth, GatewayCORSOrigins: o.gatewayCORS, GatewayTimeout: o.gatewayTime, GatewayTLS: o.gatewayTLS, GatewayACME: o.gatewayACME, GatewayHTTP3: o.gatewayH3 && (!o.gatewayTLS.IsZero() || !o.gatewayACME.IsZero()), GatewayRedirectAddr: o.gatewayRedi, GatewayRateLimit: o.gatewayRate, GatewayRateLimitBurst: o.gatewayBurs, DashboardAddr: o.dashboardAddr(), RemoteProxyAddr: o.remoteProxy(), Advertise: o.advertise, Metrics: srv.Metrics(), Logger: log})
				mu.Unlock()
				if hostErr != nil {
					stopCP()
					return
				}
				info.GatewayAddress, info.GatewayURL, info.DashboardAddress, info.RemoteProxyAddress = host.GatewayAddr(), host.GatewayURL(), host.DashboardAddr(), host.RemoteProxyAddr()
				if info.GatewayAddress != "" || info.RemoteProxyAddress != "" {
					if err := g.homeDir().WriteServerInfo(info); err != nil {
						log.Warn("publishing the gateway's and the remote proxy's addresses", "err", err)
					}
				}
				_ = render(s.Out, g.output, info, func() string { return renderServerReady(info, g.home) })
			})
			if hostErr != nil {
				return fmt.Errorf("starting the platform services: %w", hostErr)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.addr, "addr", envconfig.Get(envconfig.ControlPlane, envconfig.DefaultControlPlane), "control plane gRPC address ($"+envconfig.ControlPlane+")")
	f.StringVar(&o.adminAddr, "admin-addr", envconfig.Get(envconfig.AdminAddr, envconfig.DefaultAdminAddr), "admin HTTP address for /metrics and health ($"+envconfig.AdminAddr+")")
	f.StringVar(&o.trustDomain, "trust-domain", envconfig.Get(envconfig.TrustDomain, ""), "trust domain of a new CA (default micromesh.local; $"+envconfig.TrustDomain+")")
	f.DurationVar(&o.certTTL, "cert-ttl", 0, "lifetime of workload certificates (default 24h)")
	f.StringVar(&o.registry, "registry", controlplane.RegistryEmbedded, "service registry: embedded (bbolt under $MESH_HOME/registry) or consul")
	f.StringVar(&o.consulAddr, "consul-addr", envconfig.Get(envconfig.ConsulAddr, envconfig.DefaultConsulAddr), "Consul agent HTTP address, with --registry consul ($"+envconfig.ConsulAddr+")")
	f.StringVar(&o.natsURL, "nats-url", "", "an external NATS cluster for the broker, events and config (default: one runs in-process, files under $MESH_HOME/nats)")
	f.StringVar(&o.storePG, "store-postgres", "", "keep the store's records in PostgreSQL (a DSN, postgres://…) instead of bbolt under $MESH_HOME/store")
	f.DurationVar(&o.retention, "events-retention", 24*time.Hour, "how long events are kept")
	f.StringVar(&o.gatewayAddr, "gateway-addr", envconfig.Get(envconfig.GatewayAddr, envconfig.DefaultGatewayAddr), "API gateway HTTP address, or off ($"+envconfig.GatewayAddr+")")
	f.StringVar(&o.dashboard, "dashboard-addr", envconfig.Get(envconfig.DashboardAddr, envconfig.DefaultDashboardAddr), "web dashboard HTTP address, or off ($"+envconfig.DashboardAddr+")")
	f.StringVar(&o.advertise, "advertise", "", "this host's IP address other hosts reach its services' sidecars at (default 127.0.0.1: this host only; with --addr where they reach the control plane, a mesh across hosts)")
	f.StringVar(&o.proxyAddr, "proxy-addr", envconfig.Get(envconfig.RemoteProxyAddr, envconfig.DefaultRemoteProxy), "remote proxy address (gRPC over TLS, access tokens: meshctl env, meshctl login), or off ($"+envconfig.RemoteProxyAddr+")")
	f.StringVar(&o.gatewayAuth, "gateway-auth", gateway.AuthOptional, "access tokens the API gateway asks for: off, optional (a token that does not verify is refused; one that does keeps the request to its namespace) or required (meshctl auth)")
	f.StringArrayVar(&o.gatewayCORS, "gateway-cors-origin", nil, "a web origin (https://app.example.com) whose pages may call the gateway from a browser (repeatable)")
	f.StringVar(&o.gatewayTLS.Cert, "gateway-tls-cert", envconfig.Get(envconfig.GatewayTLSCert, ""), "serve the API gateway over HTTPS with this certificate chain (PEM, leaf first; renewed files are picked up with no restart) ($"+envconfig.GatewayTLSCert+")")
	f.StringVar(&o.gatewayTLS.Key, "gateway-tls-key", envconfig.Get(envconfig.GatewayTLSKey, ""), "the private key of --gateway-tls-cert (PEM, mode 0600) ($"+envconfig.GatewayTLSKey+")")
	f.StringSliceVar(&o.gatewayACME.Domains, "gateway-acme-domains", envconfig.List(envconfig.GatewayACMEDomains), "serve the API gateway over HTTPS with certificates it gets and renews itself from an ACME CA (Let's Encrypt), for these names (comma-separated; giving them accepts the CA's terms of service) ($"+envconfig.GatewayACMEDomains+")")
	f.StringVar(&o.gatewayACME.Email, "gateway-acme-email", envconfig.Get(envconfig.GatewayACMEEmail, ""), "with --gateway-acme-domains, the contact the CA may write to about the certificates ($"+envconfig.GatewayACMEEmail+")")
	f.StringVar(&o.gatewayACME.Directory, "gateway-acme-ca", gateway.LetsEncrypt, "with --gateway-acme-domains, the ACME CA's directory URL (your own step-ca's, say)")
	f.StringVar(&o.gatewayACME.Bundle, "gateway-acme-ca-bundle", "", "with --gateway-acme-ca, a PEM file of the roots its HTTPS certificate chains to (a private CA's)")
	f.BoolVar(&o.gatewayH3, "gateway-http3", true, "with --gateway-tls-cert or --gateway-acme-domains, also serve HTTP/3 (QUIC) on the UDP port of the same number, announced to HTTPS clients by Alt-Svc")
	f.StringVar(&o.gatewayRedi, "gateway-redirect-addr", "", "with --gateway-tls-cert or --gateway-acme-domains, also answer plain HTTP here with a redirect to the same URL over HTTPS (308), and the ACME CA's http-01 challenges: 0.0.0.0:80, usually")
	f.Float64Var(&o.gatewayRate, "gateway-rate-limit", 0, "requests per second the API gateway takes from each client — each account with a token, else each address; the rest get 429 with Retry-After (0: no limit)")
	f.IntVar(&o.gatewayBurs, "gateway-rate-limit-burst", 0, "how many requests a client may send at once under --gateway-rate-limit (default: the rate, rounded up)")
	f.DurationVar(&o.gatewayTime, "gateway-timeout", gateway.DefaultTimeout, "how long the gateway waits for a call of one request and one answer (streams are not bounded)")
	f.StringVar(&o.gatewayNS, "gateway-namespace", "default", "namespace of the services the gateway's paths name without one (/NAME/...; /NAME.NAMESPACE/... for others)")
	f.BoolVar(&o.tracing, "tracing", true, "have proxies trace requests and send their spans here (meshctl traces, meshctl trace)")
	f.Float64Var(&o.sampling, "trace-sampling", 1, "percentage of the requests that bring no trace context whose trace is recorded (requests that bring a sampled W3C traceparent, as meshctl call --trace sends, always are)")
	f.DurationVar(&o.tracesAge, "traces-max-age", traces.DefaultMaxAge, "how long spans are kept")
	f.IntVar(&o.tracesMax, "traces-max-spans", traces.DefaultMaxSpans, "how many spans are kept at most (the oldest go first)")
	f.StringVar(&o.forward, "traces-forward", "", "also send the spans on to this OTLP/gRPC collector: http://HOST:4317 (plaintext) or https://… (TLS) — Jaeger, Tempo, an OpenTelemetry Collector")
	f.StringVar(&o.logLevel, "log-level", envconfig.Get(envconfig.LogLevel, "info"), "debug, info, warn or error ($"+envconfig.LogLevel+")")
	return cmd
}

func renderServerReady(info home.ServerInfo, homeDir string) string {
	gw := ""
	if info.GatewayURL != "" {
		gw = ", gateway " + info.GatewayURL
	}
	if info.DashboardAddress != "" {
		gw += ", dashboard http://" + info.DashboardAddress
	}
	if info.RemoteProxyAddress != "" {
		gw += ", remote proxy " + info.RemoteProxyAddress
	}
	return fmt.Sprintf("micromesh server ready: grpc %s, admin http://%s%s, trust domain %s, home %s\n",
		info.Address, info.AdminAddress, gw, info.TrustDomain, homeDir)
}
