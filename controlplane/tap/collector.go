// Package tap is the control plane's side of `meshctl tap`: the OTLP logs
// collector the proxies send their access log records to (Envoy's
// OpenTelemetry access logger, on a service's inbound listeners while its
// Hub has watchers, and while its policy says access_log=on), and the
// TapService that hands each record, as it arrives, to whoever watches
// that service. Nothing is stored.
package tap

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	collectorv1 "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/micromesh/micromesh/identity"
	tapv1 "github.com/micromesh/micromesh/proto/tap/v1"
	"github.com/micromesh/micromesh/xds"
)

// Caller returns the verified identity of a call's peer (its client
// certificate), or an error saying why there is none.
type Caller func(ctx context.Context) (identity.ID, error)

// Collector is the OTLP/gRPC logs collector proxies send access log
// records to: each its own service's.
type Collector struct {
	collectorv1.UnimplementedLogsServiceServer
	hub    *Hub
	caller Caller
	log    *slog.Logger

	records atomic.Uint64
}

// NewCollector returns a collector that hands what it receives to hub.
func NewCollector(hub *Hub, caller Caller, log *slog.Logger) *Collector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Collector{hub: hub, caller: caller, log: log.With("component", "tap")}
}

// Records counts the records received.
func (c *Collector) Records() uint64 { return c.records.Load() }

// Export takes one export: refused whole when its caller is not a workload
// or it names another service (service.name, if set: Envoy sets none).
// Records of another log name than the mesh's are ignored.
func (c *Collector) Export(ctx context.Context, req *collectorv1.ExportLogsServiceRequest) (*collectorv1.ExportLogsServiceResponse, error) {
	id, err := c.caller(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	if id.Kind != identity.KindService {
		return nil, status.Errorf(codes.PermissionDenied, "access logs are sent by workloads; %s is not one", id)
	}
	self := id.Name + "." + id.Namespace
	var out []*tapv1.WatchResponse
	for _, rl := range req.ResourceLogs {
		attrs := rl.GetResource().GetAttributes()
		if svc := attr(attrs, "service.name"); svc != "" && svc != self {
			return nil, status.Errorf(codes.PermissionDenied, "%s may send access logs of its own service only (service.name %q); these name %q", id, self, svc)
		}
		if name := attr(attrs, "log_name"); name != xds.TapLogName {
			continue
		}
		instance := attr(attrs, "service.instance.id")
		if instance == "" { // Envoy: its node ID, SPIFFE ID "~" instance
			_, instance, _ = strings.Cut(attr(attrs, "node_name"), "~")
		}
		for _, sl := range rl.ScopeLogs {
			for _, r := range sl.LogRecords {
				out = append(out, request(instance, r.TimeUnixNano, r.Attributes))
			}
		}
	}
	c.records.Add(uint64(len(out)))
	c.hub.publish(self, out)
	return &collectorv1.ExportLogsServiceResponse{}, nil
}

// request reads a record's attributes by the keys xds.TapAttributes gives them.
func request(instance string, at uint64, attrs []*commonv1.KeyValue) *tapv1.WatchResponse {
	r := &tapv1.WatchResponse{Time: timestamppb.New(time.Unix(0, int64(at))), Instance: instance, GrpcStatus: -1}
	for _, kv := range attrs {
		v := value(kv.GetValue())
		switch kv.GetKey() {
		case xds.TapKeySource:
			r.Source = v
		case xds.TapKeyMethod:
			r.Method = v
		case xds.TapKeyPath:
			r.Path = v
		case xds.TapKeyCode:
			if n, err := strconv.ParseUint(v, 10, 32); err == nil {
				r.Code = uint32(n)
			}
		case xds.TapKeyGRPCStatus:
			if n, err := strconv.ParseInt(v, 10, 32); err == nil {
				r.GrpcStatus = int32(n)
			}
		case xds.TapKeyDuration:
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				r.Duration = durationpb.New(time.Duration(n) * time.Millisecond)
			}
		case xds.TapKeyProtocol:
			r.Protocol = v
		case xds.TapKeyRequestID:
			r.RequestId = v
		}
	}
	return r
}

// value is an attribute's value as text: Envoy may send an operator's
// number as a number.
func value(v *commonv1.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonv1.AnyValue_StringValue:
		return x.StringValue
	case *commonv1.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *commonv1.AnyValue_DoubleValue:
		return strconv.FormatFloat(x.DoubleValue, 'f', -1, 64)
	}
	return fmt.Sprint(v.GetValue())
}

func attr(attrs []*commonv1.KeyValue, key string) string {
	for _, kv := range attrs {
		if kv.GetKey() == key {
			return value(kv.GetValue())
		}
	}
	return ""
}
