package xdswire

import "google.golang.org/protobuf/encoding/protowire"

// DownstreamTLSContext is envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext.
type DownstreamTLSContext struct {
	CommonTLSContext         *CommonTLSContext `json:"commonTlsContext,omitempty"`
	RequireClientCertificate *bool             `json:"requireClientCertificate,omitempty"`
	// Refused: require_sni when true (Envoy would end handshakes without
	// SNI; the proxy does not look at it).
	Refused string `json:"-"`
}

func (m *DownstreamTLSContext) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return msg(f, &m.CommonTLSContext)
		case 2:
			return f.boolValue(&m.RequireClientCertificate)
		case 3:
			return refuseTrue(f, &m.Refused, "require_sni")
		}
		return nil
	})
}

// UpstreamTLSContext is envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext.
type UpstreamTLSContext struct {
	CommonTLSContext *CommonTLSContext `json:"commonTlsContext,omitempty"`
	SNI              string            `json:"sni,omitempty"`
}

func (m *UpstreamTLSContext) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return msg(f, &m.CommonTLSContext)
		case 2:
			return f.str(&m.SNI)
		}
		return nil
	})
}

// QUICDownstreamTransport is envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport.
type QUICDownstreamTransport struct {
	DownstreamTLSContext *DownstreamTLSContext `json:"downstreamTlsContext,omitempty"`
}

func (m *QUICDownstreamTransport) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 1 {
			return msg(f, &m.DownstreamTLSContext)
		}
		return nil
	})
}

// QUICUpstreamTransport is envoy.extensions.transport_sockets.quic.v3.QuicUpstreamTransport.
type QUICUpstreamTransport struct {
	UpstreamTLSContext *UpstreamTLSContext `json:"upstreamTlsContext,omitempty"`
}

func (m *QUICUpstreamTransport) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 1 {
			return msg(f, &m.UpstreamTLSContext)
		}
		return nil
	})
}

// CommonTLSContext is envoy.extensions.transport_sockets.tls.v3.CommonTlsContext.
type CommonTLSContext struct {
	TLSParams *TLSParameters `json:"tlsParams,omitempty"`
	// TLSCertificates are inline certificates (the proxy refuses them).
	TLSCertificates                  []*Unread                  `json:"tlsCertificates,omitempty"`
	TLSCertificateSDSSecretConfigs   []*SDSSecretConfig         `json:"tlsCertificateSdsSecretConfigs,omitempty"`
	ValidationContextSDSSecretConfig *SDSSecretConfig           `json:"validationContextSdsSecretConfig,omitempty"`
	CombinedValidationContext        *CombinedValidationContext `json:"combinedValidationContext,omitempty"`
	// ValidationContext is an inline one (a cluster to a service outside
	// the mesh: its own roots and DNS name).
	ValidationContext *CertificateValidationContext `json:"validationContext,omitempty"`
	ALPNProtocols     []string                      `json:"alpnProtocols,omitempty"`
	// Unsupported names another validation context than these three.
	Unsupported string `json:"-"`
	// Refused names the first other way of getting certificates or doing
	// the handshake that is set (certificate providers, custom
	// handshakers and selectors, key logging).
	Refused    string `json:"-"`
	validation oneof
}

var commonTLSRefused = map[protowire.Number]string{
	9: "tls_certificate_certificate_provider", 11: "tls_certificate_certificate_provider_instance",
	14: "tls_certificate_provider_instance", 16: "custom_tls_certificate_selector",
	13: "custom_handshaker", 15: "key_log",
}

func (m *CommonTLSContext) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 3, 7, 8, 10, 12:
			if !f.member() {
				return nil
			}
			if m.validation.to(f.num) {
				m.ValidationContextSDSSecretConfig, m.CombinedValidationContext, m.ValidationContext, m.Unsupported = nil, nil, nil, ""
			}
		}
		switch f.num {
		case 1:
			return msg(f, &m.TLSParams)
		case 2:
			return msgs(f, &m.TLSCertificates)
		case 6:
			return msgs(f, &m.TLSCertificateSDSSecretConfigs)
		case 7:
			return msg(f, &m.ValidationContextSDSSecretConfig)
		case 8:
			return msg(f, &m.CombinedValidationContext)
		case 4:
			return f.strs(&m.ALPNProtocols)
		case 3:
			return msg(f, &m.ValidationContext)
		case 10:
			m.Unsupported = "validation_context_certificate_provider"
		case 12:
			m.Unsupported = "validation_context_certificate_provider_instance"
		}
		refuseSet(f, &m.Refused, commonTLSRefused)
		return nil
	})
}

// TLSVersion is TlsParameters.TlsProtocol.
type TLSVersion int32

// TLS versions.
const (
	TLSAuto TLSVersion = 0
	TLSv1_2 TLSVersion = 3
	TLSv1_3 TLSVersion = 4
)

var tlsVersionNames = []string{"TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3"}

func (v TLSVersion) String() string               { return enumName(tlsVersionNames, int32(v)) }
func (v TLSVersion) MarshalJSON() ([]byte, error) { return enumJSON(tlsVersionNames, int32(v)) }

// TLSParameters is envoy.extensions.transport_sockets.tls.v3.TlsParameters.
type TLSParameters struct {
	MinimumVersion      TLSVersion `json:"tlsMinimumProtocolVersion,omitempty"`
	MaximumVersion      TLSVersion `json:"tlsMaximumProtocolVersion,omitempty"`
	CipherSuites        []string   `json:"cipherSuites,omitempty"`
	ECDHCurves          []string   `json:"ecdhCurves,omitempty"`
	SignatureAlgorithms []string   `json:"signatureAlgorithms,omitempty"`
}

func (m *TLSParameters) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return enum(f, &m.MinimumVersion)
		case 2:
			return enum(f, &m.MaximumVersion)
		case 3:
			return f.strs(&m.CipherSuites)
		case 4:
			return f.strs(&m.ECDHCurves)
		case 5:
			return f.strs(&m.SignatureAlgorithms)
		}
		return nil
	})
}

// SDSSecretConfig is envoy.extensions.transport_sockets.tls.v3.SdsSecretConfig.
type SDSSecretConfig struct {
	Name string `json:"name,omitempty"`
}

func (m *SDSSecretConfig) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 1 {
			return f.str(&m.Name)
		}
		return nil
	})
}

// CombinedValidationContext is CommonTlsContext.CombinedCertificateValidationContext.
type CombinedValidationContext struct {
	DefaultValidationContext         *CertificateValidationContext `json:"defaultValidationContext,omitempty"`
	ValidationContextSDSSecretConfig *SDSSecretConfig              `json:"validationContextSdsSecretConfig,omitempty"`
}

func (m *CombinedValidationContext) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return msg(f, &m.DefaultValidationContext)
		case 2:
			return msg(f, &m.ValidationContextSDSSecretConfig)
		}
		return nil
	})
}

// CertificateValidationContext is envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext.
type CertificateValidationContext struct {
	TrustedCA                 *DataSource              `json:"trustedCa,omitempty"`
	MatchTypedSubjectAltNames []*SubjectAltNameMatcher `json:"matchTypedSubjectAltNames,omitempty"`
	// CRL is the certificate revocation list peers' leaves are checked
	// against; the proxy takes one only with OnlyVerifyLeafCertCRL
	// (without it Envoy wants a list for every CA of the chain).
	CRL                   *DataSource `json:"crl,omitempty"`
	OnlyVerifyLeafCertCRL bool        `json:"onlyVerifyLeafCertCrl,omitempty"`
	// SystemRootCerts, when set, trusts the host's roots (a cluster to a
	// service outside the mesh).
	SystemRootCerts *SystemRootCerts `json:"systemRootCerts,omitempty"`
	// Refused names the first other check set: each would make Envoy
	// accept fewer peers (pinned hashes, the deprecated SAN matchers, a
	// depth limit, a custom validator, other roots) or more (expired or
	// untrusted certificates) than the proxy does.
	Refused string `json:"-"`
}

var validationRefused = map[protowire.Number]string{
	2: "verify_certificate_hash", 3: "verify_certificate_spki", 9: "match_subject_alt_names",
	12: "custom_validator_config", 13: "ca_certificate_provider_instance", 16: "max_verify_depth",
	8: "allow_expired_certificate", 10: "trust_chain_verification",
}

func (m *CertificateValidationContext) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return msg(f, &m.TrustedCA)
		case 15:
			return msgs(f, &m.MatchTypedSubjectAltNames)
		case 7:
			return msg(f, &m.CRL)
		case 14:
			return f.boolean(&m.OnlyVerifyLeafCertCRL)
		case 17:
			return msg(f, &m.SystemRootCerts)
		case 6:
			return refuseTrue(f, &m.Refused, "require_signed_certificate_timestamp")
		}
		refuseSet(f, &m.Refused, validationRefused)
		return nil
	})
}

// SystemRootCerts is CertificateValidationContext.SystemRootCerts (no
// fields).
type SystemRootCerts struct{}

func (m *SystemRootCerts) unmarshal([]byte) error { return nil }

// SANType is SubjectAltNameMatcher.SanType.
type SANType int32

// SAN types.
const (
	SANUnspecified SANType = 0
	SANEmail       SANType = 1
	SANDNS         SANType = 2
	SANURI         SANType = 3
	SANIPAddress   SANType = 4
	SANOtherName   SANType = 5
)

var sanTypeNames = []string{"SAN_TYPE_UNSPECIFIED", "EMAIL", "DNS", "URI", "IP_ADDRESS", "OTHER_NAME"}

func (t SANType) String() string               { return enumName(sanTypeNames, int32(t)) }
func (t SANType) MarshalJSON() ([]byte, error) { return enumJSON(sanTypeNames, int32(t)) }

// SubjectAltNameMatcher is envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher.
type SubjectAltNameMatcher struct {
	SANType SANType        `json:"sanType,omitempty"`
	Matcher *StringMatcher `json:"matcher,omitempty"`
}

func (m *SubjectAltNameMatcher) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return enum(f, &m.SANType)
		case 2:
			return msg(f, &m.Matcher)
		}
		return nil
	})
}

// DataSource is envoy.config.core.v3.DataSource.
type DataSource struct {
	Filename     string `json:"filename,omitempty"`
	InlineBytes  []byte `json:"inlineBytes,omitempty"`
	InlineString string `json:"inlineString,omitempty"`
	specifier    oneof
}

func (m *DataSource) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num <= 4 && !f.member() {
			return nil
		}
		if f.num <= 4 && m.specifier.to(f.num) {
			m.Filename, m.InlineBytes, m.InlineString = "", nil, ""
		}
		switch f.num {
		case 1:
			return f.str(&m.Filename)
		case 2:
			return f.bytes(&m.InlineBytes)
		case 3:
			return f.str(&m.InlineString)
		}
		return nil
	})
}

// Secret is envoy.extensions.transport_sockets.tls.v3.Secret.
type Secret struct {
	Name              string                        `json:"name,omitempty"`
	TLSCertificate    *TLSCertificate               `json:"tlsCertificate,omitempty"`
	ValidationContext *CertificateValidationContext `json:"validationContext,omitempty"`
	Unsupported       string                        `json:"-"` // session_ticket_keys, generic_secret
	typ               oneof
}

func (m *Secret) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num >= 2 && f.num <= 5 && !f.member() {
			return nil
		}
		if f.num >= 2 && f.num <= 5 && m.typ.to(f.num) {
			m.TLSCertificate, m.ValidationContext, m.Unsupported = nil, nil, ""
		}
		switch f.num {
		case 1:
			return f.str(&m.Name)
		case 2:
			return msg(f, &m.TLSCertificate)
		case 4:
			return msg(f, &m.ValidationContext)
		case 3:
			m.Unsupported = "session_ticket_keys"
		case 5:
			m.Unsupported = "generic_secret"
		}
		return nil
	})
}

// TLSCertificate is envoy.extensions.transport_sockets.tls.v3.TlsCertificate.
type TLSCertificate struct {
	CertificateChain *DataSource       `json:"certificateChain,omitempty"`
	PrivateKey       *DataSource       `json:"privateKey,omitempty"`
	WatchedDirectory *WatchedDirectory `json:"watchedDirectory,omitempty"`
	// Refused names the first other source or use of the key set (a
	// password, a PKCS#12 file, a private key provider, OCSP stapling,
	// SCTs).
	Refused string `json:"-"`
}

var tlsCertificateRefused = map[protowire.Number]string{
	3: "password", 6: "private_key_provider", 8: "pkcs12", 4: "ocsp_staple", 5: "signed_certificate_timestamp",
}

func (m *TLSCertificate) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return msg(f, &m.CertificateChain)
		case 2:
			return msg(f, &m.PrivateKey)
		case 7:
			return msg(f, &m.WatchedDirectory)
		}
		refuseSet(f, &m.Refused, tlsCertificateRefused)
		return nil
	})
}

// WatchedDirectory is envoy.config.core.v3.WatchedDirectory.
type WatchedDirectory struct {
	Path string `json:"path,omitempty"`
}

func (m *WatchedDirectory) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 1 {
			return f.str(&m.Path)
		}
		return nil
	})
}
