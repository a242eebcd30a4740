package xds

import (
	"path"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// certSecret is the proxy's certificate. The key never crosses the wire:
// the secret names files in the proxy's certificate directory, which its
// agent keeps renewed, and Envoy reloads them when the directory changes.
func (b *builder) certSecret() *tlsv3.Secret {
	dir := b.proxy.CertDir
	return &tlsv3.Secret{
		Name: CertSecret,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &core.DataSource{Specifier: &core.DataSource_Filename{Filename: path.Join(dir, "cert.pem")}},
			PrivateKey:       &core.DataSource{Specifier: &core.DataSource_Filename{Filename: path.Join(dir, "key.pem")}},
			WatchedDirectory: &core.WatchedDirectory{Path: dir},
		}},
	}
}

// rootSecret is the trust bundle, inline (it is public), with the CA's
// revocation list when it has one. The list is the intermediate's, and
// proxies get no list for the root: Envoy then checks only the leaf
// against it (only_verify_leaf_cert_crl), as the built-in sidecar does.
func (b *builder) rootSecret() *tlsv3.Secret {
	vc := &tlsv3.CertificateValidationContext{
		TrustedCa: &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: b.mesh.Roots}},
	}
	if len(b.mesh.Revocations) > 0 {
		vc.Crl = &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: b.mesh.Revocations}}
		vc.OnlyVerifyLeafCertCrl = true
	}
	return &tlsv3.Secret{
		Name: RootSecret,
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: vc},
	}
}
