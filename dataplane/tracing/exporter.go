package tracing

import (
	"context"
	"log/slog"

	"google.golang.org/grpc"

	"github.com/micromesh/micromesh/dataplane/otlpexport"
)

// Exporter batches recorded spans and sends them over OTLP/gRPC
// (otlpexport: bounded, never blocking a request).
type Exporter = otlpexport.Exporter[*Span]

// NewExporter returns an exporter of spans under res; Run sends them.
func NewExporter(res Resource, log *slog.Logger) *Exporter {
	return otlpexport.New("spans", ExportMethod, func(spans []*Span) []byte { return AppendExportRequest(nil, res, spans) }, log)
}

// Export sends spans over conn in one OTLP/gRPC call; rejected and msg
// are what the collector refused of them (a partial success).
func Export(ctx context.Context, conn grpc.ClientConnInterface, res Resource, spans []*Span) (rejected int64, msg string, err error) {
	return otlpexport.Export(ctx, conn, ExportMethod, AppendExportRequest(nil, res, spans))
}
