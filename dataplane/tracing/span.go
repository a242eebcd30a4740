package tracing

import (
	"encoding/hex"
	"time"

	"github.com/micromesh/micromesh/internal/otlpwire"
)

// Kind is a span's kind, as OTLP numbers them.
type Kind int32

// Span kinds the proxy records.
const (
	KindInternal Kind = 1
	KindServer   Kind = 2 // an inbound request, received from a caller
	KindClient   Kind = 3 // an outbound request, sent to a service
)

// Span is one recorded hop of a request.
type Span struct {
	TraceID [16]byte
	SpanID  [8]byte
	Parent  [8]byte // zero for a trace's root
	// Service names who recorded it ("name.namespace"), OTLP's service.name.
	Service string
	Name    string
	Kind    Kind
	Start   time.Time
	End     time.Time
	Attrs   []Attr
	// Error marks a failed request; Message says why (a proxy's own
	// answer carries its reason).
	Error   bool
	Message string
}

// Attr is a span attribute: a string, or an integer when IsInt is set.
type Attr = otlpwire.Attr

// String is a string attribute.
func String(k, v string) Attr { return otlpwire.String(k, v) }

// Int is an integer attribute.
func Int(k string, v int64) Attr { return otlpwire.Int(k, v) }

// TraceIDString is the span's trace ID in hex.
func (s *Span) TraceIDString() string { return hex.EncodeToString(s.TraceID[:]) }
