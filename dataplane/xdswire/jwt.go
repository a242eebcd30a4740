package xdswire

import "google.golang.org/protobuf/encoding/protowire"

// JWTAuthentication is envoy.extensions.filters.http.jwt_authn.v3.
// JwtAuthentication, the jwt_authn HTTP filter's config: providers of
// tokens and the rules saying which requests need which.
type JWTAuthentication struct {
	Providers map[string]*JWTProvider `json:"providers,omitempty"`
	Rules     []*RequirementRule      `json:"rules,omitempty"`
	// Refused names the first field set that the proxy does not apply
	// (filter_state_rules).
	Refused string `json:"-"`
}

func (m *JWTAuthentication) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		refuseSet(f, &m.Refused, map[protowire.Number]string{3: "filter_state_rules"})
		switch f.num {
		case 1:
			return mapEntry(f, &m.Providers)
		case 2:
			return msgs(f, &m.Rules)
		}
		return nil
	})
}

// JWTProvider is jwt_authn's JwtProvider: who issues tokens, their keys,
// where requests carry them and where their claims go.
type JWTProvider struct {
	Issuer            string       `json:"issuer,omitempty"`
	Audiences         []string     `json:"audiences,omitempty"`
	LocalJWKS         *DataSource  `json:"localJwks,omitempty"`
	Forward           bool         `json:"forward,omitempty"`
	FromHeaders       []*JWTHeader `json:"fromHeaders,omitempty"`
	PayloadInMetadata string       `json:"payloadInMetadata,omitempty"`
	ClockSkewSeconds  *uint32      `json:"clockSkewSeconds,omitempty"`
	// Refused names the first field set that the proxy does not apply:
	// keys fetched from a URL, tokens from query parameters or cookies,
	// claims copied to headers, …
	Refused string `json:"-"`
}

var jwtProviderRefused = map[protowire.Number]string{
	7: "from_params", 13: "from_cookies", 8: "forward_payload_header", 14: "header_in_metadata",
	15: "claim_to_headers", 16: "failed_status_in_metadata", 17: "clear_route_cache", 18: "normalize_payload_in_metadata",
	19: "subjects", 20: "require_expiration", 21: "max_lifetime",
}

func (m *JWTProvider) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if (f.num == 3 || f.num == 4) && !f.member() {
			return nil
		}
		refuseSet(f, &m.Refused, jwtProviderRefused)
		switch f.num {
		case 1:
			return f.str(&m.Issuer)
		case 2:
			return f.strs(&m.Audiences)
		case 3: // the other JWKS source: set, even empty
			m.LocalJWKS = nil
			if m.Refused == "" {
				m.Refused = "remote_jwks"
			}
		case 4:
			if m.Refused == "remote_jwks" {
				m.Refused = "" // the last alternative on the wire is the one set
			}
			return msg(f, &m.LocalJWKS)
		case 5:
			return f.boolean(&m.Forward)
		case 6:
			return msgs(f, &m.FromHeaders)
		case 9:
			return f.str(&m.PayloadInMetadata)
		case 10:
			if err := f.want(protowire.VarintType); err != nil {
				return err
			}
			v := uint32(f.u)
			m.ClockSkewSeconds = &v
		}
		return nil
	})
}

// JWTHeader is jwt_authn's JwtHeader: a header carrying the token after
// a prefix ("Bearer ").
type JWTHeader struct {
	Name        string `json:"name,omitempty"`
	ValuePrefix string `json:"valuePrefix,omitempty"`
}

func (m *JWTHeader) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&m.Name)
		case 2:
			return f.str(&m.ValuePrefix)
		}
		return nil
	})
}

// RequirementRule is jwt_authn's RequirementRule: the requests a route
// match selects need the requirement.
type RequirementRule struct {
	Match    *RouteMatch     `json:"match,omitempty"`
	Requires *JWTRequirement `json:"requires,omitempty"`
	// RequirementName names one of the filter's requirement_map (not
	// applied: Unsupported).
	RequirementName string `json:"requirementName,omitempty"`
}

func (m *RequirementRule) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return msg(f, &m.Match)
		case 2:
			if !f.member() {
				return nil
			}
			m.RequirementName = ""
			return msg(f, &m.Requires)
		case 3:
			if !f.member() {
				return nil
			}
			m.Requires = nil
			return f.str(&m.RequirementName)
		}
		return nil
	})
}

// JWTRequirement is jwt_authn's JwtRequirement; one of its kinds is set.
type JWTRequirement struct {
	ProviderName         *string             `json:"providerName,omitempty"`
	RequiresAny          *JWTRequirementList `json:"requiresAny,omitempty"`
	RequiresAll          *JWTRequirementList `json:"requiresAll,omitempty"`
	AllowMissingOrFailed *Unread             `json:"allowMissingOrFailed,omitempty"`
	AllowMissing         *Unread             `json:"allowMissing,omitempty"`
	Unsupported          string              `json:"-"` // provider_and_audiences, extract_only_without_validation
	kind                 oneof
}

func (m *JWTRequirement) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num > 7 || !f.member() {
			return nil
		}
		if m.kind.to(f.num) {
			*m = JWTRequirement{kind: m.kind}
		}
		switch f.num {
		case 1:
			return f.strOpt(&m.ProviderName)
		case 3:
			return msg(f, &m.RequiresAny)
		case 4:
			return msg(f, &m.RequiresAll)
		case 5:
			return msg(f, &m.AllowMissingOrFailed)
		case 6:
			return msg(f, &m.AllowMissing)
		case 2:
			m.Unsupported = "provider_and_audiences"
		case 7:
			m.Unsupported = "extract_only_without_validation"
		}
		return nil
	})
}

// JWTRequirementList is JwtRequirementOrList and JwtRequirementAndList.
type JWTRequirementList struct {
	Requirements []*JWTRequirement `json:"requirements,omitempty"`
}

func (m *JWTRequirementList) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 1 {
			return msgs(f, &m.Requirements)
		}
		return nil
	})
}
