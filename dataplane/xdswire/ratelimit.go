package xdswire

import (
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
)

// LocalRateLimit is envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit:
// a token bucket the listener's requests draw from.
type LocalRateLimit struct {
	StatPrefix     string                    `json:"statPrefix,omitempty"`
	Status         *HTTPStatus               `json:"status,omitempty"`
	TokenBucket    *TokenBucket              `json:"tokenBucket,omitempty"`
	FilterEnabled  *RuntimeFractionalPercent `json:"filterEnabled,omitempty"`
	FilterEnforced *RuntimeFractionalPercent `json:"filterEnforced,omitempty"`
	// RateLimitedAsResourceExhausted answers gRPC callers
	// RESOURCE_EXHAUSTED instead of UNAVAILABLE (which callers retry).
	RateLimitedAsResourceExhausted bool `json:"rateLimitedAsResourceExhausted,omitempty"`
	// Refused names the first field set that the proxy does not do:
	// descriptors, per-connection buckets, headers to add, a shared
	// cluster-wide limit, rate-limit headers, Retry-After…
	Refused string `json:"-"`
}

var localRateLimitRefused = map[protowire.Number]string{
	10: "request_headers_to_add_when_not_enforced", 6: "response_headers_to_add", 8: "descriptors",
	9: "stage", 11: "local_rate_limit_per_downstream_connection", 16: "local_cluster_rate_limit",
	12: "enable_x_ratelimit_headers", 13: "vh_rate_limits", 17: "rate_limits", 18: "max_dynamic_descriptors", 19: "enable_retry_after_header",
}

func (m *LocalRateLimit) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.str(&m.StatPrefix)
		case 2:
			return msg(f, &m.Status)
		case 3:
			return msg(f, &m.TokenBucket)
		case 4:
			return msg(f, &m.FilterEnabled)
		case 5:
			return msg(f, &m.FilterEnforced)
		case 15:
			return f.boolean(&m.RateLimitedAsResourceExhausted)
		}
		if f.num == 14 { // a BoolValue: false is the default
			return refuseTrue(f, &m.Refused, "always_consume_default_token_bucket")
		}
		refuseSet(f, &m.Refused, localRateLimitRefused)
		return nil
	})
}

// HTTPStatus is envoy.type.v3.HttpStatus.
type HTTPStatus struct {
	Code StatusCode `json:"code,omitempty"`
}

// StatusCode is envoy.type.v3.StatusCode: the HTTP status itself.
type StatusCode int32

// statusNames are the enum's names of the statuses a proxy answers with,
// for /config_dump (protobuf JSON writes enum values by name).
var statusNames = map[StatusCode]string{
	400: "BadRequest", 401: "Unauthorized", 402: "PaymentRequired", 403: "Forbidden", 404: "NotFound",
	405: "MethodNotAllowed", 406: "NotAcceptable", 407: "ProxyAuthenticationRequired", 408: "RequestTimeout",
	409: "Conflict", 410: "Gone", 411: "LengthRequired", 412: "PreconditionFailed", 413: "PayloadTooLarge",
	414: "URITooLong", 415: "UnsupportedMediaType", 416: "RangeNotSatisfiable", 417: "ExpectationFailed",
	421: "MisdirectedRequest", 422: "UnprocessableEntity", 423: "Locked", 424: "FailedDependency",
	426: "UpgradeRequired", 428: "PreconditionRequired", 429: "TooManyRequests", 431: "RequestHeaderFieldsTooLarge",
	500: "InternalServerError", 501: "NotImplemented", 502: "BadGateway", 503: "ServiceUnavailable",
	504: "GatewayTimeout", 505: "HTTPVersionNotSupported", 506: "VariantAlsoNegotiates", 507: "InsufficientStorage",
	508: "LoopDetected", 510: "NotExtended", 511: "NetworkAuthenticationRequired",
}

func (c StatusCode) MarshalJSON() ([]byte, error) {
	if n, ok := statusNames[c]; ok {
		return []byte(`"` + n + `"`), nil
	}
	return []byte(strconv.Itoa(int(c))), nil
}

func (m *HTTPStatus) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 1 {
			return enum(f, &m.Code)
		}
		return nil
	})
}

// TokenBucket is envoy.type.v3.TokenBucket: max_tokens, refilled by
// tokens_per_fill (1 when unset) every fill_interval.
type TokenBucket struct {
	MaxTokens     uint32    `json:"maxTokens,omitempty"`
	TokensPerFill *uint32   `json:"tokensPerFill,omitempty"`
	FillInterval  *Duration `json:"fillInterval,omitempty"`
}

func (m *TokenBucket) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.uint32(&m.MaxTokens)
		case 2:
			return f.uint32Value(&m.TokensPerFill)
		case 3:
			return f.duration(&m.FillInterval)
		}
		return nil
	})
}

// RuntimeFractionalPercent is envoy.config.core.v3.RuntimeFractionalPercent;
// the proxy has no runtime, so a runtime key is refused by the compiler.
type RuntimeFractionalPercent struct {
	DefaultValue *FractionalPercent `json:"defaultValue,omitempty"`
	RuntimeKey   string             `json:"runtimeKey,omitempty"`
}

func (m *RuntimeFractionalPercent) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return msg(f, &m.DefaultValue)
		case 2:
			return f.str(&m.RuntimeKey)
		}
		return nil
	})
}

// FractionalPercent is envoy.type.v3.FractionalPercent.
type FractionalPercent struct {
	Numerator   uint32      `json:"numerator,omitempty"`
	Denominator Denominator `json:"denominator,omitempty"`
}

func (m *FractionalPercent) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return f.uint32(&m.Numerator)
		case 2:
			return enum(f, &m.Denominator)
		}
		return nil
	})
}

// Denominator is FractionalPercent.DenominatorType.
type Denominator int32

var denominatorNames = []string{"HUNDRED", "TEN_THOUSAND", "MILLION"}

func (d Denominator) String() string               { return enumName(denominatorNames, int32(d)) }
func (d Denominator) MarshalJSON() ([]byte, error) { return enumJSON(denominatorNames, int32(d)) }

// Value is the denominator's number (100, 10,000 or 1,000,000); 0 for a
// value the enum does not name.
func (d Denominator) Value() uint32 {
	den := [...]uint32{100, 10_000, 1_000_000}
	if d < 0 || int(d) >= len(den) {
		return 0
	}
	return den[d]
}

// Of returns the fraction's share as a number between 0 and 1 (above 1 when
// the numerator exceeds the denominator, which Envoy reads as 1).
func (m *FractionalPercent) Of() float64 {
	if m.Denominator.Value() == 0 {
		return 0
	}
	return float64(m.Numerator) / float64(m.Denominator.Value())
}
