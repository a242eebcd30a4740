package accesslog

import (
	"testing"
	"time"

	collectorv1 "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	logsv1 "go.opentelemetry.io/proto/otlp/logs/v1"
	"google.golang.org/protobuf/proto"

	"github.com/micromesh/micromesh/internal/otlpwire"
)

// The hand encoding agrees with OpenTelemetry's own types, field by field.
func TestExportRequestAgreesWithOTLP(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	one := &Record{Time: at, Service: "web.default", LogName: "micromesh.tap", Attrs: []otlpwire.Attr{otlpwire.String("url.path", "/a"), otlpwire.String("http.response.status_code", "200")}}
	two := &Record{Time: at.Add(time.Millisecond), Service: "web.default", LogName: "micromesh.tap", Attrs: []otlpwire.Attr{otlpwire.String("url.path", "/b")}}
	other := &Record{Time: at, Service: "web.default", LogName: "other"}

	b := AppendExportRequest(nil, otlpwire.Resource{Instance: "web-1", SDK: "micromesh-sidecar"}, []*Record{one, two, other})
	var req collectorv1.ExportLogsServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		t.Fatal(err)
	}
	if len(req.ResourceLogs) != 2 {
		t.Fatalf("%d resource logs, want 2 (one per log name)", len(req.ResourceLogs))
	}
	rl := req.ResourceLogs[0]
	attrs := map[string]string{}
	for _, kv := range rl.Resource.Attributes {
		attrs[kv.Key] = kv.Value.GetStringValue()
	}
	if attrs["service.name"] != "web.default" || attrs["service.instance.id"] != "web-1" || attrs["log_name"] != "micromesh.tap" {
		t.Errorf("resource attributes %v", attrs)
	}
	if got := rl.ScopeLogs[0].Scope.Name; got != "micromesh.proxy" {
		t.Errorf("scope %q", got)
	}
	recs := rl.ScopeLogs[0].LogRecords
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2", len(recs))
	}
	r := recs[0]
	if r.TimeUnixNano != uint64(at.UnixNano()) || r.ObservedTimeUnixNano != r.TimeUnixNano || r.SeverityNumber != logsv1.SeverityNumber_SEVERITY_NUMBER_INFO || r.SeverityText != "INFO" {
		t.Errorf("record %v", r)
	}
	if len(r.Attributes) != 2 || r.Attributes[0].Key != "url.path" || r.Attributes[0].Value.GetStringValue() != "/a" || r.Attributes[1].Value.GetStringValue() != "200" {
		t.Errorf("attributes %v", r.Attributes)
	}
	if got := req.ResourceLogs[1].Resource.Attributes; len(got) != 4 || got[3].Value.GetStringValue() != "other" {
		t.Errorf("the other log name's resource %v", got)
	}
}
