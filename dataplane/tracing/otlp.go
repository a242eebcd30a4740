package tracing

import "google.golang.org/protobuf/encoding/protowire"

// ExportMethod is OTLP/gRPC's trace export: what Envoy's OpenTelemetry
// tracer calls, and what the control plane serves.
const ExportMethod = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

// Resource describes who exports: OTLP resource attributes besides
// service.name (which each span carries as Span.Service).
type Resource struct {
	Instance string // service.instance.id
	SDK      string // telemetry.sdk.name
}

// AppendExportRequest appends an
// opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest holding
// spans, one ResourceSpans per service in the order they first appear.
func AppendExportRequest(b []byte, res Resource, spans []*Span) []byte {
	var order []string
	by := map[string][]*Span{}
	for _, s := range spans {
		if _, ok := by[s.Service]; !ok {
			order = append(order, s.Service)
		}
		by[s.Service] = append(by[s.Service], s)
	}
	for _, svc := range order {
		var rs []byte
		// resource (1): attributes
		var r []byte
		r = appendAttr(r, 1, String("service.name", svc))
		if res.Instance != "" {
			r = appendAttr(r, 1, String("service.instance.id", res.Instance))
		}
		if res.SDK != "" {
			r = appendAttr(r, 1, String("telemetry.sdk.name", res.SDK))
		}
		rs = appendBytes(rs, 1, r)
		// scope_spans (2): scope (1) then spans (2)
		var ss []byte
		ss = appendBytes(ss, 1, appendString(nil, 1, "micromesh.proxy"))
		for _, s := range by[svc] {
			ss = appendBytes(ss, 2, appendSpan(nil, s))
		}
		rs = appendBytes(rs, 2, ss)
		b = appendBytes(b, 1, rs)
	}
	return b
}

// appendSpan encodes an opentelemetry.proto.trace.v1.Span.
func appendSpan(b []byte, s *Span) []byte {
	b = appendBytes(b, 1, s.TraceID[:])
	b = appendBytes(b, 2, s.SpanID[:])
	if s.Parent != ([8]byte{}) {
		b = appendBytes(b, 4, s.Parent[:])
	}
	b = appendString(b, 5, s.Name)
	b = protowire.AppendTag(b, 6, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(s.Kind))
	b = protowire.AppendTag(b, 7, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, uint64(s.Start.UnixNano()))
	b = protowire.AppendTag(b, 8, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, uint64(s.End.UnixNano()))
	for _, a := range s.Attrs {
		b = appendAttr(b, 9, a)
	}
	var st []byte
	st = appendString(st, 2, s.Message)
	if s.Error {
		st = protowire.AppendTag(st, 3, protowire.VarintType)
		st = protowire.AppendVarint(st, 2) // STATUS_CODE_ERROR
	}
	if len(st) > 0 {
		b = appendBytes(b, 15, st)
	}
	// flags (16): the W3C trace flags (sampled) and that the parent's
	// remoteness is known (bit 8), set when it is remote (bit 9): every
	// parent of a proxy's span is another process's.
	flags := uint32(0x1 | 0x100)
	if s.Parent != ([8]byte{}) {
		flags |= 0x200
	}
	b = protowire.AppendTag(b, 16, protowire.Fixed32Type)
	return protowire.AppendFixed32(b, flags)
}

// appendAttr appends an attribute as a KeyValue in field num (1 of a
// Resource, 9 of a Span), sizes computed ahead so that nothing is built
// apart and copied.
func appendAttr(b []byte, num protowire.Number, a Attr) []byte {
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
	b = appendString(b, 1, a.Key)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(vlen))
	if a.IsInt {
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		return protowire.AppendVarint(b, uint64(a.Int))
	}
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	return protowire.AppendString(b, a.Str)
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}
