package xdswire

import "google.golang.org/protobuf/encoding/protowire"

// HTTPFault is envoy.extensions.filters.http.fault.v3.HTTPFault: delays
// and aborts injected into a share of the requests, before the router.
type HTTPFault struct {
	Delay *FaultDelay `json:"delay,omitempty"`
	Abort *FaultAbort `json:"abort,omitempty"`
	// UpstreamCluster limits faults to requests routed to this cluster.
	UpstreamCluster string `json:"upstreamCluster,omitempty"`
	// Headers limit faults to requests matching all of them.
	Headers []*HeaderMatcher `json:"headers,omitempty"`
	// MaxActiveFaults bounds the requests a fault holds or answers at
	// once; unset is no bound.
	MaxActiveFaults *uint32 `json:"maxActiveFaults,omitempty"`
	// Refused names the first field set that the proxy does not do:
	// faults for some downstream nodes only (which Envoy learns from a
	// header the caller sets), response rate limits.
	Refused string `json:"-"`
}

// httpFaultRefused: the runtime keys (8–14) are not here: they name
// runtime values that override the configured ones, and with no runtime
// layer (the proxy has none) Envoy applies the configured values.
// disable_downstream_cluster_stats and filter_metadata change only stats
// and logs.
var httpFaultRefused = map[protowire.Number]string{5: "downstream_nodes", 7: "response_rate_limit"}

func (m *HTTPFault) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		switch f.num {
		case 1:
			return msg(f, &m.Delay)
		case 2:
			return msg(f, &m.Abort)
		case 3:
			return f.str(&m.UpstreamCluster)
		case 4:
			return msgs(f, &m.Headers)
		case 6:
			return f.uint32Value(&m.MaxActiveFaults)
		}
		refuseSet(f, &m.Refused, httpFaultRefused)
		return nil
	})
}

// FaultDelay is envoy.extensions.filters.common.fault.v3.FaultDelay.
type FaultDelay struct {
	FixedDelay *Duration          `json:"fixedDelay,omitempty"`
	Percentage *FractionalPercent `json:"percentage,omitempty"`
	// Unsupported is header_delay: a delay the caller asks for in a
	// request header, which would let any caller slow the proxy down.
	Unsupported string `json:"-"`
	kind        oneof
}

func (m *FaultDelay) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if (f.num == 3 || f.num == 5) && f.member() && m.kind.to(f.num) {
			m.FixedDelay, m.Unsupported = nil, ""
		}
		switch f.num {
		case 3:
			return f.duration(&m.FixedDelay)
		case 4:
			return msg(f, &m.Percentage)
		case 5:
			if f.member() {
				m.Unsupported = "header_delay"
			}
		}
		return nil
	})
}

// FaultAbort is envoy.extensions.filters.http.fault.v3.FaultAbort: an
// HTTP status, or a gRPC status for gRPC requests.
type FaultAbort struct {
	HTTPStatus   *uint32            `json:"httpStatus,omitempty"`
	GRPCStatus   *uint32            `json:"grpcStatus,omitempty"`
	Percentage   *FractionalPercent `json:"percentage,omitempty"`
	ResponseBody string             `json:"responseBody,omitempty"`
	// Unsupported is header_abort: an abort the caller asks for in a
	// request header.
	Unsupported string `json:"-"`
	kind        oneof
}

func (m *FaultAbort) unmarshal(b []byte) error {
	return fields(b, func(f field) error {
		if f.num == 2 || f.num == 4 || f.num == 5 {
			if !f.member(2, 5) {
				return nil
			}
			if m.kind.to(f.num) {
				m.HTTPStatus, m.GRPCStatus, m.Unsupported = nil, nil, ""
			}
		}
		switch f.num {
		case 2:
			var v uint32
			m.HTTPStatus = &v
			return f.uint32(m.HTTPStatus)
		case 5:
			var v uint32
			m.GRPCStatus = &v
			return f.uint32(m.GRPCStatus)
		case 4:
			m.Unsupported = "header_abort"
		case 3:
			return msg(f, &m.Percentage)
		case 6:
			return f.str(&m.ResponseBody)
		}
		return nil
	})
}
