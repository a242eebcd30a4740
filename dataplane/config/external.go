package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"

	"github.com/micromesh/micromesh/dataplane/xdswire"
)

// setExternal reads the transport of a LOGICAL_DNS cluster (its HTTP
// protocol options already read by setTransport): a service outside the
// mesh, reached over TLS as Envoy would (the control plane's
// externalCluster): SNI, one exact DNS SAN matcher equal to it, roots
// inline or the system's, no client certificate, HTTP/1.1 — or HTTP/2
// (ALPN h2) for a gRPC service. Anything else is refused rather than read
// as something weaker: without a SAN matcher Envoy would take any
// certificate its roots sign.
func (c *Cluster) setExternal(cl *xdswire.Cluster) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("cluster %s (outside the mesh): %s", cl.Name, fmt.Sprintf(format, args...))
	}
	ts := cl.TransportSocket
	if ts == nil || typeURL(ts.TypedConfig) != xdswire.UpstreamTLSType {
		return bad("it must be reached over TLS (an UpstreamTlsContext transport socket)")
	}
	up, err := typed[*xdswire.UpstreamTLSContext](ts.TypedConfig, xdswire.UpstreamTLSType)
	if err != nil {
		return bad("%v", err)
	}
	ctc := up.CommonTLSContext
	switch {
	case up.SNI == "":
		return bad("it needs sni, the server's name")
	case ctc == nil || ctc.ValidationContext == nil:
		return bad("it needs an inline validation_context (roots and the server's DNS name)")
	case ctc.Refused != "":
		return bad("%s is not supported", ctc.Refused)
	case len(ctc.TLSCertificates) != 0 || len(ctc.TLSCertificateSDSSecretConfigs) != 0:
		return bad("the proxy presents no certificate outside the mesh")
	}
	alpn := "http/1.1"
	if c.HTTP2 {
		alpn = "h2"
	}
	for _, p := range ctc.ALPNProtocols {
		if p != alpn {
			return bad("ALPN %q does not fit the cluster's protocol (%s)", p, alpn)
		}
	}
	ext := &ExternalTLS{ServerName: up.SNI, MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13}
	if p := ctc.TLSParams; p != nil {
		if len(p.ECDHCurves) > 0 || len(p.SignatureAlgorithms) > 0 || len(p.CipherSuites) > 0 {
			return bad("tls_params curves, signature algorithms and cipher suites are not supported (the proxy offers Go's)")
		}
		if p.MinimumVersion == xdswire.TLSv1_3 {
			ext.MinVersion = tls.VersionTLS13
		} else if p.MinimumVersion != xdswire.TLSAuto && p.MinimumVersion != xdswire.TLSv1_2 {
			return bad("minimum TLS version %v is not supported (TLSv1_2 or TLSv1_3)", p.MinimumVersion)
		}
		if p.MaximumVersion == xdswire.TLSv1_2 {
			ext.MaxVersion = tls.VersionTLS12
		} else if p.MaximumVersion != xdswire.TLSAuto && p.MaximumVersion != xdswire.TLSv1_3 {
			return bad("maximum TLS version %v is not supported (TLSv1_2 or TLSv1_3)", p.MaximumVersion)
		}
		if ext.MinVersion > ext.MaxVersion {
			return bad("minimum TLS version above the maximum")
		}
	}
	v := ctc.ValidationContext
	if v.Refused != "" {
		return bad("certificate check %s is not supported", v.Refused)
	}
	if v.CRL != nil || v.OnlyVerifyLeafCertCRL {
		return bad("a revocation list is not supported")
	}
	sans := v.MatchTypedSubjectAltNames
	if len(sans) != 1 || sans[0].SANType != xdswire.SANDNS || sans[0].Matcher == nil || sans[0].Matcher.Exact == nil || *sans[0].Matcher.Exact != up.SNI || sans[0].Matcher.IgnoreCase {
		return bad("the server must be matched by exactly one exact DNS SAN, its sni %q", up.SNI)
	}
	switch {
	case v.TrustedCA != nil && v.SystemRootCerts != nil:
		return bad("trusted_ca and system_root_certs together are not supported")
	case v.TrustedCA != nil:
		roots := v.TrustedCA.InlineBytes
		if len(roots) == 0 {
			roots = []byte(v.TrustedCA.InlineString)
		}
		if len(roots) == 0 {
			return bad("trusted_ca must be inline (or system_root_certs)")
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(roots) {
			return bad("trusted_ca holds no PEM certificate")
		}
		ext.RootsPEM, ext.Roots = roots, pool
	case v.SystemRootCerts == nil:
		return bad("it needs trusted_ca or system_root_certs")
	}
	c.Transport, c.External = TransportExternal, ext
	return nil
}
