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

// rootSecret is the trust bundle, inline (it is public).
func (b *builder) rootSecret() *tlsv3.Secret {
	return &tlsv3.Secret{
		Name: RootSecret,
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: b.mesh.Roots}},
		}},
	}
}
