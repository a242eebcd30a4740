package dataplane

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/micromesh/micromesh/dataplane/tracing"
	"github.com/micromesh/micromesh/internal/otlpwire"
)

// maxAppExport bounds an OTLP/HTTP export from the app, decompressed.
const maxAppExport = 4 << 20

// appTraces is OTLP/HTTP's trace endpoint (POST /v1/traces, protobuf) on
// the admin listener: the app's OpenTelemetry SDK exports its spans here
// (the runtime sets OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), and the sidecar
// sends them on to the control plane under its own service. Answers are
// OTLP/HTTP's: 200 with an ExportTraceServiceResponse (a partial success
// names what was dropped), 4xx with a google.rpc.Status saying what is
// wrong, 503 with Retry-After while the queue is full.
func (s *Sidecar) appTraces(w http.ResponseWriter, r *http.Request) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-protobuf" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusUnsupportedMediaType)
		fmt.Fprintf(w, "the sidecar takes OTLP/HTTP traces as protobuf (Content-Type application/x-protobuf; OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf), not %q\n", r.Header.Get("Content-Type"))
		return
	}
	var body io.Reader = http.MaxBytesReader(w, r.Body, maxAppExport)
	switch enc := r.Header.Get("Content-Encoding"); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			otlpError(w, http.StatusBadRequest, "the body is not gzip: "+err.Error())
			return
		}
		body = io.LimitReader(zr, maxAppExport+1)
	default:
		otlpError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Encoding %q: the sidecar takes gzip or none", enc))
		return
	}
	b, err := io.ReadAll(body)
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			otlpError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("an export may be at most %d bytes; send smaller batches", maxAppExport))
			return
		}
		otlpError(w, http.StatusBadRequest, "reading the export: "+err.Error())
		return
	}
	if len(b) > maxAppExport {
		otlpError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("an export may be at most %d bytes decompressed; send smaller batches", maxAppExport))
		return
	}
	spans, tooLarge, err := tracing.ParseAppExport(b)
	if err != nil {
		otlpError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.appSpans.CountDropped(tooLarge)
	queued := 0
	for _, sp := range spans {
		if s.appSpans.Offer(sp) {
			queued++
		}
	}
	full := len(spans) - queued
	if queued == 0 && full > 0 {
		w.Header().Set("Retry-After", "1")
		otlpError(w, http.StatusServiceUnavailable, fmt.Sprintf("the sidecar's queue of spans for the control plane is full: %d span(s) dropped; retry later", full))
		return
	}
	var msg string
	switch {
	case tooLarge > 0 && full > 0:
		msg = fmt.Sprintf("%d span(s) over %d bytes and %d more past the sidecar's full queue dropped", tooLarge, tracing.MaxAppSpanBytes, full)
	case tooLarge > 0:
		msg = fmt.Sprintf("%d span(s) over %d bytes dropped", tooLarge, tracing.MaxAppSpanBytes)
	case full > 0:
		msg = fmt.Sprintf("%d span(s) dropped: the sidecar's queue of spans for the control plane is full", full)
	}
	var resp []byte
	if msg != "" {
		var ps []byte
		ps = otlpwire.AppendVarint(ps, 1, uint64(tooLarge+full))
		ps = otlpwire.AppendString(ps, 2, msg)
		resp = otlpwire.AppendBytes(resp, 1, ps)
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Header().Set("Content-Length", strconv.Itoa(len(resp)))
	_, _ = w.Write(resp)
}

// otlpError answers an OTLP/HTTP export with code and a google.rpc.Status
// saying why (OTLP/HTTP's error body), in protobuf as the request was.
func otlpError(w http.ResponseWriter, code int, msg string) {
	grpcCode := uint64(3) // INVALID_ARGUMENT
	switch code {
	case http.StatusServiceUnavailable:
		grpcCode = 14 // UNAVAILABLE
	case http.StatusRequestEntityTooLarge:
		grpcCode = 8 // RESOURCE_EXHAUSTED
	}
	var st []byte
	st = protowire.AppendTag(st, 1, protowire.VarintType)
	st = protowire.AppendVarint(st, grpcCode)
	st = otlpwire.AppendString(st, 2, msg)
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Header().Set("Content-Length", strconv.Itoa(len(st)))
	w.WriteHeader(code)
	_, _ = w.Write(st)
}
