package proxy

import (
	"sort"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/micromesh/micromesh/dataplane/h1"
	"github.com/micromesh/micromesh/dataplane/h3"
)

// ClusterStatus is a cluster's live state: what its circuit breakers are
// holding and how each endpoint stands with the balancer (the admin
// endpoint's /clusters, as Envoy's).
type ClusterStatus struct {
	Name           string `json:"name"`
	Transport      string `json:"transport"`
	ActiveRequests int64  `json:"active_requests"`
	MaxRequests    uint32 `json:"max_requests"`
	ActiveRetries  int64  `json:"active_retries"`
	MaxRetries     uint32 `json:"max_retries"`
	// PendingRequests wait for a connection (HTTP/1.1 pools, past
	// MaxConnections), up to MaxPendingRequests.
	PendingRequests    int              `json:"pending_requests"`
	MaxPendingRequests uint32           `json:"max_pending_requests"`
	MaxConnections     uint32           `json:"max_connections"`
	Endpoints          []EndpointStatus `json:"endpoints"`
}

// EndpointStatus is one endpoint of a cluster.
type EndpointStatus struct {
	Address string `json:"address"`
	Weight  uint32 `json:"weight"`
	// Healthy is the health EDS gives; Ejected is outlier detection's
	// verdict, until EjectedUntil.
	Healthy                  bool       `json:"healthy"`
	Ejected                  bool       `json:"ejected"`
	EjectedUntil             *time.Time `json:"ejected_until,omitempty"`
	Ejections                uint32     `json:"ejections"`
	ConsecutiveErrors        uint32     `json:"consecutive_errors"`
	ConsecutiveLocalFailures uint32     `json:"consecutive_local_failures"`
	ActiveRequests           int64      `json:"active_requests"`
	// QUIC is the HTTP/3 connection to the endpoint, when there is one.
	QUIC *QUICStatus `json:"quic,omitempty"`
}

// QUICStatus is a QUIC connection's transport state (RFC 9002's RTT
// estimates; counters since the connection opened).
type QUICStatus struct {
	SmoothedRTTMillis  float64 `json:"smoothed_rtt_ms"`
	MinRTTMillis       float64 `json:"min_rtt_ms"`
	RTTVariationMillis float64 `json:"rtt_variation_ms"`
	CongestionWindow   uint64  `json:"congestion_window"`
	PacketsSent        uint64  `json:"packets_sent"`
	PacketsReceived    uint64  `json:"packets_received"`
	PacketsLost        uint64  `json:"packets_lost"`
	BytesSent          uint64  `json:"bytes_sent"`
	BytesReceived      uint64  `json:"bytes_received"`
	BytesLost          uint64  `json:"bytes_lost"`
}

func quicStatus(s quic.ConnectionStats) *QUICStatus {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return &QUICStatus{
		SmoothedRTTMillis: ms(s.SmoothedRTT), MinRTTMillis: ms(s.MinRTT), RTTVariationMillis: ms(s.MeanDeviation),
		CongestionWindow: s.CongestionWindow,
		PacketsSent:      s.PacketsSent, PacketsReceived: s.PacketsReceived, PacketsLost: s.PacketsLost,
		BytesSent: s.BytesSent, BytesReceived: s.BytesReceived, BytesLost: s.BytesLost,
	}
}

// Clusters returns the live state of every cluster in force, by name.
func (p *Proxy) Clusters() []ClusterStatus {
	st := p.state.Load()
	if st == nil {
		return nil
	}
	now := time.Now()
	out := make([]ClusterStatus, 0, len(st.upstreams))
	for _, u := range st.upstreams {
		cs := ClusterStatus{
			Name: u.cluster.Name, Transport: u.cluster.Transport,
			ActiveRequests: u.active.Load(), MaxRequests: u.cluster.Limits.MaxRequests,
			ActiveRetries: u.retries.Load(), MaxRetries: u.cluster.Limits.MaxRetries,
			MaxPendingRequests: u.cluster.Limits.MaxPendingRequests, MaxConnections: u.cluster.Limits.MaxConnections,
			Endpoints: make([]EndpointStatus, 0, len(u.lb.eps)),
		}
		if t, ok := u.rt.(*h1.Transport); ok {
			cs.PendingRequests = t.Waiting()
		}
		h3t, _ := u.rt.(*h3.Transport)
		for _, e := range u.lb.eps {
			es := EndpointStatus{Address: e.addr, Weight: e.weight, Healthy: e.healthy, ActiveRequests: e.active.Load()}
			e.mu.Lock()
			es.Ejections, es.ConsecutiveErrors, es.ConsecutiveLocalFailures = e.ejections, e.failures, e.localFails
			if !e.ejectedUntil.IsZero() && now.Before(e.ejectedUntil) {
				until := e.ejectedUntil
				es.Ejected, es.EjectedUntil = true, &until
			}
			e.mu.Unlock()
			if h3t != nil {
				if qs, ok := h3t.ConnStats(e.addr); ok {
					es.QUIC = quicStatus(qs)
				}
			}
			cs.Endpoints = append(cs.Endpoints, es)
		}
		out = append(out, cs)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
