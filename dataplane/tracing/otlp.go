package tracing

import (
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/micromesh/micromesh/internal/otlpwire"
)

// ExportMethod is OTLP/gRPC's trace export: what Envoy's OpenTelemetry
// tracer calls, and what the control plane serves.
const ExportMethod = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

// Resource describes who exports: OTLP resource attributes besides
// service.name (which each span carries as Span.Service).
type Resource = otlpwire.Resource

// AppendExportRequest appends an
// opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest holding
// spans, one ResourceSpans per service in the order they first appear.
func AppendExportRequest(b []byte, res Resource, spans []*Span) []byte {
	order, by := otlpwire.GroupInOrder(spans, func(s *Span) string { return s.Service })
	for _, svc := range order {
		b = otlpwire.AppendScoped(b, svc, res, "micromesh.proxy", by[svc], appendSpan)
	}
	return b
}

// appendSpan encodes an opentelemetry.proto.trace.v1.Span.
func appendSpan(b []byte, s *Span) []byte {
	b = otlpwire.AppendBytes(b, 1, s.TraceID[:])
	b = otlpwire.AppendBytes(b, 2, s.SpanID[:])
	if s.Parent != ([8]byte{}) {
		b = otlpwire.AppendBytes(b, 4, s.Parent[:])
	}
	b = otlpwire.AppendString(b, 5, s.Name)
	b = protowire.AppendTag(b, 6, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(s.Kind))
	b = protowire.AppendTag(b, 7, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, uint64(s.Start.UnixNano()))
	b = protowire.AppendTag(b, 8, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, uint64(s.End.UnixNano()))
	for _, a := range s.Attrs {
		b = otlpwire.AppendAttr(b, 9, a)
	}
	var st []byte
	st = otlpwire.AppendString(st, 2, s.Message)
	if s.Error {
		st = protowire.AppendTag(st, 3, protowire.VarintType)
		st = protowire.AppendVarint(st, 2) // STATUS_CODE_ERROR
	}
	if len(st) > 0 {
		b = otlpwire.AppendBytes(b, 15, st)
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
