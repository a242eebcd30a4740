package proxy

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/micromesh/micromesh/dataplane/config"
	"github.com/micromesh/micromesh/dataplane/tracing"
)

// SpanRecorder takes the spans of finished requests (a tracing.Exporter).
type SpanRecorder interface{ Record(*tracing.Span) }

// spanKey keys a traced request's *activeSpan in its context.
type spanKey struct{}

// activeSpan is a recorded request's span while it is served.
type activeSpan struct {
	span *tracing.Span
	w    http.ResponseWriter // where the gRPC status ends up
	msg  string              // the proxy's own answer, if it gave one
	// ended: the span was handed over (a request is recorded once).
	ended bool
}

// traceStart joins r to its trace, as Envoy's tracing does on a listener
// with tracing. A request that brings a W3C traceparent keeps its trace
// and its decision (recorded or not). One that brings none is recorded
// when its x-request-id says so — the trace status Envoy keeps in the
// UUID — or when the ID falls within the sampling (sampledByRequestID: a
// hash of the ID, so every hop the ID reaches decides alike, with no
// header of its own). A recorded request starts a trace, and the
// traceparent sent on names this hop's span; an unrecorded one is passed
// on as it came and costs nothing more. Recorded requests carry their span
// in the returned request's context until record ends it.
func (p *Proxy) traceStart(w http.ResponseWriter, r *http.Request, t *config.Tracing, kind tracing.Kind, start time.Time) *http.Request {
	if p.spans == nil {
		return r
	}
	parent, ok := tracing.Context{}, false
	v, present := r.Header[tracing.Header]
	if present && len(v) == 1 {
		parent, ok = tracing.Parse(v[0])
	}
	if ok && !parent.Sampled {
		return r // not recorded upstream: passed on as it came
	}
	if !ok {
		if !sampledByRequestID(r.Header, t) {
			if present {
				delete(r.Header, tracing.Header) // malformed: W3C says to start afresh, which this hop does not record
			}
			return r
		}
		delete(r.Header, tracing.StateHeader) // vendors' state of a context that was not kept
		parent.TraceID = tracing.NewTraceID()
	}
	c := tracing.Context{TraceID: parent.TraceID, SpanID: tracing.NewSpanID(), Sampled: true}
	r.Header[tracing.Header] = []string{c.String()}
	s := &tracing.Span{TraceID: c.TraceID, SpanID: c.SpanID, Service: t.Service, Name: spanName(r), Kind: kind, Start: start}
	if ok {
		s.Parent = parent.SpanID
	}
	p.recording.Add(1)
	return r.WithContext(context.WithValue(r.Context(), spanKey{}, &activeSpan{span: s, w: w}))
}

// Envoy's trace status in a UUID request ID: the version digit (index 14)
// rewritten when the request is traced.
const (
	traceStatusAt   = 14
	traceSampled    = '9'
	traceForced     = 'a'
	traceClient     = 'b'
	samplingBuckets = 10000
)

// sampledByRequestID decides whether a request with no trace context is
// recorded, as Envoy does from its x-request-id: traced if the ID's trace
// status says so (sampled, forced, or the client's), else if the ID's
// first 8 hex digits, mod 10,000, fall under the sampling (random_sampling
// in hundredths of a percent); a request with no such ID draws at random.
// When it decides to trace, it marks the ID sampled, as Envoy does.
func sampledByRequestID(h http.Header, t *config.Tracing) bool {
	ids := h[requestIDHeader]
	if len(ids) != 1 || len(ids[0]) < 36 {
		return t.Sample()
	}
	id := ids[0]
	switch id[traceStatusAt] {
	case traceSampled, traceForced, traceClient:
		return true
	}
	v, err := strconv.ParseUint(id[:8], 16, 32)
	if err != nil {
		return t.Sample()
	}
	if v%samplingBuckets >= uint64(t.Sampling*samplingBuckets+0.5) {
		return false
	}
	if id[traceStatusAt] == '4' {
		b := []byte(id)
		b[traceStatusAt] = traceSampled
		ids[0] = string(b)
	}
	return true
}

// spanName is a gRPC request's method ("pkg.Service/Method"), or an HTTP
// request's method and path.
func spanName(r *http.Request) string {
	path := r.URL.Path
	if isGRPC(r) && len(path) > 1 {
		return path[1:]
	}
	const max = 128
	if len(path) > max {
		path = path[:max] + "…"
	}
	return r.Method + " " + path
}

// tracedSpan returns r's span, nil if r is not recorded. While no
// recorded request is in flight — nearly always, at a sampling of 1 % —
// it does not look in r's context.
func (p *Proxy) tracedSpan(r *http.Request) *activeSpan {
	if p.spans == nil || p.recording.Load() == 0 {
		return nil
	}
	a, _ := r.Context().Value(spanKey{}).(*activeSpan)
	return a
}

// traceEnd finishes r's span, if r is recorded, and hands it over.
func (p *Proxy) traceEnd(r *http.Request, dir direction, source, dest, transport string, code, grpcCode int, end time.Time) {
	a := p.tracedSpan(r)
	if a == nil || a.ended {
		return
	}
	a.ended = true
	p.recording.Add(-1)
	s := a.span
	s.End = end
	s.Attrs = append(make([]tracing.Attr, 0, 10),
		tracing.String("http.request.method", r.Method),
		tracing.String("url.path", r.URL.Path),
		tracing.String("server.address", authority(r.Host)),
		tracing.Int("http.response.status_code", int64(code)),
		tracing.String("micromesh.transport", transport),
	)
	if dir == inbound {
		s.Attrs = append(s.Attrs, tracing.String("micromesh.caller", source))
	} else {
		s.Attrs = append(s.Attrs, tracing.String("upstream_cluster", dest))
	}
	if id := r.Header.Get(requestIDHeader); id != "" {
		s.Attrs = append(s.Attrs, tracing.String("guid:x-request-id", id))
	}
	if isGRPC(r) {
		h := a.w.Header()
		if grpcCode >= 0 {
			s.Attrs = append(s.Attrs, tracing.String("rpc.system", "grpc"), tracing.Int("rpc.grpc.status_code", int64(grpcCode)))
		}
		if a.msg == "" && grpcCode > 0 {
			a.msg = h.Get("Grpc-Message")
			if a.msg == "" {
				a.msg = h.Get(http.TrailerPrefix + "Grpc-Message")
			}
		}
	}
	s.Error = failed(s.Kind, code, grpcCode)
	s.Message = a.msg
	p.spans.Record(s)
}

// failed says whether a span records a failure, as OpenTelemetry's
// conventions have it: HTTP 5xx on either side and 4xx on the caller's;
// a gRPC status other than OK on the caller's, and on the server's those
// that are the server's fault.
func failed(kind tracing.Kind, code, grpcCode int) bool {
	if code >= 500 || (kind == tracing.KindClient && code >= 400 && code != 499) {
		return true
	}
	if grpcCode <= 0 {
		return false
	}
	if kind == tracing.KindClient {
		return true
	}
	switch grpcCode {
	case 2, 4, 12, 13, 14, 15: // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS
		return true
	}
	return false
}
