package proxy

import "github.com/prometheus/client_golang/prometheus"

// quicCollector exports each open HTTP/3 upstream connection's transport
// state when Prometheus scrapes (the same figures as /clusters): RTT,
// congestion window, packets sent and lost. Counters count from the
// connection's start, so they reset when a connection is replaced, which
// rate() handles.
type quicCollector struct{ p *Proxy }

var (
	quicRTTDesc = prometheus.NewDesc("micromesh_quic_smoothed_rtt_seconds",
		"Smoothed round-trip time (RFC 9002) of the QUIC connection to an upstream endpoint.", []string{"cluster", "endpoint"}, nil)
	quicCwndDesc = prometheus.NewDesc("micromesh_quic_congestion_window_bytes",
		"Congestion window of the QUIC connection to an upstream endpoint.", []string{"cluster", "endpoint"}, nil)
	quicSentDesc = prometheus.NewDesc("micromesh_quic_packets_sent_total",
		"Packets sent on the QUIC connection to an upstream endpoint, since it opened.", []string{"cluster", "endpoint"}, nil)
	quicLostDesc = prometheus.NewDesc("micromesh_quic_packets_lost_total",
		"Packets declared lost on the QUIC connection to an upstream endpoint, since it opened.", []string{"cluster", "endpoint"}, nil)
)

func (c quicCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- quicRTTDesc
	ch <- quicCwndDesc
	ch <- quicSentDesc
	ch <- quicLostDesc
}

func (c quicCollector) Collect(ch chan<- prometheus.Metric) {
	for _, cs := range c.p.Clusters() {
		for _, e := range cs.Endpoints {
			q := e.QUIC
			if q == nil {
				continue
			}
			ch <- prometheus.MustNewConstMetric(quicRTTDesc, prometheus.GaugeValue, q.SmoothedRTTMillis/1000, cs.Name, e.Address)
			ch <- prometheus.MustNewConstMetric(quicCwndDesc, prometheus.GaugeValue, float64(q.CongestionWindow), cs.Name, e.Address)
			ch <- prometheus.MustNewConstMetric(quicSentDesc, prometheus.CounterValue, float64(q.PacketsSent), cs.Name, e.Address)
			ch <- prometheus.MustNewConstMetric(quicLostDesc, prometheus.CounterValue, float64(q.PacketsLost), cs.Name, e.Address)
		}
	}
}
