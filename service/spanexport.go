package service

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/micromesh/micromesh/internal/otlpwire"
)

// spanExporter is the framework's OpenTelemetry span exporter: OTLP/HTTP
// with protobuf bodies, encoded by hand (internal/otlpwire) — the
// OpenTelemetry exporters' generated types would add 3.4 MB to every
// service for what is, in the mesh, a POST to the sidecar on loopback.
// Any OTLP/HTTP collector on plain http:// takes it as well.
type spanExporter struct {
	url     string
	u       *url.URL
	headers http.Header
	timeout time.Duration
	stopped atomic.Bool
}

// exportTries bounds the tries of one export the collector could not take
// for now (a 429, 502, 503 or 504, or no connection).
const exportTries = 3

// newSpanExporter reads OpenTelemetry's variables: the endpoint
// (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as it is, else
// OTEL_EXPORTER_OTLP_ENDPOINT with /v1/traces), headers
// (OTEL_EXPORTER_OTLP[_TRACES]_HEADERS, k=v pairs, values URL-encoded)
// and the timeout (OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT, ms, default 10 s).
func newSpanExporter() (*spanExporter, error) {
	endpoint := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if endpoint == "" {
		base := os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
		if base == "" {
			return nil, errors.New("no OTLP endpoint: set OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
		}
		endpoint = strings.TrimSuffix(base, "/") + "/v1/traces"
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("OTLP endpoint %q: the framework exports to an http:// URL (its sidecar's, on loopback); "+
			"for another collector, install your own tracer provider and pass service.NoTracing()", endpoint)
	}
	e := &spanExporter{url: endpoint, u: u, headers: http.Header{}, timeout: 10 * time.Second}
	for _, pair := range strings.Split(otlpEnv("HEADERS"), ",") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		val, err := url.QueryUnescape(strings.TrimSpace(v))
		if !ok || strings.TrimSpace(k) == "" || err != nil {
			return nil, fmt.Errorf("OTLP headers: %q is not key=value (the value URL-encoded)", pair)
		}
		e.headers.Add(strings.TrimSpace(k), val)
	}
	if t := otlpEnv("TIMEOUT"); t != "" {
		ms, err := strconv.Atoi(t)
		if err != nil || ms <= 0 {
			return nil, fmt.Errorf("OTLP timeout %q: want milliseconds", t)
		}
		e.timeout = time.Duration(ms) * time.Millisecond
	}
	return e, nil
}

// otlpEnv is OTEL_EXPORTER_OTLP_TRACES_<name>, else OTEL_EXPORTER_OTLP_<name>.
func otlpEnv(name string) string {
	if v := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_" + name); v != "" {
		return v
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_" + name)
}

// ExportSpans sends spans in one request, tried again (three tries in
// all) while the collector cannot take them for now.
func (e *spanExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if e.stopped.Load() || len(spans) == 0 {
		return nil
	}
	body := appendTraceRequest(nil, spans)
	wait := 100 * time.Millisecond
	for try := 1; ; try++ {
		again, after, err := e.post(ctx, body)
		if err == nil || !again || try == exportTries {
			return err
		}
		if after > 0 {
			wait = after
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (then %w)", err, ctx.Err())
		case <-time.After(wait):
		}
		wait *= 4
	}
}

// post sends one export; again says whether a later try might work, after
// how long the collector asked for.
func (e *spanExporter) post(ctx context.Context, body []byte) (again bool, after time.Duration, err error) {
	resp, err := e.roundTrip(ctx, body)
	if err != nil {
		return ctx.Err() == nil, 0, fmt.Errorf("exporting spans to %s: %w", e.url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusOK {
		if n, msg := otlpwire.PartialSuccess(b); n > 0 {
			return false, 0, fmt.Errorf("%s refused %d span(s): %s", e.url, n, msg)
		}
		return false, 0, nil
	}
	msg := strings.TrimSpace(string(b))
	if resp.Header.Get("Content-Type") == "application/x-protobuf" {
		msg = otlpwire.StringField(b, 2) // a google.rpc.Status's message
	}
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			after = time.Duration(min(s, 30)) * time.Second
		}
		return true, after, fmt.Errorf("exporting spans to %s: %s: %s", e.url, resp.Status, msg)
	}
	return false, 0, fmt.Errorf("exporting spans to %s: %s: %s", e.url, resp.Status, msg)
}

// roundTrip POSTs body on a connection of its own: HTTP/1.1 written by
// hand, the answer read by net/http's parser. (net/http's client would
// link its transport, HTTP/2 and all: 3 MB more in every service, for a
// request a second to the sidecar on loopback.)
func (e *spanExporter) roundTrip(ctx context.Context, body []byte) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	host := e.u.Host
	if e.u.Port() == "" {
		host = net.JoinHostPort(e.u.Hostname(), "80")
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var head bytes.Buffer
	fmt.Fprintf(&head, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-protobuf\r\nContent-Length: %d\r\nConnection: close\r\n",
		e.u.RequestURI(), e.u.Host, len(body))
	for k, vs := range e.headers {
		for _, v := range vs {
			fmt.Fprintf(&head, "%s: %s\r\n", k, v)
		}
	}
	head.WriteString("\r\n")
	if _, err := (&net.Buffers{head.Bytes(), body}).WriteTo(conn); err != nil {
		conn.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	resp.Body = closeBoth{resp.Body, conn}
	return resp, nil
}

// closeBoth closes a response's body and its connection.
type closeBoth struct {
	io.ReadCloser
	conn net.Conn
}

func (c closeBoth) Close() error {
	c.ReadCloser.Close()
	return c.conn.Close()
}

// Shutdown stops the exporter: later exports do nothing.
func (e *spanExporter) Shutdown(context.Context) error {
	e.stopped.Store(true)
	return nil
}

// appendTraceRequest appends an ExportTraceServiceRequest of spans: a
// ResourceSpans per resource and scope, in the order they first appear.
func appendTraceRequest(b []byte, spans []sdktrace.ReadOnlySpan) []byte {
	type key struct {
		res                   *resource.Resource
		name, version, schema string
	}
	order, by := otlpwire.GroupInOrder(spans, func(s sdktrace.ReadOnlySpan) key {
		sc := s.InstrumentationScope()
		return key{s.Resource(), sc.Name, sc.Version, sc.SchemaURL}
	})
	for _, k := range order {
		group := by[k]
		var r, res, scope, ss []byte
		for it := k.res.Iter(); it.Next(); {
			res = appendKeyValue(res, 1, it.Attribute())
		}
		r = otlpwire.AppendBytes(r, 1, res)
		sc := group[0].InstrumentationScope()
		scope = otlpwire.AppendString(scope, 1, sc.Name)
		scope = otlpwire.AppendString(scope, 2, sc.Version)
		for it := sc.Attributes.Iter(); it.Next(); {
			scope = appendKeyValue(scope, 3, it.Attribute())
		}
		ss = otlpwire.AppendBytes(ss, 1, scope)
		for _, s := range group {
			ss = otlpwire.AppendBytes(ss, 2, appendSpan(nil, s))
		}
		ss = otlpwire.AppendString(ss, 3, sc.SchemaURL)
		r = otlpwire.AppendBytes(r, 2, ss)
		r = otlpwire.AppendString(r, 3, k.res.SchemaURL())
		b = otlpwire.AppendBytes(b, 1, r)
	}
	return b
}

// appendSpan appends an opentelemetry.proto.trace.v1.Span.
func appendSpan(b []byte, s sdktrace.ReadOnlySpan) []byte {
	sc := s.SpanContext()
	tid, sid := sc.TraceID(), sc.SpanID()
	b = otlpwire.AppendBytes(b, 1, tid[:])
	b = otlpwire.AppendBytes(b, 2, sid[:])
	b = otlpwire.AppendString(b, 3, sc.TraceState().String())
	parent := s.Parent()
	if parent.SpanID().IsValid() {
		pid := parent.SpanID()
		b = otlpwire.AppendBytes(b, 4, pid[:])
	}
	b = otlpwire.AppendString(b, 5, s.Name())
	if k := s.SpanKind(); k != trace.SpanKindUnspecified {
		b = otlpwire.AppendVarint(b, 6, uint64(k)) // the SDK's kinds are OTLP's numbers
	}
	b = otlpwire.AppendFixed64(b, 7, uint64(s.StartTime().UnixNano()))
	b = otlpwire.AppendFixed64(b, 8, uint64(s.EndTime().UnixNano()))
	for _, a := range s.Attributes() {
		b = appendKeyValue(b, 9, a)
	}
	if n := s.DroppedAttributes(); n > 0 {
		b = otlpwire.AppendVarint(b, 10, uint64(n))
	}
	for _, ev := range s.Events() {
		var e []byte
		e = otlpwire.AppendFixed64(e, 1, uint64(ev.Time.UnixNano()))
		e = otlpwire.AppendString(e, 2, ev.Name)
		for _, a := range ev.Attributes {
			e = appendKeyValue(e, 3, a)
		}
		if ev.DroppedAttributeCount > 0 {
			e = otlpwire.AppendVarint(e, 4, uint64(ev.DroppedAttributeCount))
		}
		b = otlpwire.AppendBytes(b, 11, e)
	}
	if n := s.DroppedEvents(); n > 0 {
		b = otlpwire.AppendVarint(b, 12, uint64(n))
	}
	for _, l := range s.Links() {
		var e []byte
		ltid, lsid := l.SpanContext.TraceID(), l.SpanContext.SpanID()
		e = otlpwire.AppendBytes(e, 1, ltid[:])
		e = otlpwire.AppendBytes(e, 2, lsid[:])
		e = otlpwire.AppendString(e, 3, l.SpanContext.TraceState().String())
		for _, a := range l.Attributes {
			e = appendKeyValue(e, 4, a)
		}
		if l.DroppedAttributeCount > 0 {
			e = otlpwire.AppendVarint(e, 5, uint64(l.DroppedAttributeCount))
		}
		e = protowire.AppendTag(e, 6, protowire.Fixed32Type)
		e = protowire.AppendFixed32(e, traceFlags(l.SpanContext)|uint32(l.SpanContext.TraceFlags()))
		b = otlpwire.AppendBytes(b, 13, e)
	}
	if n := s.DroppedLinks(); n > 0 {
		b = otlpwire.AppendVarint(b, 14, uint64(n))
	}
	if st := s.Status(); st.Code != codes.Unset {
		var e []byte
		e = otlpwire.AppendString(e, 2, st.Description)
		code := uint64(1) // STATUS_CODE_OK
		if st.Code == codes.Error {
			code = 2 // STATUS_CODE_ERROR
		}
		e = otlpwire.AppendVarint(e, 3, code)
		b = otlpwire.AppendBytes(b, 15, e)
	}
	b = protowire.AppendTag(b, 16, protowire.Fixed32Type)
	return protowire.AppendFixed32(b, traceFlags(parent)|uint32(sc.TraceFlags()))
}

// traceFlags are OTLP's span flags of a parent or link: that its
// remoteness is known (bit 8), and whether it is remote (bit 9).
func traceFlags(sc trace.SpanContext) uint32 {
	if !sc.IsValid() {
		return 0x100
	}
	if sc.IsRemote() {
		return 0x300
	}
	return 0x100
}

// appendKeyValue appends an attribute as a KeyValue in field num.
func appendKeyValue(b []byte, num protowire.Number, a attribute.KeyValue) []byte {
	var kv []byte
	kv = otlpwire.AppendString(kv, 1, string(a.Key))
	kv = otlpwire.AppendBytes(kv, 2, appendAnyValue(nil, a.Value))
	return otlpwire.AppendBytes(b, num, kv)
}

// appendAnyValue encodes an attribute value as an AnyValue's fields.
func appendAnyValue(b []byte, v attribute.Value) []byte {
	switch v.Type() {
	case attribute.BOOL:
		return otlpwire.AppendVarint(b, 2, boolVarint(v.AsBool()))
	case attribute.INT64:
		return otlpwire.AppendVarint(b, 3, uint64(v.AsInt64()))
	case attribute.FLOAT64:
		return otlpwire.AppendFixed64(b, 4, math.Float64bits(v.AsFloat64()))
	case attribute.STRING:
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		return protowire.AppendString(b, v.AsString())
	case attribute.BYTESLICE:
		return otlpwire.AppendBytes(b, 7, v.AsByteSlice())
	case attribute.BOOLSLICE:
		return appendArray(b, v.AsBoolSlice(), attribute.BoolValue)
	case attribute.INT64SLICE:
		return appendArray(b, v.AsInt64Slice(), attribute.Int64Value)
	case attribute.FLOAT64SLICE:
		return appendArray(b, v.AsFloat64Slice(), attribute.Float64Value)
	case attribute.STRINGSLICE:
		return appendArray(b, v.AsStringSlice(), attribute.StringValue)
	case attribute.SLICE:
		return appendArray(b, v.AsSlice(), func(v attribute.Value) attribute.Value { return v })
	case attribute.MAP:
		var kvs []byte
		for _, kv := range v.AsMap() {
			kvs = appendKeyValue(kvs, 1, kv)
		}
		return otlpwire.AppendBytes(b, 6, kvs)
	}
	return b // EMPTY: an AnyValue with no value
}

// appendArray appends an ArrayValue (AnyValue field 5) of values.
func appendArray[T any](b []byte, values []T, value func(T) attribute.Value) []byte {
	var arr []byte
	for _, x := range values {
		arr = otlpwire.AppendBytes(arr, 1, appendAnyValue(nil, value(x)))
	}
	return otlpwire.AppendBytes(b, 5, arr)
}

func boolVarint(v bool) uint64 {
	if v {
		return 1
	}
	return 0
}
