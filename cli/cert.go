package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/identity/ca"
	"github.com/micromesh/micromesh/internal/home"
	"github.com/micromesh/micromesh/internal/join"
)

func newCertCommand(g *globalOptions, s Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Mint join tokens, issue, inspect and revoke workload certificates",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(
		newCertTokenCommand(g, s),
		newCertIssueCommand(g, s),
		newCertInspectCommand(g, s),
		newCertBundleCommand(g, s),
		// Through a remote environment's proxy too, for admin accounts.
		remoteOK(newCertRevokeCommand(g, s)),
		remoteOK(newCertRevokedCommand(g, s)),
	)
	return cmd
}

// serviceFlags name a service identity.
type serviceFlags struct {
	service   string
	namespace string
}

func (f *serviceFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.service, "service", "", "service name (a DNS label)")
	cmd.Flags().StringVarP(&f.namespace, "namespace", "n", identity.DefaultNamespace, "namespace (a DNS label)")
}

func (f *serviceFlags) validate() error { return join.ValidateService(f.service, f.namespace) }

// --- cert token ---

type certTokenOptions struct {
	serviceFlags
	ttl time.Duration
}

func (o *certTokenOptions) validate() error {
	if err := o.serviceFlags.validate(); err != nil {
		return err
	}
	if o.ttl <= 0 || o.ttl > ca.MaxTokenTTL {
		return fmt.Errorf("--ttl %v: must be more than 0 and at most %v", o.ttl, ca.MaxTokenTTL)
	}
	return nil
}

type tokenOutput struct {
	Token   string    `json:"token"`
	ID      string    `json:"spiffe_id"`
	Expires time.Time `json:"expires"`
}

func newCertTokenCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &certTokenOptions{}
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Mint a join token: a single-use credential for one service's first certificate",
		Long: `Mint a join token for one SPIFFE ID, signed with the local CA's key (this
needs the server's $MESH_HOME). The token is good for one certificate, within
--ttl. Treat it as a secret.`,
		Args: cobra.NoArgs,
		Example: `  meshctl cert token --service hello
  TOKEN=$(meshctl cert token --service hello --namespace prod --ttl 10m)`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			signer, err := ca.LoadTokenSigner(g.homeDir().CA())
			if err != nil {
				return err
			}
			id, err := identity.ServiceID(signer.TrustDomain(), o.namespace, o.service)
			if err != nil {
				return err
			}
			tok, err := signer.Mint(id, o.ttl)
			if err != nil {
				return err
			}
			out := tokenOutput{Token: tok, ID: id.String(), Expires: time.Now().Add(o.ttl).UTC().Truncate(time.Second)}
			return render(s.Out, g.output, out, func() string { return tok + "\n" })
		},
	}
	o.serviceFlags.add(cmd)
	cmd.Flags().DurationVar(&o.ttl, "ttl", ca.DefaultTokenTTL, "how long the token is valid")
	return cmd
}

// --- cert issue ---

type certIssueOptions struct {
	serviceFlags
	token        string
	out          string
	controlPlane string
	bundle       string
	timeout      time.Duration
}

func (o *certIssueOptions) validate() error {
	if err := o.serviceFlags.validate(); err != nil {
		return err
	}
	if o.out == "" {
		return errors.New("--out is required: the directory to write cert.pem, key.pem and bundle.pem into")
	}
	if o.timeout <= 0 {
		return fmt.Errorf("--timeout %v must be positive", o.timeout)
	}
	return nil
}

type issueOutput struct {
	ID       string    `json:"spiffe_id"`
	Dir      string    `json:"dir"`
	Files    []string  `json:"files"`
	NotAfter time.Time `json:"not_after"`
}

func newCertIssueCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &certIssueOptions{}
	cmd := &cobra.Command{
		Use:   "issue",
		Short: "Get a workload certificate from the control plane and write it to a directory",
		Long: `Get a workload certificate for a service from the control plane and write
cert.pem (leaf + intermediate), key.pem (0600) and bundle.pem (trust bundle)
into --out.

Without --token, a token is minted from the local CA (the server's $MESH_HOME).
With --token from another machine and no local CA, the trust bundle is
fetched from the control plane and checked against the root fingerprint the
token carries.`,
		Args: cobra.NoArgs,
		Example: `  meshctl cert issue --service hello --out hello
  meshctl cert issue --service hello --token "$TOKEN" --controlplane 10.0.0.5:8443 --out /etc/mesh/hello`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			out, err := o.run(cmd.Context(), g)
			if err != nil {
				return err
			}
			return render(s.Out, g.output, out, func() string {
				return fmt.Sprintf("wrote %s for %s (expires %s)\n",
					strings.Join(out.Files, ", "), out.ID, out.NotAfter.Format(time.RFC3339))
			})
		},
	}
	o.serviceFlags.add(cmd)
	f := cmd.Flags()
	f.StringVar(&o.token, "token", "", "join token (default: mint one from the local CA)")
	f.StringVar(&o.out, "out", "", "directory to write the credentials into")
	f.StringVar(&o.controlPlane, "controlplane", "", "control plane address (default: the local server)")
	f.StringVar(&o.bundle, "bundle", "", "trust bundle PEM to verify the control plane (default: the local CA's root)")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "how long to wait for the control plane")
	return cmd
}

func (o *certIssueOptions) run(ctx context.Context, g *globalOptions) (issueOutput, error) {
	creds, err := join.Run(ctx, join.Options{
		Service: o.service, Namespace: o.namespace, Token: o.token, Mint: localMint(g.homeDir()),
		ControlPlane: o.controlPlane, Bundle: o.bundle, Home: g.homeDir(), Out: o.out, Timeout: o.timeout,
	})
	if err != nil {
		return issueOutput{}, err
	}
	files := []string{identity.CertFile, identity.KeyFile, identity.BundleFile}
	for i, f := range files {
		files[i] = filepath.Join(o.out, f)
	}
	return issueOutput{ID: creds.ID.String(), Dir: o.out, Files: files, NotAfter: creds.Leaf().NotAfter.UTC()}, nil
}

// localMint mints join tokens (one minute) from the CA in h: the server's,
// when the CLI runs where the server does.
func localMint(h home.Dir) func(service, namespace string) (string, error) {
	return func(service, namespace string) (string, error) {
		signer, err := ca.LoadTokenSigner(h.CA())
		if err != nil {
			return "", err
		}
		id, err := identity.ServiceID(signer.TrustDomain(), namespace, service)
		if err != nil {
			return "", err
		}
		return signer.Mint(id, time.Minute)
	}
}

// --- cert inspect ---

type certInspectOptions struct {
	bundle string
}

// certReport describes a certificate file.
type certReport struct {
	File         string       `json:"file"`
	ID           string       `json:"spiffe_id,omitempty"`
	Serial       string       `json:"serial"`
	Key          string       `json:"key"`
	NotBefore    time.Time    `json:"not_before"`
	NotAfter     time.Time    `json:"not_after"`
	State        string       `json:"state"` // valid, expired, not yet valid
	Verified     bool         `json:"verified"`
	VerifiedWith string       `json:"verified_with,omitempty"`
	VerifyError  string       `json:"verify_error,omitempty"`
	Chain        []chainEntry `json:"chain"`
}

type chainEntry struct {
	Subject  string    `json:"subject"`
	Issuer   string    `json:"issuer"`
	NotAfter time.Time `json:"not_after"`
	IsCA     bool      `json:"is_ca"`
}

func newCertInspectCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &certInspectOptions{}
	cmd := &cobra.Command{
		Use:   "inspect FILE",
		Short: "Show a certificate's identity, validity and chain, and verify it",
		Long: `Show the SPIFFE ID, validity and chain of a PEM certificate file, and verify
it against a trust bundle: --bundle, else bundle.pem next to FILE, else the
local CA's root.`,
		Args:    cobra.ExactArgs(1),
		Example: "  meshctl cert inspect hello/cert.pem\n  meshctl cert inspect hello/cert.pem -o json",
		RunE: func(cmd *cobra.Command, args []string) error {
			certs, err := identity.ReadCertificates(args[0])
			if err != nil {
				return err
			}
			bundlePath := o.bundle
			if bundlePath == "" {
				if sib := filepath.Join(filepath.Dir(args[0]), identity.BundleFile); fileExists(sib) {
					bundlePath = sib
				}
			}
			var bundle *identity.Bundle
			var from string
			if pemRoots, f, err := join.LoadRoots(bundlePath, g.homeDir()); err != nil {
				return err
			} else if pemRoots != nil {
				from = f
				td := ""
				if id, err := identity.IDFromCertificate(certs[0]); err == nil {
					td = id.TrustDomain
				}
				if bundle, err = join.BundleFrom(pemRoots, f, td); err != nil {
					return err
				}
			}
			r := inspect(args[0], certs, bundle, from, time.Now())
			return render(s.Out, g.output, r, func() string { return renderInspect(r, time.Now()) })
		},
	}
	cmd.Flags().StringVar(&o.bundle, "bundle", "", "trust bundle PEM to verify against")
	return cmd
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// inspect builds the report for certs (leaf first), verified against bundle.
func inspect(file string, certs []*x509.Certificate, bundle *identity.Bundle, bundleFrom string, now time.Time) certReport {
	leaf := certs[0]
	r := certReport{
		File:      file,
		Serial:    leaf.SerialNumber.String(),
		Key:       keyDescription(leaf),
		NotBefore: leaf.NotBefore.UTC(),
		NotAfter:  leaf.NotAfter.UTC(),
	}
	switch {
	case now.After(leaf.NotAfter):
		r.State = "expired"
	case now.Before(leaf.NotBefore):
		r.State = "not yet valid"
	default:
		r.State = "valid"
	}
	if id, err := identity.IDFromCertificate(leaf); err == nil {
		r.ID = id.String()
	}
	for _, c := range certs {
		r.Chain = append(r.Chain, chainEntry{Subject: certName(c), Issuer: c.Issuer.String(), NotAfter: c.NotAfter.UTC(), IsCA: c.IsCA})
	}
	if bundle == nil {
		r.VerifyError = "no trust bundle: pass --bundle"
		return r
	}
	r.VerifiedWith = bundleFrom
	if _, _, err := bundle.VerifyCertificates(certs, now); err != nil {
		r.VerifyError = err.Error()
	} else {
		r.Verified = true
	}
	return r
}

func certName(c *x509.Certificate) string {
	if id, err := identity.IDFromCertificate(c); err == nil {
		return id.String()
	}
	return c.Subject.String()
}

func keyDescription(c *x509.Certificate) string {
	if k, ok := c.PublicKey.(*ecdsa.PublicKey); ok {
		return "ECDSA " + k.Curve.Params().Name
	}
	return c.PublicKeyAlgorithm.String()
}

func renderInspect(r certReport, now time.Time) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "File:\t%s\n", r.File)
	id := r.ID
	if id == "" {
		id = "(none: not a mesh certificate)"
	}
	fmt.Fprintf(w, "ID:\t%s\n", id)
	fmt.Fprintf(w, "Serial:\t%s\n", r.Serial)
	fmt.Fprintf(w, "Key:\t%s\n", r.Key)
	fmt.Fprintf(w, "Valid:\t%s to %s (%s)\n", r.NotBefore.Format(time.RFC3339), r.NotAfter.Format(time.RFC3339), validityPhrase(r, now))
	switch {
	case r.Verified:
		fmt.Fprintf(w, "Verified:\tyes, against %s\n", r.VerifiedWith)
	case r.VerifiedWith != "":
		fmt.Fprintf(w, "Verified:\tNO, against %s: %s\n", r.VerifiedWith, r.VerifyError)
	default:
		fmt.Fprintf(w, "Verified:\tnot checked: %s\n", r.VerifyError)
	}
	fmt.Fprintln(w, "Chain:")
	for i, c := range r.Chain {
		ca := ""
		if c.IsCA {
			ca = " (CA)"
		}
		fmt.Fprintf(w, "  %d\t%s%s\texpires %s\n", i, c.Subject, ca, c.NotAfter.Format(time.RFC3339))
	}
	_ = w.Flush()
	return b.String()
}

func validityPhrase(r certReport, now time.Time) string {
	switch r.State {
	case "expired":
		return "EXPIRED " + r.NotAfter.Sub(now).Abs().Round(time.Minute).String() + " ago"
	case "not yet valid":
		return "NOT YET VALID"
	default:
		return "expires in " + r.NotAfter.Sub(now).Round(time.Minute).String()
	}
}

// --- cert bundle ---

type bundleOutput struct {
	TrustDomain string   `json:"trust_domain,omitempty"`
	SHA256      []string `json:"sha256"`
	PEM         string   `json:"pem"`
}

func newCertBundleCommand(g *globalOptions, s Streams) *cobra.Command {
	return &cobra.Command{
		Use:     "bundle",
		Short:   "Print the trust bundle (the CA's root certificate) as PEM",
		Args:    cobra.NoArgs,
		Example: "  meshctl cert bundle > bundle.pem\n  meshctl cert bundle -o json",
		RunE: func(cmd *cobra.Command, _ []string) error {
			h := g.homeDir()
			pemRoots, from, err := join.LoadRoots("", h)
			if err != nil {
				return err
			}
			if pemRoots == nil {
				return fmt.Errorf("no CA in %s: start the server first (make run), or pass --home", h.CA())
			}
			roots, err := identity.ParseCertificates(pemRoots)
			if err != nil {
				return fmt.Errorf("%s: %w", from, err)
			}
			out := bundleOutput{PEM: string(identity.EncodeCertificates(roots))}
			if info, err := h.ReadServerInfo(); err == nil {
				out.TrustDomain = info.TrustDomain
			}
			for _, r := range roots {
				out.SHA256 = append(out.SHA256, identity.Fingerprint(r))
			}
			return render(s.Out, g.output, out, func() string { return out.PEM })
		},
	}
}
