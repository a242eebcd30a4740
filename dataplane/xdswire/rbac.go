package xdswire

import "google.golang.org/protobuf/encoding/protowire"

// RBACFilter is envoy.extensions.filters.http.rbac.v3.RBAC, the HTTP
// filter's config.
type RBACFilter struct {
	Rules       *RBAC   `json:"rules,omitempty"`
	ShadowRules *Unread `json:"shadowRules,omitempty"`
	// Unsupported names a matcher-based rule set (matcher, shadow_matcher).
	Unsupported string `json:"-"`
}

func (m *RBACFilter) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if (f.num == 4 || f.num == 5) && !f.member() {
			return nil
		}
		switch f.num {
		case 1:
			return msg(f, &m.Rules)
		case 2:
			return msg(f, &m.ShadowRules)
		case 4:
			m.Unsupported = "matcher"
		case 5:
			m.Unsupported = "shadow_matcher"
		}
		return nil
	})
}

// RBACAction is envoy.config.rbac.v3.RBAC.Action.
type RBACAction int32

// RBAC actions.
const (
	RBACAllow RBACAction = 0
	RBACDeny  RBACAction = 1
	RBACLog   RBACAction = 2
)

var rbacActionNames = []string{"ALLOW", "DENY", "LOG"}

func (a RBACAction) String() string               { return enumName(rbacActionNames, int32(a)) }
func (a RBACAction) MarshalJSON() ([]byte, error) { return enumJSON(rbacActionNames, int32(a)) }

// RBAC is envoy.config.rbac.v3.RBAC.
type RBAC struct {
	Action   RBACAction         `json:"action,omitempty"`
	Policies map[string]*Policy `json:"policies,omitempty"`
}

func (m *RBAC) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return enum(f, &m.Action)
		case 2:
			return mapEntry(f, &m.Policies)
		}
		return nil
	})
}

// Policy is envoy.config.rbac.v3.Policy.
type Policy struct {
	Permissions []*Permission `json:"permissions,omitempty"`
	Principals  []*Principal  `json:"principals,omitempty"`
	// Unsupported names a condition (CEL), which the proxy does not
	// evaluate: a policy with one is refused rather than matched without it.
	Unsupported string `json:"-"`
}

func (m *Policy) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num >= 3 && f.num <= 5 && !f.member() {
			return nil
		}
		switch f.num {
		case 1:
			return msgs(f, &m.Permissions)
		case 2:
			return msgs(f, &m.Principals)
		case 3:
			m.Unsupported = "condition"
		case 4:
			m.Unsupported = "checked_condition"
		case 5:
			m.Unsupported = "cel_config"
		}
		return nil
	})
}

// Permission is envoy.config.rbac.v3.Permission; one of its rules is set.
type Permission struct {
	AndRules    *PermissionSet `json:"andRules,omitempty"`
	OrRules     *PermissionSet `json:"orRules,omitempty"`
	Any         *bool          `json:"any,omitempty"`
	Header      *HeaderMatcher `json:"header,omitempty"`
	URLPath     *PathMatcher   `json:"urlPath,omitempty"`
	NotRule     *Permission    `json:"notRule,omitempty"`
	Unsupported string         `json:"-"` // another rule
	rule        oneof
}

var permissionRules = map[int]string{5: "destination_ip", 6: "destination_port", 11: "destination_port_range", 7: "metadata",
	9: "requested_server_name", 12: "matcher", 13: "uri_template", 14: "sourced_metadata"}

func (m *Permission) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num <= 14 && !f.member(3, 6) { // any and destination_port are varints
			return nil
		}
		if f.num <= 14 && m.rule.to(f.num) { // every field is the rule oneof's
			*m = Permission{rule: m.rule}
		}
		switch f.num {
		case 1:
			return msg(f, &m.AndRules)
		case 2:
			return msg(f, &m.OrRules)
		case 3:
			return f.boolOpt(&m.Any)
		case 4:
			return msg(f, &m.Header)
		case 10:
			return msg(f, &m.URLPath)
		case 8:
			return msg(f, &m.NotRule)
		}
		if name, ok := permissionRules[int(f.num)]; ok {
			m.Unsupported = name
		}
		return nil
	})
}

// PermissionSet is Permission.Set.
type PermissionSet struct {
	Rules []*Permission `json:"rules,omitempty"`
}

func (m *PermissionSet) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 1 {
			return msgs(f, &m.Rules)
		}
		return nil
	})
}

// Principal is envoy.config.rbac.v3.Principal; one of its identifiers is
// set.
type Principal struct {
	AndIDs        *PrincipalSet  `json:"andIds,omitempty"`
	OrIDs         *PrincipalSet  `json:"orIds,omitempty"`
	Any           *bool          `json:"any,omitempty"`
	Authenticated *Authenticated `json:"authenticated,omitempty"`
	NotID         *Principal     `json:"notId,omitempty"`
	// Metadata matches the request's dynamic metadata (what the jwt_authn
	// filter puts there: a verified token's claims); SourcedMetadata, its
	// successor, names the source.
	Metadata        *MetadataMatcher `json:"metadata,omitempty"`
	SourcedMetadata *SourcedMetadata `json:"sourcedMetadata,omitempty"`
	Unsupported     string           `json:"-"` // another identifier
	identifier      oneof
}

var principalIDs = map[int]string{5: "source_ip", 10: "direct_remote_ip", 11: "remote_ip", 6: "header", 9: "url_path",
	12: "filter_state", 14: "custom"}

func (m *Principal) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num <= 14 && !f.member(3) { // any is a varint
			return nil
		}
		if f.num <= 14 && m.identifier.to(f.num) { // every field is the identifier oneof's
			*m = Principal{identifier: m.identifier}
		}
		switch f.num {
		case 1:
			return msg(f, &m.AndIDs)
		case 2:
			return msg(f, &m.OrIDs)
		case 3:
			return f.boolOpt(&m.Any)
		case 4:
			return msg(f, &m.Authenticated)
		case 8:
			return msg(f, &m.NotID)
		case 7:
			return msg(f, &m.Metadata)
		case 13:
			return msg(f, &m.SourcedMetadata)
		}
		if name, ok := principalIDs[int(f.num)]; ok {
			m.Unsupported = name
		}
		return nil
	})
}

// PrincipalSet is Principal.Set.
type PrincipalSet struct {
	IDs []*Principal `json:"ids,omitempty"`
}

func (m *PrincipalSet) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 1 {
			return msgs(f, &m.IDs)
		}
		return nil
	})
}

// Authenticated is Principal.Authenticated.
type Authenticated struct {
	PrincipalName *StringMatcher `json:"principalName,omitempty"`
}

func (m *Authenticated) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 2 {
			return msg(f, &m.PrincipalName)
		}
		return nil
	})
}

// HeaderMatcher is envoy.config.route.v3.HeaderMatcher; string_match and
// present_match are decoded.
type HeaderMatcher struct {
	Name         string         `json:"name,omitempty"`
	StringMatch  *StringMatcher `json:"stringMatch,omitempty"`
	PresentMatch *bool          `json:"presentMatch,omitempty"`
	RangeMatch   *Int64Range    `json:"rangeMatch,omitempty"`
	// The deprecated specifiers string_match replaced (Envoy still reads
	// them): case-sensitive.
	ExactMatch     *string       `json:"exactMatch,omitempty"`
	PrefixMatch    *string       `json:"prefixMatch,omitempty"`
	SuffixMatch    *string       `json:"suffixMatch,omitempty"`
	ContainsMatch  *string       `json:"containsMatch,omitempty"`
	SafeRegexMatch *RegexMatcher `json:"safeRegexMatch,omitempty"`
	InvertMatch    bool          `json:"invertMatch,omitempty"`
	// TreatMissingAsEmpty: a missing header is matched as an empty one
	// (else only a presence rule can match it).
	TreatMissingAsEmpty bool `json:"treatMissingHeaderAsEmpty,omitempty"`
	specifier           oneof
}

var headerMatchers = map[int]string{4: "exact_match", 11: "safe_regex_match", 6: "range_match", 9: "prefix_match",
	10: "suffix_match", 12: "contains_match"}

func (m *HeaderMatcher) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		_, other := headerMatchers[int(f.num)]
		inOneof := other || f.num == 13 || f.num == 7
		if inOneof && !f.member(7) { // present_match is a varint
			return nil
		}
		if inOneof && m.specifier.to(f.num) {
			m.StringMatch, m.PresentMatch, m.RangeMatch = nil, nil, nil
			m.ExactMatch, m.PrefixMatch, m.SuffixMatch, m.ContainsMatch, m.SafeRegexMatch = nil, nil, nil, nil, nil
		}
		switch f.num {
		case 1:
			return f.str(&m.Name)
		case 13:
			return msg(f, &m.StringMatch)
		case 7:
			return f.boolOpt(&m.PresentMatch)
		case 6:
			return msg(f, &m.RangeMatch)
		case 4:
			return f.strOpt(&m.ExactMatch)
		case 9:
			return f.strOpt(&m.PrefixMatch)
		case 10:
			return f.strOpt(&m.SuffixMatch)
		case 12:
			return f.strOpt(&m.ContainsMatch)
		case 11:
			return msg(f, &m.SafeRegexMatch)
		case 8:
			return f.boolean(&m.InvertMatch)
		case 14:
			return f.boolean(&m.TreatMissingAsEmpty)
		}
		return nil
	})
}

// Int64Range is envoy.type.v3.Int64Range: [Start, End).
type Int64Range struct {
	Start int64 `json:"start,string,omitempty"`
	End   int64 `json:"end,string,omitempty"`
}

func (m *Int64Range) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if (f.num == 1 || f.num == 2) && f.typ == protowire.VarintType {
			v := int64(f.u) // int64 is a plain varint, two's complement
			if f.num == 1 {
				m.Start = v
			} else {
				m.End = v
			}
		}
		return nil
	})
}

// PathMatcher is envoy.type.matcher.v3.PathMatcher.
type PathMatcher struct {
	Path *StringMatcher `json:"path,omitempty"`
}

func (m *PathMatcher) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 1 {
			return msg(f, &m.Path)
		}
		return nil
	})
}

// StringMatcher is envoy.type.matcher.v3.StringMatcher; one pattern is set.
type StringMatcher struct {
	Exact       *string       `json:"exact,omitempty"`
	Prefix      *string       `json:"prefix,omitempty"`
	Suffix      *string       `json:"suffix,omitempty"`
	SafeRegex   *RegexMatcher `json:"safeRegex,omitempty"`
	Contains    *string       `json:"contains,omitempty"`
	IgnoreCase  bool          `json:"ignoreCase,omitempty"`
	Unsupported string        `json:"-"` // custom
	pattern     oneof
}

func (m *StringMatcher) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		inOneof := f.num != 6 && f.num <= 8 // all but ignore_case
		if inOneof && !f.member() {
			return nil
		}
		if inOneof && m.pattern.to(f.num) {
			m.Exact, m.Prefix, m.Suffix, m.SafeRegex, m.Contains, m.Unsupported = nil, nil, nil, nil, nil, ""
		}
		switch f.num {
		case 1:
			return f.strOpt(&m.Exact)
		case 2:
			return f.strOpt(&m.Prefix)
		case 3:
			return f.strOpt(&m.Suffix)
		case 5:
			return msg(f, &m.SafeRegex)
		case 7:
			return f.strOpt(&m.Contains)
		case 6:
			return f.boolean(&m.IgnoreCase)
		case 8:
			m.Unsupported = "custom"
		}
		return nil
	})
}

// RegexMatcher is envoy.type.matcher.v3.RegexMatcher.
type RegexMatcher struct {
	Regex string `json:"regex,omitempty"`
}

func (m *RegexMatcher) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 2 {
			return f.str(&m.Regex)
		}
		return nil
	})
}

// SourcedMetadata is envoy.config.rbac.v3.SourcedMetadata: a metadata
// matcher and where the metadata comes from.
type SourcedMetadata struct {
	MetadataMatcher *MetadataMatcher `json:"metadataMatcher,omitempty"`
	MetadataSource  MetadataSource   `json:"metadataSource,omitempty"`
}

func (m *SourcedMetadata) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return msg(f, &m.MetadataMatcher)
		case 2:
			return enum(f, &m.MetadataSource)
		}
		return nil
	})
}

// MetadataSource is envoy.config.rbac.v3.MetadataSource.
type MetadataSource int32

// Metadata sources: the request's dynamic metadata, or its route's.
const (
	MetadataDynamic MetadataSource = 0
	MetadataRoute   MetadataSource = 1
)

var metadataSourceNames = []string{"DYNAMIC", "ROUTE"}

func (s MetadataSource) String() string               { return enumName(metadataSourceNames, int32(s)) }
func (s MetadataSource) MarshalJSON() ([]byte, error) { return enumJSON(metadataSourceNames, int32(s)) }

// MetadataMatcher is envoy.type.matcher.v3.MetadataMatcher: the value at
// a path of keys in one filter's metadata.
type MetadataMatcher struct {
	Filter string         `json:"filter,omitempty"`
	Path   []*PathSegment `json:"path,omitempty"`
	Value  *ValueMatcher  `json:"value,omitempty"`
	Invert bool           `json:"invert,omitempty"`
}

func (m *MetadataMatcher) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&m.Filter)
		case 2:
			return msgs(f, &m.Path)
		case 3:
			return msg(f, &m.Value)
		case 4:
			return f.boolean(&m.Invert)
		}
		return nil
	})
}

// PathSegment is MetadataMatcher.PathSegment: a key.
type PathSegment struct {
	Key string `json:"key,omitempty"`
}

func (m *PathSegment) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 1 {
			return f.str(&m.Key)
		}
		return nil
	})
}

// ValueMatcher is envoy.type.matcher.v3.ValueMatcher; one of its kinds is
// set. The proxy matches strings, booleans, presence, lists and ors of
// them; a null or double matcher is named in Unsupported.
type ValueMatcher struct {
	StringMatch  *StringMatcher    `json:"stringMatch,omitempty"`
	BoolMatch    *bool             `json:"boolMatch,omitempty"`
	PresentMatch *bool             `json:"presentMatch,omitempty"`
	ListMatch    *ListMatcher      `json:"listMatch,omitempty"`
	OrMatch      *ValueMatcherList `json:"orMatch,omitempty"`
	Unsupported  string            `json:"-"`
	kind         oneof
}

func (m *ValueMatcher) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num > 7 || !f.member(4, 5) {
			return nil
		}
		if m.kind.to(f.num) {
			*m = ValueMatcher{kind: m.kind}
		}
		switch f.num {
		case 3:
			return msg(f, &m.StringMatch)
		case 4:
			return f.boolOpt(&m.BoolMatch)
		case 5:
			return f.boolOpt(&m.PresentMatch)
		case 6:
			return msg(f, &m.ListMatch)
		case 7:
			return msg(f, &m.OrMatch)
		case 1:
			m.Unsupported = "null_match"
		case 2:
			m.Unsupported = "double_match"
		}
		return nil
	})
}

// ListMatcher is envoy.type.matcher.v3.ListMatcher: a list holding a
// value the matcher matches.
type ListMatcher struct {
	OneOf *ValueMatcher `json:"oneOf,omitempty"`
}

func (m *ListMatcher) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 1 {
			return msg(f, &m.OneOf)
		}
		return nil
	})
}

// ValueMatcherList is ValueMatcher.OrMatcher.
type ValueMatcherList struct {
	ValueMatchers []*ValueMatcher `json:"valueMatchers,omitempty"`
}

func (m *ValueMatcherList) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 1 {
			return msgs(f, &m.ValueMatchers)
		}
		return nil
	})
}
