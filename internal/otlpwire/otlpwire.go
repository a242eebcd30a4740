// Package otlpwire encodes and reads the parts of OTLP messages the
// sidecar's exporters and the framework's span exporter share —
// attributes, resources, an export's partial success — straight from
// protowire, so that neither links OpenTelemetry's generated types (their
// reflection metadata would cost the sidecar memory, see
// docs/dataplane.md "Memory"; they would add 3.4 MB to every service).
// The schema stays OpenTelemetry's: what they send any OTLP collector
// reads, and the tests check it against the generated types field by
// field.
package otlpwire

import "google.golang.org/protobuf/encoding/protowire"

// Attr is an attribute: a string, or an integer when IsInt is set.
type Attr struct {
	Key   string
	Str   string
	Int   int64
	IsInt bool
}

// String is a string attribute.
func String(k, v string) Attr { return Attr{Key: k, Str: v} }

// Int is an integer attribute.
func Int(k string, v int64) Attr { return Attr{Key: k, Int: v, IsInt: true} }

// Resource describes who exports: OTLP resource attributes besides
// service.name.
type Resource struct {
	Instance string // service.instance.id
	Version  string // service.version: the instance's version ("" when it has none)
	SDK      string // telemetry.sdk.name
	Attrs    []Attr // any others
}

// AppendResource appends an opentelemetry.proto.resource.v1.Resource of
// service (its service.name, "name.namespace") and res in field num.
func AppendResource(b []byte, num protowire.Number, service string, res Resource) []byte {
	var r []byte
	r = AppendAttr(r, 1, String("service.name", service))
	if res.Instance != "" {
		r = AppendAttr(r, 1, String("service.instance.id", res.Instance))
	}
	if res.Version != "" {
		r = AppendAttr(r, 1, String("service.version", res.Version))
	}
	if res.SDK != "" {
		r = AppendAttr(r, 1, String("telemetry.sdk.name", res.SDK))
	}
	for _, a := range res.Attrs {
		r = AppendAttr(r, 1, a)
	}
	return AppendBytes(b, num, r)
}

// AppendScoped appends, in field 1 of an export request, one resource
// (service and res) holding one scope named scope with items, each
// encoded by appendItem: a ResourceSpans of Spans, a ResourceLogs of
// LogRecords (both: resource 1, scopes 2; a scope's name 1, items 2).
func AppendScoped[T any](b []byte, service string, res Resource, scope string, items []T, appendItem func([]byte, T) []byte) []byte {
	r := AppendResource(nil, 1, service, res)
	s := AppendScope(nil, 1, scope)
	for _, it := range items {
		s = AppendBytes(s, 2, appendItem(nil, it))
	}
	r = AppendBytes(r, 2, s)
	return AppendBytes(b, 1, r)
}

// AppendScope appends an InstrumentationScope named name in field num.
func AppendScope(b []byte, num protowire.Number, name string) []byte {
	return AppendBytes(b, num, AppendString(nil, 1, name))
}

// AppendAttr appends an attribute as a KeyValue in field num (1 of a
// Resource, 9 of a Span, 7 of a NumberDataPoint), sizes computed ahead so
// that nothing is built apart and copied.
func AppendAttr(b []byte, num protowire.Number, a Attr) []byte {
	var vlen int // the AnyValue
	if a.IsInt {
		vlen = protowire.SizeTag(3) + protowire.SizeVarint(uint64(a.Int))
	} else {
		vlen = protowire.SizeTag(1) + protowire.SizeBytes(len(a.Str))
	}
	kvlen := protowire.SizeTag(2) + protowire.SizeBytes(vlen)
	if a.Key != "" {
		kvlen += protowire.SizeTag(1) + protowire.SizeBytes(len(a.Key))
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(kvlen))
	b = AppendString(b, 1, a.Key)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(vlen))
	if a.IsInt {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		return protowire.AppendVarint(b, uint64(a.Int))
	}
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	return protowire.AppendString(b, a.Str)
}

// AppendString appends s in field num, nothing if s is empty (proto3).
func AppendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// AppendBytes appends v, length-delimited, in field num.
func AppendBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// AppendFixed64 appends v in fixed64 field num.
func AppendFixed64(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, v)
}

// AppendVarint appends v in varint field num.
func AppendVarint(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// PartialSuccess reads an OTLP export response's partial_success (field
// 1 of ExportTraceServiceResponse and ExportMetricsServiceResponse alike:
// rejected_spans or rejected_data_points 1, error_message 2).
func PartialSuccess(b []byte) (rejected int64, msg string) {
	Fields(b, func(num protowire.Number, typ protowire.Type, v []byte) {
		if num != 1 || typ != protowire.BytesType {
			return
		}
		Fields(v, func(num protowire.Number, typ protowire.Type, v []byte) {
			switch {
			case num == 1 && typ == protowire.VarintType:
				u, _ := protowire.ConsumeVarint(v)
				rejected = int64(u)
			case num == 2 && typ == protowire.BytesType:
				msg = string(v)
			}
		})
	})
	return rejected, msg
}

// StringField is the last value of string field num of message b ("" if
// none): a KeyValue's key (1), a google.rpc.Status's message (2).
func StringField(b []byte, num protowire.Number) string {
	var s string
	Fields(b, func(n protowire.Number, typ protowire.Type, v []byte) {
		if n == num && typ == protowire.BytesType {
			s = string(v)
		}
	})
	return s
}

// Fields calls fn with each field of message b: its number, its type and
// its value as encoded (a length-delimited one without its length); it
// stops at the first malformed field and reports whether b was whole.
func Fields(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte)) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return false
		}
		v := b[:m]
		if typ == protowire.BytesType {
			v, _ = protowire.ConsumeBytes(v)
		}
		fn(num, typ, v)
		b = b[m:]
	}
	return true
}

// GroupInOrder groups items by key, the groups in the order their first
// item appears: one resource's worth of spans or records each.
func GroupInOrder[T any, K comparable](items []T, key func(T) K) (order []K, groups map[K][]T) {
	groups = map[K][]T{}
	for _, it := range items {
		k := key(it)
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], it)
	}
	return order, groups
}
