package tracing

import (
	"errors"
	"fmt"
	"log/slog"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/micromesh/micromesh/dataplane/otlpexport"
	"github.com/micromesh/micromesh/internal/otlpwire"
)

// An app's spans: what the sidecar's own app records (with an
// OpenTelemetry SDK, the framework's among them) and sends it over
// OTLP/HTTP on loopback. The sidecar sends them on to the control plane
// under its own service name — the app has no certificate, and the
// collector takes a workload's spans under that workload's name only —
// keeping each span as the app encoded it.

// AppSpan is one span of the app's, as encoded, with the resource and
// scope it came under.
type AppSpan struct {
	from *appScope
	raw  []byte // an opentelemetry.proto.trace.v1.Span
}

// appScope is what a request's spans of one scope share: the app's
// resource less the attributes the sidecar sets, and the scope.
type appScope struct {
	resource       []byte // Resource fields kept, encoded
	resourceSchema string
	scope          []byte // the InstrumentationScope, encoded; nil if none
	scopeSchema    string
}

// Bounds of the app's spans waiting at the sidecar.
const (
	MaxAppSpanBytes   = 64 << 10 // one span, as encoded
	maxAppQueueBytes  = 4 << 20
	maxAppBatchBytes  = 1 << 20 // an export under gRPC's default 4 MiB
	resourceAttribute = 1
)

// ErrMalformed is an export request that is not one.
var ErrMalformed = errors.New("not an OTLP ExportTraceServiceRequest")

// AppExporter batches an app's spans and sends them to the control plane
// under the sidecar's service (otlpexport: bounded in count and bytes,
// never blocking the app).
type AppExporter = otlpexport.Exporter[AppSpan]

// NewAppExporter returns an exporter of the app's spans, sent as
// service's (its "name.namespace") with res; Run sends them.
func NewAppExporter(service string, res Resource, log *slog.Logger) *AppExporter {
	e := otlpexport.New("the app's spans", ExportMethod, func(spans []AppSpan) []byte {
		return AppendAppExportRequest(nil, service, res, spans)
	}, log)
	e.LimitBytes(maxAppQueueBytes, maxAppBatchBytes, func(s AppSpan) int { return len(s.raw) })
	return e
}

// ParseAppExport reads an ExportTraceServiceRequest from the app into its
// spans. A span larger than MaxAppSpanBytes is not among them: it is
// counted in tooLarge.
func ParseAppExport(b []byte) (spans []AppSpan, tooLarge int, err error) {
	ok := otlpwire.Fields(b, func(num protowire.Number, typ protowire.Type, v []byte) {
		if num != 1 || typ != protowire.BytesType || err != nil {
			return
		}
		var n int
		spans, n, err = parseResourceSpans(spans, v)
		tooLarge += n
	})
	if !ok {
		return nil, 0, fmt.Errorf("%w: malformed protobuf", ErrMalformed)
	}
	if err != nil {
		return nil, 0, err
	}
	return spans, tooLarge, nil
}

// parseResourceSpans appends a ResourceSpans' spans (resource 1, scope
// spans 2, schema URL 3) to spans.
func parseResourceSpans(spans []AppSpan, b []byte) ([]AppSpan, int, error) {
	var (
		res      []byte
		resOK    = true
		schema   string
		scopes   [][]byte
		tooLarge int
	)
	ok := otlpwire.Fields(b, func(num protowire.Number, typ protowire.Type, v []byte) {
		if typ != protowire.BytesType {
			return
		}
		switch num {
		case 1:
			res, resOK = keptResource(v)
		case 2:
			scopes = append(scopes, v)
		case 3:
			schema = string(v)
		}
	})
	if !ok || !resOK {
		return nil, 0, fmt.Errorf("%w: a ResourceSpans is malformed protobuf", ErrMalformed)
	}
	for _, ss := range scopes {
		sc := &appScope{resource: res, resourceSchema: schema}
		var raw [][]byte
		ok := otlpwire.Fields(ss, func(num protowire.Number, typ protowire.Type, v []byte) {
			if typ != protowire.BytesType {
				return
			}
			switch num {
			case 1:
				sc.scope = v
			case 2:
				raw = append(raw, v)
			case 3:
				sc.scopeSchema = string(v)
			}
		})
		if !ok {
			return nil, 0, fmt.Errorf("%w: a ScopeSpans is malformed protobuf", ErrMalformed)
		}
		for _, r := range raw {
			if len(r) > MaxAppSpanBytes {
				tooLarge++
				continue
			}
			if !otlpwire.Fields(r, func(protowire.Number, protowire.Type, []byte) {}) {
				return nil, 0, fmt.Errorf("%w: a Span is malformed protobuf", ErrMalformed)
			}
			spans = append(spans, AppSpan{from: sc, raw: r})
		}
	}
	return spans, tooLarge, nil
}

// keptResource is a Resource's fields without the attributes the sidecar
// sets itself (service.name, service.instance.id), still encoded.
func keptResource(b []byte) ([]byte, bool) {
	var out []byte
	ok := otlpwire.Fields(b, func(num protowire.Number, typ protowire.Type, v []byte) {
		if num == resourceAttribute && typ == protowire.BytesType {
			switch otlpwire.StringField(v, 1) { // the KeyValue's key
			case "service.name", "service.instance.id":
				return
			}
		}
		out = appendField(out, num, typ, v)
	})
	return out, ok
}

// appendField appends a field as Fields gave it.
func appendField(b []byte, num protowire.Number, typ protowire.Type, v []byte) []byte {
	b = protowire.AppendTag(b, num, typ)
	if typ == protowire.BytesType {
		return protowire.AppendBytes(b, v)
	}
	return append(b, v...)
}

// AppendAppExportRequest appends an ExportTraceServiceRequest holding an
// app's spans under service and res (its service.name and instance),
// one ResourceSpans per resource and scope they came under.
func AppendAppExportRequest(b []byte, service string, res Resource, spans []AppSpan) []byte {
	order, by := otlpwire.GroupInOrder(spans, func(s AppSpan) *appScope { return s.from })
	for _, sc := range order {
		// The resource: the sidecar's attributes, then the app's others.
		var r, rb []byte
		rb = otlpwire.AppendAttr(rb, resourceAttribute, otlpwire.String("service.name", service))
		if res.Instance != "" {
			rb = otlpwire.AppendAttr(rb, resourceAttribute, otlpwire.String("service.instance.id", res.Instance))
		}
		rb = append(rb, sc.resource...)
		r = otlpwire.AppendBytes(r, 1, rb)
		var s []byte
		if sc.scope != nil {
			s = otlpwire.AppendBytes(s, 1, sc.scope)
		}
		for _, sp := range by[sc] {
			s = otlpwire.AppendBytes(s, 2, sp.raw)
		}
		s = otlpwire.AppendString(s, 3, sc.scopeSchema)
		r = otlpwire.AppendBytes(r, 2, s)
		r = otlpwire.AppendString(r, 3, sc.resourceSchema)
		b = otlpwire.AppendBytes(b, 1, r)
	}
	return b
}
