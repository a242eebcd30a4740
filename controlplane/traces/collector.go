package traces

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"

	collectorv1 "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	otlptracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/micromesh/micromesh/identity"
	tracev1 "github.com/micromesh/micromesh/proto/trace/v1"
)

// Caller returns the verified identity of a call's peer (its client
// certificate), or an error saying why there is none.
type Caller func(ctx context.Context) (identity.ID, error)

// Limits on what one span may carry: past them attributes are dropped and
// values cut, as OpenTelemetry's span limits do.
const (
	maxAttributes = 64
	maxValueLen   = 4 << 10
	maxNameLen    = 1 << 10
	// A span may start at most this far in the future (clock skew).
	maxSkew = time.Hour
)

// Collector is the OTLP/gRPC trace collector: workloads' proxies (the
// built-in sidecar, Envoy's OpenTelemetry tracer) export the spans of
// their own service to it; they are on disk before Export answers.
type Collector struct {
	collectorv1.UnimplementedTraceServiceServer
	store  *Store
	caller Caller
	log    *slog.Logger
	now    func() time.Time
	// forward, if set, sends what is kept on to another collector.
	forward *Forwarder

	received, rejected atomic.Uint64
}

// NewCollector returns a collector that keeps spans in store.
func NewCollector(store *Store, caller Caller, log *slog.Logger) *Collector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Collector{store: store, caller: caller, log: log.With("component", "traces"), now: time.Now}
}

// ForwardTo has the collector send what it keeps on through f.
func (c *Collector) ForwardTo(f *Forwarder) { c.forward = f }

// Stats counts spans kept and spans refused.
func (c *Collector) Stats() (received, rejected uint64) { return c.received.Load(), c.rejected.Load() }

// Export keeps the spans of a request. The whole request is refused when
// its caller is not a workload of the service its spans name; single
// malformed spans are refused in a partial success, as OTLP has it.
func (c *Collector) Export(ctx context.Context, req *collectorv1.ExportTraceServiceRequest) (*collectorv1.ExportTraceServiceResponse, error) {
	id, err := c.caller(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	if id.Kind != identity.KindService {
		return nil, status.Errorf(codes.PermissionDenied, "spans are exported by workloads; %s is not one", id)
	}
	self := id.Name + "." + id.Namespace
	var (
		keep     []*tracev1.Span
		rejected int64
		reason   string
	)
	now := c.now()
	for _, rs := range req.ResourceSpans {
		svc := resourceService(rs)
		if svc != self {
			if svc == "" {
				svc = "none"
			}
			return nil, status.Errorf(codes.PermissionDenied,
				"%s may export spans of its own service only (service.name %q); these name %q", id, self, svc)
		}
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				out, err := convert(svc, sp, now, c.store.o.MaxAge)
				if err != nil {
					rejected++
					if reason == "" {
						reason = err.Error()
					}
					continue
				}
				keep = append(keep, out)
			}
		}
	}
	if err := c.store.Add(keep); err != nil {
		c.log.Error("keeping spans", "err", err)
		return nil, status.Errorf(codes.Unavailable, "the control plane could not keep the spans: %v", err)
	}
	c.received.Add(uint64(len(keep)))
	if c.forward != nil && len(keep) > 0 {
		// As it came (its service names checked): a malformed span is the
		// other collector's to refuse as well.
		c.forward.offer(req)
	}
	resp := &collectorv1.ExportTraceServiceResponse{}
	if rejected > 0 {
		c.rejected.Add(uint64(rejected))
		resp.PartialSuccess = &collectorv1.ExportTracePartialSuccess{RejectedSpans: rejected,
			ErrorMessage: fmt.Sprintf("%d span(s) refused; the first: %s", rejected, reason)}
	}
	return resp, nil
}

// resourceService is a ResourceSpans' service.name.
func resourceService(rs *otlptracev1.ResourceSpans) string {
	for _, kv := range rs.GetResource().GetAttributes() {
		if kv.Key == "service.name" {
			return kv.Value.GetStringValue()
		}
	}
	return ""
}

// convert checks an OTLP span and turns it into one kept.
func convert(service string, sp *otlptracev1.Span, now time.Time, maxAge time.Duration) (*tracev1.Span, error) {
	if len(sp.TraceId) != 16 || isZero(sp.TraceId) {
		return nil, fmt.Errorf("trace_id must be 16 bytes, not all zero (it has %d)", len(sp.TraceId))
	}
	if len(sp.SpanId) != 8 || isZero(sp.SpanId) {
		return nil, fmt.Errorf("span_id must be 8 bytes, not all zero (it has %d)", len(sp.SpanId))
	}
	if n := len(sp.ParentSpanId); n != 0 && n != 8 {
		return nil, fmt.Errorf("parent_span_id must be empty or 8 bytes (it has %d)", n)
	}
	if sp.StartTimeUnixNano == 0 || sp.EndTimeUnixNano < sp.StartTimeUnixNano {
		return nil, fmt.Errorf("span %x: start_time_unix_nano must be set and not after end_time_unix_nano", sp.SpanId)
	}
	start := time.Unix(0, int64(sp.StartTimeUnixNano))
	if start.After(now.Add(maxSkew)) {
		return nil, fmt.Errorf("span %x starts %v in the future", sp.SpanId, start.Sub(now).Round(time.Second))
	}
	if start.Before(now.Add(-maxAge)) {
		return nil, fmt.Errorf("span %x started before the traces kept (%v)", sp.SpanId, maxAge)
	}
	if sp.Kind < 0 || sp.Kind > otlptracev1.Span_SPAN_KIND_CONSUMER {
		return nil, fmt.Errorf("span %x: kind %d is not one of OTLP's", sp.SpanId, sp.Kind)
	}
	out := &tracev1.Span{
		TraceId:  hex.EncodeToString(sp.TraceId),
		SpanId:   hex.EncodeToString(sp.SpanId),
		Service:  service,
		Name:     cut(sp.Name, maxNameLen),
		Kind:     tracev1.Kind(sp.Kind),
		Start:    timestamppb.New(start),
		Duration: durationpb.New(time.Duration(sp.EndTimeUnixNano - sp.StartTimeUnixNano)),
		Error:    sp.GetStatus().GetCode() == otlptracev1.Status_STATUS_CODE_ERROR,
		Message:  cut(sp.GetStatus().GetMessage(), maxValueLen),
	}
	if len(sp.ParentSpanId) == 8 {
		out.ParentSpanId = hex.EncodeToString(sp.ParentSpanId)
	}
	for i, kv := range sp.Attributes {
		if i == maxAttributes {
			break
		}
		if out.Attributes == nil {
			out.Attributes = make(map[string]string, min(len(sp.Attributes), maxAttributes))
		}
		out.Attributes[cut(kv.Key, maxNameLen)] = cut(valueText(kv.Value), maxValueLen)
	}
	return out, nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// cut shortens s to at most n bytes, on a rune boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// valueText is an attribute value as text.
func valueText(v *commonv1.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonv1.AnyValue_StringValue:
		return x.StringValue
	case *commonv1.AnyValue_BoolValue:
		return strconv.FormatBool(x.BoolValue)
	case *commonv1.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *commonv1.AnyValue_DoubleValue:
		return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64)
	case *commonv1.AnyValue_BytesValue:
		return hex.EncodeToString(x.BytesValue)
	case *commonv1.AnyValue_ArrayValue:
		s := "["
		for i, e := range x.ArrayValue.GetValues() {
			if i > 0 {
				s += ","
			}
			s += valueText(e)
		}
		return s + "]"
	case *commonv1.AnyValue_KvlistValue:
		s := "{"
		for i, e := range x.KvlistValue.GetValues() {
			if i > 0 {
				s += ","
			}
			s += e.Key + "=" + valueText(e.Value)
		}
		return s + "}"
	}
	return ""
}
