// Package xdswire reads and writes the xDS messages the built-in sidecar
// uses — the Envoy resources it compiles (listeners, route configurations,
// clusters, endpoints, secrets) and the ADS protocol around them — straight
// from and to the protobuf wire format, with
// google.golang.org/protobuf/encoding/protowire and no generated types.
//
// Why not go-control-plane's types: linking them registers the descriptors
// of every Envoy message they reach at start, and the first unmarshal of
// each resource type completes them; in a running sidecar that reflection
// metadata was about 3 MB of a 5.7 MB live heap (see docs/dataplane.md,
// Memory). The built-in proxy compiles a few dozen fields; this package
// decodes exactly those, skips every other field as protobuf parsers skip
// unknown ones, and records the oneof alternatives it does not decode so
// the compiler can refuse them by name. Where protobuf's own parsers are
// lenient this package mostly follows them (a oneof member of the wrong wire
// type is an unknown field; a message, wrapper or duration seen twice
// merges; a oneof keeps its last member), but a field it reads arriving
// with the wrong wire type is an error, so the update is NACKed rather than
// read without it. The tests build every resource with
// go-control-plane's types and check that what this package decodes agrees
// with them field by field, so the schema stays theirs.
//
// The Go types mirror Envoy's messages (a subset of their fields) and
// marshal to JSON with the proto JSON field names, so the admin
// /config_dump shows resources as Envoy shows them.
package xdswire

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// field is one decoded field of a message: its number and wire type, and
// its value — a varint or fixed value in u, a length-delimited one in b.
type field struct {
	num protowire.Number
	typ protowire.Type
	u   uint64
	b   []byte
}

// unmarshaler is a message this package decodes.
type unmarshaler interface {
	unmarshal(b []byte) error
}

// fields calls fn for each field of the message in b, in wire order.
func fields(b []byte, fn func(f field) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		f := field{num: num, typ: typ}
		switch typ {
		case protowire.VarintType:
			f.u, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var v uint32
			v, n = protowire.ConsumeFixed32(b)
			f.u = uint64(v)
		case protowire.Fixed64Type:
			f.u, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			f.b, n = protowire.ConsumeBytes(b)
		case protowire.StartGroupType:
			n = protowire.ConsumeFieldValue(num, typ, b)
		default:
			return fmt.Errorf("field %d: wire type %d is not valid here", num, typ)
		}
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(f); err != nil {
			return err
		}
	}
	return nil
}

func (f field) want(t protowire.Type) error {
	if f.typ != t {
		return fmt.Errorf("field %d has wire type %d, want %d", f.num, f.typ, t)
	}
	return nil
}

// oneof remembers which alternative of a oneof a message set last:
// protobuf keeps the last one on the wire, so a message that switches
// alternatives clears what the previous one decoded (a second occurrence of
// the same alternative merges, as for any field).
type oneof protowire.Number

// to records alternative n and reports whether another one was set before.
func (o *oneof) to(n protowire.Number) bool {
	switched := *o != 0 && protowire.Number(*o) != n
	*o = oneof(n)
	return switched
}

// member reports whether f is a well-formed occurrence of a oneof member
// (or of a field whose mere presence the proxy refuses): length-delimited,
// or a varint for the field numbers listed. Protobuf's parsers keep a field
// of the wrong wire type as an unknown field, so it neither sets nor
// switches the oneof; this package skips it the same way.
func (f field) member(varints ...protowire.Number) bool {
	if slices.Contains(varints, f.num) {
		return f.typ == protowire.VarintType
	}
	return f.typ == protowire.BytesType
}

// str reads a string field.
func (f field) str(dst *string) error {
	if err := f.want(protowire.BytesType); err != nil {
		return err
	}
	if !utf8.Valid(f.b) {
		return fmt.Errorf("field %d: string is not valid UTF-8", f.num)
	}
	*dst = string(f.b)
	return nil
}

// strOpt reads a string field whose presence matters (a oneof member).
func (f field) strOpt(dst **string) error {
	var s string
	if err := f.str(&s); err != nil {
		return err
	}
	*dst = &s
	return nil
}

// strs appends a repeated string field's value.
func (f field) strs(dst *[]string) error {
	var s string
	if err := f.str(&s); err != nil {
		return err
	}
	*dst = append(*dst, s)
	return nil
}

func (f field) bytes(dst *[]byte) error {
	if err := f.want(protowire.BytesType); err != nil {
		return err
	}
	*dst = append([]byte(nil), f.b...)
	return nil
}

func (f field) boolean(dst *bool) error {
	if err := f.want(protowire.VarintType); err != nil {
		return err
	}
	*dst = f.u != 0
	return nil
}

func (f field) boolOpt(dst **bool) error {
	var v bool
	if err := f.boolean(&v); err != nil {
		return err
	}
	*dst = &v
	return nil
}

func (f field) uint32(dst *uint32) error {
	if err := f.want(protowire.VarintType); err != nil {
		return err
	}
	*dst = uint32(f.u)
	return nil
}

func (f field) double(dst *float64) error {
	if err := f.want(protowire.Fixed64Type); err != nil {
		return err
	}
	*dst = math.Float64frombits(f.u)
	return nil
}

// uint32s appends a repeated uint32 field's values: packed (one
// length-delimited run of varints, proto3's default) or one per field.
func (f field) uint32s(dst *[]uint32) error {
	if f.typ == protowire.VarintType {
		*dst = append(*dst, uint32(f.u))
		return nil
	}
	if err := f.want(protowire.BytesType); err != nil {
		return err
	}
	for b := f.b; len(b) > 0; {
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return fmt.Errorf("field %d: %w", f.num, protowire.ParseError(n))
		}
		*dst = append(*dst, uint32(v))
		b = b[n:]
	}
	return nil
}

// enum reads an enum field into any int32-based type.
func enum[E ~int32](f field, dst *E) error {
	if err := f.want(protowire.VarintType); err != nil {
		return err
	}
	*dst = E(int32(f.u))
	return nil
}

// msg decodes a message field into *dst, allocating it on first sight; a
// message field seen twice merges, as protobuf's parsers do.
func msg[T any, P interface {
	*T
	unmarshaler
}](f field, dst **T) error {
	if err := f.want(protowire.BytesType); err != nil {
		return err
	}
	if *dst == nil {
		*dst = new(T)
	}
	return P(*dst).unmarshal(f.b)
}

// msgs appends a repeated message field's value.
func msgs[T any, P interface {
	*T
	unmarshaler
}](f field, dst *[]*T) error {
	var m *T
	if err := msg[T, P](f, &m); err != nil {
		return err
	}
	*dst = append(*dst, m)
	return nil
}

// BoolValue and UInt32Value are google.protobuf's wrappers: a pointer to
// the value, nil when the field is not set. A wrapper seen twice merges, as
// any message does: a second one without a value keeps the first's.
func (f field) boolValue(dst **bool) error {
	if err := f.want(protowire.BytesType); err != nil {
		return err
	}
	var v bool
	if *dst != nil {
		v = **dst
	}
	err := fields(f.b, func(g field) error {
		if g.num == 1 {
			return g.boolean(&v)
		}
		return nil
	})
	*dst = &v
	return err
}

func (f field) uint32Value(dst **uint32) error {
	if err := f.want(protowire.BytesType); err != nil {
		return err
	}
	var v uint32
	if *dst != nil {
		v = **dst
	}
	err := fields(f.b, func(g field) error {
		if g.num == 1 {
			return g.uint32(&v)
		}
		return nil
	})
	*dst = &v
	return err
}

// Duration is google.protobuf.Duration; it marshals to JSON as proto JSON
// does ("1.500s").
type Duration time.Duration

// D returns d as a time.Duration; nil is 0.
func (d *Duration) D() time.Duration {
	if d == nil {
		return 0
	}
	return time.Duration(*d)
}

func (f field) duration(dst **Duration) error {
	if err := f.want(protowire.BytesType); err != nil {
		return err
	}
	var secs, nanos int64
	if *dst != nil { // a second occurrence merges field by field
		secs, nanos = int64(**dst)/1e9, int64(**dst)%1e9
	}
	err := fields(f.b, func(g field) error {
		if err := g.want(protowire.VarintType); err != nil {
			return err
		}
		switch g.num {
		case 1:
			secs = int64(g.u)
		case 2:
			nanos = int64(int32(g.u))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if secs > int64(maxSeconds) || secs < -int64(maxSeconds) || nanos <= -1e9 || nanos >= 1e9 {
		return fmt.Errorf("field %d: duration %ds %dns is out of range", f.num, secs, nanos)
	}
	d := Duration(time.Duration(secs)*time.Second + time.Duration(nanos))
	*dst = &d
	return nil
}

// maxSeconds is the longest duration time.Duration holds, in seconds.
const maxSeconds = int64(1<<63-1) / int64(time.Second)

// MarshalJSON writes d as proto JSON: seconds with 0, 3, 6 or 9 decimals.
func (d Duration) MarshalJSON() ([]byte, error) {
	n := int64(d)
	sign := ""
	if n < 0 {
		sign, n = "-", -n
	}
	secs, nanos := n/1e9, n%1e9
	var frac string
	switch {
	case nanos == 0:
	case nanos%1e6 == 0:
		frac = fmt.Sprintf(".%03d", nanos/1e6)
	case nanos%1e3 == 0:
		frac = fmt.Sprintf(".%06d", nanos/1e3)
	default:
		frac = fmt.Sprintf(".%09d", nanos)
	}
	return []byte(strconv.Quote(sign + strconv.FormatInt(secs, 10) + frac + "s")), nil
}

// enumJSON writes an enum value as proto JSON does: its name, or its
// number when it has none.
func enumJSON(names []string, v int32) ([]byte, error) {
	if v >= 0 && int(v) < len(names) && names[v] != "" {
		return []byte(strconv.Quote(names[v])), nil
	}
	return []byte(strconv.Itoa(int(v))), nil
}

// enumName is the name of an enum value, for messages.
func enumName(names []string, v int32) string {
	if v >= 0 && int(v) < len(names) && names[v] != "" {
		return names[v]
	}
	return strconv.Itoa(int(v))
}

// Refusals: a field the proxy does not honour is named in the message's
// Refused (the compiler refuses the resource), never read as if unset.

// refuseTrue records name in *refused when f, a BoolValue, is true.
func refuseTrue(f field, refused *string, name string) error {
	var v *bool
	if err := f.boolValue(&v); err != nil {
		return err
	}
	if *v && *refused == "" {
		*refused = name
	}
	return nil
}

// refuseSet records the name refusals gives f's field in *refused when f
// holds more than its default.
func refuseSet(f field, refused *string, refusals map[protowire.Number]string) {
	if name, ok := refusals[f.num]; ok && *refused == "" && !zeroScalar(f) {
		*refused = name
	}
}

// zeroScalar reports whether f holds its field's default: a varint 0 (an
// enum's first value, false) or an empty message.
func zeroScalar(f field) bool {
	return (f.typ == protowire.VarintType && f.u == 0) || (f.typ == protowire.BytesType && len(f.b) == 0)
}
