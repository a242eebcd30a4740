// Package tracing is the built-in sidecar's side of distributed tracing:
// W3C trace context (the traceparent header) read and written on every
// traced request, the spans the proxy records, and their export over
// OTLP/gRPC to the control plane — encoded here by hand, as dataplane/xdswire
// decodes xDS, so that the sidecar links no OpenTelemetry SDK.
package tracing

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
)

// Header is the W3C trace context header (canonical form, as http.Header
// keys are).
const Header = "Traceparent"

// StateHeader is the W3C vendor state header, passed through untouched.
const StateHeader = "Tracestate"

// Context is a request's place in a trace: the trace, the span that sent it
// and whether the trace is recorded (sampled).
type Context struct {
	TraceID [16]byte
	SpanID  [8]byte
	Sampled bool
}

// Parse reads a traceparent value (version 00, or a later version read as
// 00 says: its first four fields). ok is false for anything malformed or
// an all-zero trace or span ID, which W3C says to ignore: the request then
// starts a trace of its own.
func Parse(v string) (c Context, ok bool) {
	// 00-<32 hex>-<16 hex>-<2 hex>
	if len(v) < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return Context{}, false
	}
	var ver [1]byte
	if !unhex(ver[:], v[0:2]) || ver[0] == 0xff || (ver[0] == 0 && len(v) != 55) || (len(v) > 55 && v[55] != '-') {
		return Context{}, false
	}
	var flags [1]byte
	if !unhex(c.TraceID[:], v[3:35]) || !unhex(c.SpanID[:], v[36:52]) || !unhex(flags[:], v[53:55]) {
		return Context{}, false
	}
	if c.TraceID == ([16]byte{}) || c.SpanID == ([8]byte{}) {
		return Context{}, false
	}
	c.Sampled = flags[0]&1 == 1
	return c, true
}

// unhex decodes lower-case hex only, as W3C requires.
func unhex(dst []byte, s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	_, err := hex.Decode(dst, []byte(s))
	return err == nil
}

// String formats c as a traceparent value.
func (c Context) String() string {
	var b [55]byte
	b[0], b[1], b[2] = '0', '0', '-'
	hex.Encode(b[3:35], c.TraceID[:])
	b[35] = '-'
	hex.Encode(b[36:52], c.SpanID[:])
	b[52], b[53], b[54] = '-', '0', '0'
	if c.Sampled {
		b[54] = '1'
	}
	return string(b[:])
}

// TraceIDString is the trace ID in hex, as trace tools show it.
func (c Context) TraceIDString() string { return hex.EncodeToString(c.TraceID[:]) }

// NewTraceID returns a random trace ID. The runtime's generator (ChaCha8,
// seeded by the OS) is enough for IDs that must not collide, and costs no
// system call per request.
func NewTraceID() (id [16]byte) {
	for {
		binary.BigEndian.PutUint64(id[:8], rand.Uint64())
		binary.BigEndian.PutUint64(id[8:], rand.Uint64())
		if id != ([16]byte{}) {
			return id
		}
	}
}

// NewSpanID returns a random, non-zero span ID.
func NewSpanID() (id [8]byte) {
	for {
		binary.BigEndian.PutUint64(id[:], rand.Uint64())
		if id != ([8]byte{}) {
			return id
		}
	}
}
