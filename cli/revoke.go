package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/identity/ca"
	identityv1 "github.com/micromesh/micromesh/proto/identity/v1"
)

// --- cert revoke ---

type certRevokeOptions struct {
	serial       string
	service      string
	namespace    string
	id           string
	reason       string
	controlPlane string
}

func (o *certRevokeOptions) validate() error {
	named := 0
	for _, v := range []string{o.serial, o.service, o.id} {
		if v != "" {
			named++
		}
	}
	if named != 1 {
		return errors.New("name what to revoke, once: a certificate's SERIAL, --service NAME [-n NS] (every certificate of a service) or --id SPIFFE_ID")
	}
	if o.serial != "" {
		if _, err := ca.ParseSerial(o.serial); err != nil {
			return err
		}
	}
	if o.service != "" {
		if _, err := identity.ServiceID(identity.DefaultTrustDomain, o.namespace, o.service); err != nil {
			return err
		}
	}
	if o.id != "" {
		if _, err := identity.ParseID(o.id); err != nil {
			return err
		}
	}
	if len(o.reason) > ca.MaxReasonLen || strings.ContainsAny(o.reason, "\r\n") {
		return fmt.Errorf("--reason: one line of at most %d bytes", ca.MaxReasonLen)
	}
	return nil
}

type revokedJSON struct {
	Serial    string    `json:"serial"`
	ID        string    `json:"spiffe_id"`
	Reason    string    `json:"reason,omitempty"`
	RevokedAt time.Time `json:"revoked_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

func revokedList(rs []*identityv1.RevokedCertificate) []revokedJSON {
	out := make([]revokedJSON, 0, len(rs))
	for _, r := range rs {
		out = append(out, revokedJSON{Serial: r.GetSerial(), ID: r.GetSpiffeId(), Reason: r.GetReason(),
			RevokedAt: r.GetRevokedAt().AsTime().UTC(), ExpiresAt: r.GetExpiresAt().AsTime().UTC()})
	}
	return out
}

func renderRevoked(rs []revokedJSON) string {
	if len(rs) == 0 {
		return "no certificate is revoked\n"
	}
	rows := make([][]string, 0, len(rs))
	for _, r := range rs {
		rows = append(rows, []string{r.Serial, r.ID, r.RevokedAt.Format(time.RFC3339), r.ExpiresAt.Format(time.RFC3339), r.Reason})
	}
	return table([]string{"SERIAL", "SPIFFE ID", "REVOKED", "EXPIRES", "REASON"}, rows)
}

func newCertRevokeCommand(g *globalOptions, s Streams) *cobra.Command {
	o := &certRevokeOptions{}
	cmd := &cobra.Command{
		Use:   "revoke [SERIAL]",
		Short: "Revoke a certificate, or every certificate of a service: peers and the control plane refuse them at once",
		Long: `Revoke one certificate by its serial (decimal, as meshctl cert inspect prints
it, or colon-separated hex, as openssl does), or every unexpired certificate of
a service (--service) or SPIFFE ID (--id): what to do when a workload's key may
have leaked, since whoever holds a certificate can renew it.

The control plane refuses revoked certificates at once (renewals, xDS, every
API) and ends their open streams; every proxy gets the CA's new revocation
list with its trust bundle (SDS) and refuses them in new handshakes and on the
connections it already has. The workload needs a new join token: restart it
(meshctl run starts it with a fresh one). A revocation lasts until the
certificate would have expired; meshctl cert revoked lists them.`,
		Args: cobra.MaximumNArgs(1),
		Example: `  meshctl cert revoke --service orders -n shop --reason "key on a lost laptop"
  meshctl cert revoke 250995806437008081031283787468620805398
  meshctl cert revoke --id spiffe://micromesh.local/ns/default/svc/hello -o json`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				o.serial = args[0]
			}
			if err := o.validate(); err != nil {
				return err
			}
			var resp *identityv1.RevokeResponse
			err := withAdmin(cmd.Context(), g, o.controlPlane, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
				req := &identityv1.RevokeRequest{Reason: o.reason}
				switch {
				case o.serial != "":
					req.Target = &identityv1.RevokeRequest_Serial{Serial: o.serial}
				case o.id != "":
					req.Target = &identityv1.RevokeRequest_SpiffeId{SpiffeId: o.id}
				default:
					req.Target = &identityv1.RevokeRequest_Service{Service: &identityv1.ServiceName{Name: o.service, Namespace: o.namespace}}
				}
				resp, err = identityv1.NewIdentityServiceClient(conn).Revoke(ctx, req)
				return err
			})
			if err != nil {
				return err
			}
			list := revokedList(resp.GetRevoked())
			return render(s.Out, g.output, list, func() string {
				return renderRevoked(list) + "\nThe control plane and every proxy refuse these certificates now. A built-in sidecar holding one stops;\n" +
					"meshctl run's services start again with new certificates, others need a new join token (meshctl cert token).\n"
			})
		},
	}
	cmd.Flags().StringVar(&o.service, "service", "", "revoke every unexpired certificate of this service")
	cmd.Flags().StringVarP(&o.namespace, "namespace", "n", identity.DefaultNamespace, "the service's namespace")
	cmd.Flags().StringVar(&o.id, "id", "", "revoke every unexpired certificate of this SPIFFE ID")
	cmd.Flags().StringVar(&o.reason, "reason", "", "why, for the record (one line)")
	cmd.Flags().StringVar(&o.controlPlane, "controlplane", "", "control plane address (default: the local server)")
	return cmd
}

// --- cert revoked ---

func newCertRevokedCommand(g *globalOptions, s Streams) *cobra.Command {
	var controlPlane string
	var crl bool
	cmd := &cobra.Command{
		Use:   "revoked",
		Short: "List the revoked certificates that have not expired, or print the revocation list in force",
		Args:  cobra.NoArgs,
		Example: `  meshctl cert revoked
  meshctl cert revoked --crl | openssl crl -noout -text`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var resp *identityv1.ListRevokedResponse
			err := withAdmin(cmd.Context(), g, controlPlane, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
				resp, err = identityv1.NewIdentityServiceClient(conn).ListRevoked(ctx, &identityv1.ListRevokedRequest{})
				return err
			})
			if err != nil {
				return err
			}
			if crl {
				if len(resp.GetCrl()) == 0 {
					return errors.New("no certificate is revoked: there is no revocation list")
				}
				_, err := s.Out.Write(resp.GetCrl())
				return err
			}
			list := revokedList(resp.GetRevoked())
			return render(s.Out, g.output, list, func() string { return renderRevoked(list) })
		},
	}
	cmd.Flags().BoolVar(&crl, "crl", false, "print the CA's revocation list (PEM X509 CRL) instead")
	cmd.Flags().StringVar(&controlPlane, "controlplane", "", "control plane address (default: the local server)")
	return cmd
}
