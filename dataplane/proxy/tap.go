package proxy

import (
	"net/http"
	"strconv"
	"time"

	"github.com/micromesh/micromesh/dataplane/accesslog"
	"github.com/micromesh/micromesh/dataplane/config"
	"github.com/micromesh/micromesh/internal/otlpwire"
)

// TapRecorder takes the access log records of finished requests (an
// accesslog.Exporter).
type TapRecorder interface {
	Record(*accesslog.Record)
}

// tapRecord makes a request's access log record with the attributes the
// listener's OpenTelemetry logger asks for; fields a request has not (no
// gRPC status, no peer certificate) are left out, as Envoy leaves them.
func (p *Proxy) tapRecord(t *config.Tap, r *http.Request, dir direction, code, grpcCode int, start time.Time, elapsed time.Duration) {
	rec := &accesslog.Record{Time: start, Service: p.self, LogName: t.LogName, Attrs: make([]otlpwire.Attr, 0, len(t.Attributes))}
	for _, a := range t.Attributes {
		var v string
		switch a.Field {
		case config.TapSource:
			if dir == inbound {
				v = p.peers.peer(r).id
			}
		case config.TapMethod:
			v = r.Method
		case config.TapPath:
			v = r.URL.RequestURI()
		case config.TapCode:
			v = strconv.Itoa(code)
		case config.TapGRPCStatus:
			if grpcCode >= 0 {
				v = strconv.Itoa(grpcCode)
			}
		case config.TapDurationMS:
			v = strconv.FormatInt(elapsed.Milliseconds(), 10)
		case config.TapProtocol:
			v = protocol(r)
		case config.TapRequestID:
			v = r.Header.Get(requestIDHeader)
		}
		if v != "" {
			rec.Attrs = append(rec.Attrs, otlpwire.String(a.Key, v))
		}
	}
	p.tap.Record(rec)
}

// protocol names a request's protocol as Envoy's %PROTOCOL% does.
func protocol(r *http.Request) string {
	switch r.ProtoMajor {
	case 3:
		return "HTTP/3"
	case 2:
		return "HTTP/2"
	}
	return r.Proto
}
