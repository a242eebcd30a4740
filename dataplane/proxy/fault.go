package proxy

import (
	"net/http"
	"time"

	"github.com/micromesh/micromesh/dataplane/config"
)

// faultFor is the fault a request on route through a listener with fault
// filter filter (and listener-level settings lf) gets: the route's own
// settings when it has some for that filter, else the listener's.
func faultFor(filter string, route *config.Route, lf *config.Fault) *config.Fault {
	if filter != "" && route != nil && route.FaultFilter == filter {
		return route.Fault
	}
	return lf
}

// faulted applies f to r, bound for cluster, as Envoy's fault filter
// does: a delay first, then an abort, each in its share of the requests,
// while fewer than f's MaxActive requests are in a fault. It reports
// whether it answered r (an abort, or the caller gone during the delay).
func (p *Proxy) faulted(f *config.Fault, w http.ResponseWriter, r *http.Request, cluster string, q config.Request, dest string, start time.Time) bool {
	if f == nil || !f.Applies(cluster, q) {
		return false
	}
	active := false
	defer func() {
		if active {
			p.faultsActive.Add(-1)
		}
	}()
	begin := func() bool {
		if active {
			return true
		}
		if f.MaxActive != nil && p.faultsActive.Load() >= int64(*f.MaxActive) {
			p.m.faultOverflow.Inc()
			return false
		}
		p.faultsActive.Add(1)
		active = true
		return true
	}
	if f.Delay > 0 && f.DelayShare.Roll() && begin() {
		p.m.faults.WithLabelValues("delay").Inc()
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			p.record(w, r, outbound, p.self, dest, "local", 499, start) // the caller went away
			return true
		}
	}
	if f.Abort && f.AbortShare.Roll() && begin() {
		p.m.faults.WithLabelValues("abort").Inc()
		p.localReply(w, r, outbound, p.self, dest, f.Status, f.GRPCStatus, f.Body, start)
		return true
	}
	return false
}
