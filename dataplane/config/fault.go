package config

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/micromesh/micromesh/dataplane/xdswire"
)

// Fault is Envoy's fault injection filter (HTTPFault) as the proxy runs
// it on the outbound listener: a request it applies to is first delayed
// (in DelayShare of the requests), then answered with an error (in
// AbortShare), before the router — so neither counts against the route's
// timeout nor is retried.
type Fault struct {
	Delay      time.Duration // 0: none (Envoy delays in whole milliseconds)
	DelayShare Share
	// Abort: requests in AbortShare are answered Status with Body; gRPC
	// callers get GRPCStatus (trailers only, HTTP 200).
	Abort      bool
	AbortShare Share
	Status     int
	GRPCStatus int
	Body       string
	// UpstreamCluster limits the fault to requests routed there ("" for
	// all); Headers to requests matching each.
	UpstreamCluster string
	Headers         []func(Request) bool
	// MaxActive bounds the requests faults hold or answer at once, across
	// the listener; nil is no bound.
	MaxActive *uint32
}

// Share is a fraction of requests: Numerator in Denominator.
type Share struct{ Numerator, Denominator uint32 }

// Roll reports whether this request falls in the share.
func (s Share) Roll() bool {
	switch {
	case s.Numerator == 0 || s.Denominator == 0:
		return false
	case s.Numerator >= s.Denominator:
		return true
	}
	return rand.Uint32N(s.Denominator) < s.Numerator
}

// String writes the share as a percentage.
func (s Share) String() string {
	if s.Denominator == 0 {
		return "0%"
	}
	return fmt.Sprintf("%g%%", min(float64(s.Numerator)/float64(s.Denominator), 1)*100)
}

// Applies reports whether the fault concerns a request routed to cluster.
func (f *Fault) Applies(cluster string, q Request) bool {
	if f.UpstreamCluster != "" && f.UpstreamCluster != cluster {
		return false
	}
	for _, h := range f.Headers {
		if !h(q) {
			return false
		}
	}
	return true
}

// FaultAbortBody is what an abort answers when the filter names no body.
const FaultAbortBody = "fault filter abort"

func shareOf(p *xdswire.FractionalPercent) Share {
	if p == nil { // unset: 0 %, as Envoy and gRPC read it
		return Share{}
	}
	return Share{Numerator: p.Numerator, Denominator: p.Denominator.Value()} // an unknown denominator: 0, never
}

// compileFault reads an HTTPFault as Envoy applies it.
func compileFault(m *xdswire.HTTPFault) (*Fault, error) {
	if m.Refused != "" {
		return nil, fmt.Errorf("fault %s is not supported", m.Refused)
	}
	f := &Fault{UpstreamCluster: m.UpstreamCluster, MaxActive: m.MaxActiveFaults}
	if d := m.Delay; d != nil {
		switch {
		case d.Unsupported != "":
			return nil, fmt.Errorf("fault delay %s is not supported (the caller would pick its own delay)", d.Unsupported)
		case d.FixedDelay == nil:
			return nil, errors.New("fault delay needs fixed_delay")
		case d.FixedDelay.D() < 0:
			return nil, fmt.Errorf("fault delay %v is negative", d.FixedDelay.D())
		}
		f.Delay, f.DelayShare = d.FixedDelay.D().Truncate(time.Millisecond), shareOf(d.Percentage)
	}
	if a := m.Abort; a != nil {
		f.Abort, f.AbortShare, f.Body = true, shareOf(a.Percentage), a.ResponseBody
		if f.Body == "" {
			f.Body = FaultAbortBody
		}
		switch {
		case a.Unsupported != "":
			return nil, fmt.Errorf("fault abort %s is not supported (the caller would pick its own failure)", a.Unsupported)
		case a.HTTPStatus != nil:
			if *a.HTTPStatus < 200 || *a.HTTPStatus >= 600 {
				return nil, fmt.Errorf("fault abort http_status %d is not an HTTP status (200–599)", *a.HTTPStatus)
			}
			f.Status, f.GRPCStatus = int(*a.HTTPStatus), grpcOfHTTP(int(*a.HTTPStatus))
		case a.GRPCStatus != nil:
			if *a.GRPCStatus > 16 {
				return nil, fmt.Errorf("fault abort grpc_status %d is not a gRPC status code (0–16)", *a.GRPCStatus)
			}
			// Envoy answers HTTP 200 then (gRPC callers read the status).
			f.Status, f.GRPCStatus = 200, int(*a.GRPCStatus)
		default:
			return nil, errors.New("fault abort needs http_status or grpc_status")
		}
	}
	var err error
	if f.Headers, err = compileHeaders(m.Headers, "a fault's", ":method", ":path"); err != nil {
		return nil, err
	}
	return f, nil
}

// grpcOfHTTP is the gRPC status Envoy gives a gRPC caller answered with an
// HTTP status (Grpc::Utility::httpToGrpcStatus; gRPC's own mapping too).
func grpcOfHTTP(code int) int {
	switch code {
	case 400:
		return 13 // INTERNAL
	case 401:
		return 16 // UNAUTHENTICATED
	case 403:
		return 7 // PERMISSION_DENIED
	case 404:
		return 12 // UNIMPLEMENTED
	case 429, 502, 503, 504:
		return 14 // UNAVAILABLE
	}
	return 2 // UNKNOWN
}
