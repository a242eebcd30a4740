// Package accesslog is the sidecar's side of Envoy's OpenTelemetry access
// logger: each request a listener with the logger takes becomes an OTLP
// log record — its attributes the request fields the logger asks for —
// sent in batches to the control plane over
// opentelemetry.proto.collector.logs.v1.LogsService/Export, hand-encoded
// (otlpwire) as the spans are. `meshctl tap` watches them there.
package accesslog

import (
	"log/slog"
	"time"

	"github.com/micromesh/micromesh/dataplane/otlpexport"
	"github.com/micromesh/micromesh/internal/otlpwire"
)

// ExportMethod is OTLP/gRPC's log export: what Envoy's OpenTelemetry
// access logger calls, and what the control plane serves.
const ExportMethod = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"

// Record is one request as a log record.
type Record struct {
	Time    time.Time
	Service string // the service.name of the resource: "name.namespace"
	LogName string // Envoy's log_name, a resource attribute as Envoy sets it
	Attrs   []otlpwire.Attr
}

// Exporter batches records and sends them to the control plane.
type Exporter = otlpexport.Exporter[*Record]

// NewExporter returns an exporter of records under res; Run sends them.
func NewExporter(res otlpwire.Resource, log *slog.Logger) *Exporter {
	return otlpexport.New("access log records", ExportMethod, func(rs []*Record) []byte { return AppendExportRequest(nil, res, rs) }, log)
}

// AppendExportRequest appends an
// opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest holding
// records, one ResourceLogs per service and log name in the order they
// first appear.
func AppendExportRequest(b []byte, res otlpwire.Resource, records []*Record) []byte {
	type key struct{ service, logName string }
	order, by := otlpwire.GroupInOrder(records, func(r *Record) key { return key{r.Service, r.LogName} })
	for _, k := range order {
		res := res
		if k.logName != "" {
			res.Attrs = append(res.Attrs[:len(res.Attrs):len(res.Attrs)], otlpwire.String("log_name", k.logName))
		}
		b = otlpwire.AppendScoped(b, k.service, res, "micromesh.proxy", by[k], appendRecord)
	}
	return b
}

// appendRecord encodes an opentelemetry.proto.logs.v1.LogRecord: its time
// (1) and observed time (11), severity INFO (2, 9; 3, "INFO") and
// attributes (6).
func appendRecord(b []byte, r *Record) []byte {
	t := uint64(r.Time.UnixNano())
	b = otlpwire.AppendFixed64(b, 1, t)
	b = otlpwire.AppendVarint(b, 2, 9)
	b = otlpwire.AppendString(b, 3, "INFO")
	for _, a := range r.Attrs {
		b = otlpwire.AppendAttr(b, 6, a)
	}
	return otlpwire.AppendFixed64(b, 11, t)
}
