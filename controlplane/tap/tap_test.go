package tap

import (
	"context"
	"errors"
	"testing"
	"time"

	collectorv1 "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	logsv1 "go.opentelemetry.io/proto/otlp/logs/v1"
	resourcev1 "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/micromesh/micromesh/identity"
	tapv1 "github.com/micromesh/micromesh/proto/tap/v1"
)

func str(k, v string) *commonv1.KeyValue {
	return &commonv1.KeyValue{Key: k, Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_StringValue{StringValue: v}}}
}

func export(resource []*commonv1.KeyValue, records ...[]*commonv1.KeyValue) *collectorv1.ExportLogsServiceRequest {
	sl := &logsv1.ScopeLogs{}
	for _, attrs := range records {
		sl.LogRecords = append(sl.LogRecords, &logsv1.LogRecord{TimeUnixNano: uint64(time.Unix(1_800_000_000, 0).UnixNano()), Attributes: attrs})
	}
	return &collectorv1.ExportLogsServiceRequest{ResourceLogs: []*logsv1.ResourceLogs{{Resource: &resourcev1.Resource{Attributes: resource}, ScopeLogs: []*logsv1.ScopeLogs{sl}}}}
}

func callerAs(s string) Caller {
	return func(context.Context) (identity.ID, error) {
		if s == "" {
			return identity.ID{}, errors.New("no client certificate")
		}
		return identity.ParseID(s)
	}
}

// A workload's records reach the watchers of its own service, read as the
// mesh's logger names its attributes (Envoy's node name gives the
// instance); other services' records, other log names and callers that are
// not workloads do not.
func TestCollectorHandsRecordsToWatchers(t *testing.T) {
	hub := NewHub()
	b := NewCollector(hub, callerAs("spiffe://micromesh.local/ns/default/svc/b"), nil)
	w, stop := hub.subscribe("b.default")
	defer stop()
	other, stopOther := hub.subscribe("c.default")
	defer stopOther()

	envoy := []*commonv1.KeyValue{str("log_name", "micromesh.tap"), str("node_name", "spiffe://micromesh.local/ns/default/svc/b~b-2")}
	rec := []*commonv1.KeyValue{str("source.principal", "spiffe://micromesh.local/ns/default/svc/a"), str("http.request.method", "POST"), str("url.path", "/x?y=1"),
		str("http.response.status_code", "503"), {Key: "rpc.grpc.status_code", Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_IntValue{IntValue: 14}}},
		str("duration_ms", "7"), str("network.protocol.name", "HTTP/2"), str("request_id", "r1")}
	if _, err := b.Export(context.Background(), export(envoy, rec)); err != nil {
		t.Fatal(err)
	}
	got := <-w.ch
	if got.GetInstance() != "b-2" || got.GetSource() != "spiffe://micromesh.local/ns/default/svc/a" || got.GetPath() != "/x?y=1" || got.GetCode() != 503 ||
		got.GetGrpcStatus() != 14 || got.GetDuration().AsDuration() != 7*time.Millisecond || got.GetProtocol() != "HTTP/2" || got.GetRequestId() != "r1" {
		t.Errorf("record as watched: %v", got)
	}
	// Another log name (an operator's own OpenTelemetry logger): ignored.
	if _, err := b.Export(context.Background(), export([]*commonv1.KeyValue{str("log_name", "audit")}, rec)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		collector *Collector
		req       *collectorv1.ExportLogsServiceRequest
		want      codes.Code
	}{
		{b, export([]*commonv1.KeyValue{str("service.name", "c.default"), str("log_name", "micromesh.tap")}, rec), codes.PermissionDenied},
		{NewCollector(hub, callerAs("spiffe://micromesh.local/ns/default/user/alice"), nil), export(envoy, rec), codes.PermissionDenied},
		{NewCollector(hub, callerAs(""), nil), export(envoy, rec), codes.Unauthenticated},
	} {
		if _, err := c.collector.Export(context.Background(), c.req); status.Code(err) != c.want {
			t.Errorf("%v: %v, want %v", c.req, err, c.want)
		}
	}
	select {
	case r := <-w.ch:
		t.Errorf("b's watcher got %v after the first", r)
	case r := <-other.ch:
		t.Errorf("c's watcher got %v", r)
	default:
	}
	if b.Records() != 1 {
		t.Errorf("%d records counted, want 1", b.Records())
	}
}

// A watcher that falls behind loses what does not fit and is told how many.
func TestSlowWatcherIsToldWhatItMissed(t *testing.T) {
	hub := NewHub()
	w, stop := hub.subscribe("b.default")
	defer stop()
	batch := make([]*tapv1.WatchResponse, watchBuffer+5)
	for i := range batch {
		batch[i] = &tapv1.WatchResponse{Code: 200}
	}
	hub.publish("b.default", batch)
	for range watchBuffer {
		<-w.ch
	}
	hub.publish("b.default", []*tapv1.WatchResponse{{Code: 204}})
	if got := <-w.ch; got.GetMissed() != 5 || got.GetCode() != 204 {
		t.Errorf("after falling behind: %v, want code 204 with 5 missed", got)
	}
	if batch[0].GetMissed() != 0 {
		t.Error("the shared record was changed")
	}
}
