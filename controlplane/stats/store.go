// Package stats keeps the request metrics the mesh's sidecars export
// (OTLP metrics: Collector) and answers for each service and each pair of
// caller and callee — requests per second, success rate, latency
// percentiles — over a recent window (API: micromesh.stats.v1, what
// `meshctl stat` and the dashboard show).
//
// What it keeps is a few minutes of each instance's cumulative totals, in
// memory: the totals live in the sidecars, so a restart of the control
// plane loses no count, only the figures until two exports have come in
// (or one, for a sidecar that started within the window).
package stats

import (
	"fmt"
	"slices"
	"sync"
	"time"
)

// Bounds on what is kept.
const (
	// MaxWindow is the longest window answered; samples older than it
	// (and instances silent that long) are dropped.
	MaxWindow = 10 * time.Minute
	// step is the least time between two kept samples of an instance
	// (the newest aside): a window's start is found within it.
	step = 10 * time.Second
	// maxSeries bounds the series one instance may report.
	maxSeries = 4096
	// MaxInstances bounds the instances of one service that report at
	// once (within MaxWindow): a workload cannot fill the control plane's
	// memory by making up instance IDs.
	MaxInstances = 1024
)

// reqKey is one series of micromesh_requests_total.
type reqKey struct {
	direction, source, destination, code, grpc, method string
}

// durKey is one series of micromesh_request_duration_seconds.
type durKey struct {
	direction, destination, method string
}

// hist is a histogram's cumulative state: counts per bucket (one more
// than bounds: the last is past every bound).
type hist struct {
	bounds []float64
	counts []uint64
	count  uint64
	sum    float64
}

// export is what one export of an instance carries: its totals at a
// moment, counted from start (the sidecar's start: a later start means
// the totals began again).
type export struct {
	at, start time.Time
	version   string // the instance's (service.version), "" if none
	requests  map[reqKey]float64
	durations map[durKey]*hist
}

// sample is an export as kept: values by the instance's series, so that
// the series' labels are held once per instance, not once per sample.
type sample struct {
	at, start time.Time
	requests  []float64 // by index in instance.reqs; past its end: 0
	durations []*hist   // by index in instance.durs; nil: none yet
}

// empty reports whether s has no series: the sidecar had counted nothing.
func (s *sample) empty() bool { return len(s.requests) == 0 && len(s.durations) == 0 }

// instance is what one sidecar reported: its series, and its samples,
// oldest first.
type instance struct {
	service string // "name.namespace"
	id      string
	version string // as its newest export gave it
	reqs    []reqKey
	reqIx   map[reqKey]int
	durs    []durKey
	durIx   map[durKey]int
	bounds  [][]float64 // by index in durs: the layout last seen, shared by the samples
	samples []*sample
}

// compact turns e into a sample over in's series, adding the new ones (up
// to maxSeries in all).
func (in *instance) compact(e *export) *sample {
	s := &sample{at: e.at, start: e.start}
	for k, v := range e.requests {
		i, ok := in.reqIx[k]
		if !ok {
			if len(in.reqs)+len(in.durs) >= maxSeries {
				continue
			}
			i = len(in.reqs)
			in.reqs = append(in.reqs, k)
			in.reqIx[k] = i
		}
		if i >= len(s.requests) {
			s.requests = append(s.requests, make([]float64, i+1-len(s.requests))...)
		}
		s.requests[i] = v
	}
	for k, h := range e.durations {
		i, ok := in.durIx[k]
		if !ok {
			if len(in.reqs)+len(in.durs) >= maxSeries {
				continue
			}
			i = len(in.durs)
			in.durs = append(in.durs, k)
			in.durIx[k] = i
			in.bounds = append(in.bounds, nil)
		}
		if !slices.Equal(in.bounds[i], h.bounds) {
			in.bounds[i] = slices.Clone(h.bounds)
		}
		if i >= len(s.durations) {
			s.durations = append(s.durations, make([]*hist, i+1-len(s.durations))...)
		}
		s.durations[i] = &hist{bounds: in.bounds[i], counts: slices.Clone(h.counts), count: h.count, sum: h.sum}
	}
	return s
}

// Store keeps recent samples of every reporting instance.
type Store struct {
	mu        sync.Mutex
	instances map[string]*instance // by service and instance ID
	counts    map[string]int       // instances by service
	now       func() time.Time
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{instances: map[string]*instance{}, counts: map[string]int{}, now: time.Now}
}

// errTooManyInstances refuses an instance past MaxInstances.
var errTooManyInstances = fmt.Errorf("more than %d instances of one service reporting", MaxInstances)

// add keeps s as the newest sample of service's instance id. A sample
// closer than step to the one before the newest replaces the newest, so
// an instance keeps at most MaxWindow ÷ step samples however often it
// exports.
func (st *Store) add(service, id string, e *export) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	key := service + "\x00" + id
	in := st.instances[key]
	if in == nil {
		if st.counts[service] >= MaxInstances {
			return errTooManyInstances
		}
		in = &instance{service: service, id: id, reqIx: map[reqKey]int{}, durIx: map[durKey]int{}}
		st.instances[key] = in
		st.counts[service]++
	}
	if n := len(in.samples); n > 0 && !e.at.After(in.samples[n-1].at) {
		return nil // not newer than what is kept (a retried export)
	}
	in.version = e.version
	s := in.compact(e)
	if n := len(in.samples); n >= 2 && s.at.Sub(in.samples[n-2].at) < step {
		in.samples[n-1] = s
	} else {
		in.samples = append(in.samples, s)
	}
	in.trim(st.now().Add(-MaxWindow - step))
	return nil
}

// trim drops samples before cut, but for the newest; it reports whether
// that one is before cut too.
func (in *instance) trim(cut time.Time) (silent bool) {
	i := 0
	for i < len(in.samples)-1 && in.samples[i+1].at.Before(cut) {
		i++
	}
	if i > 0 {
		in.samples = append(in.samples[:0], in.samples[i:]...)
	}
	return in.samples[len(in.samples)-1].at.Before(cut)
}

// Expire drops what is older than MaxWindow, and the instances silent
// that long (the server calls it every minute).
func (st *Store) Expire() {
	st.mu.Lock()
	defer st.mu.Unlock()
	cut := st.now().Add(-MaxWindow - step)
	for k, in := range st.instances {
		if in.trim(cut) {
			delete(st.instances, k)
			if st.counts[in.service]--; st.counts[in.service] <= 0 {
				delete(st.counts, in.service)
			}
		}
	}
}

// delta is what one instance counted within a window: its totals at the
// window's end less those at its start.
type delta struct {
	service   string
	instance  string
	version   string
	seconds   float64
	requests  map[reqKey]float64
	durations map[durKey]*hist
}

// deltas returns, for each instance that reported within window of now,
// what it counted over the window: its newest sample less zero at its
// start if it started within the window, else less the oldest sample
// within the window (if that is of the same start, or counted nothing:
// the totals did not begin again in between). An instance
// with one sample and an older start has an empty delta: it reports, but
// has no figures yet.
func (st *Store) deltas(window time.Duration) []delta {
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.now()
	var out []delta
	for _, in := range st.instances {
		last := in.samples[len(in.samples)-1]
		if last.at.Before(now.Add(-window)) {
			continue // silent for the whole window
		}
		from := last.at.Add(-window)
		var base *sample
		for _, s := range in.samples[:len(in.samples)-1] {
			if !s.at.Before(from) {
				base = s
				break
			}
		}
		d := delta{service: in.service, instance: in.id, version: in.version, requests: map[reqKey]float64{}, durations: map[durKey]*hist{}}
		switch {
		case !last.start.IsZero() && !last.start.Before(from):
			// Started within the window: counted from zero at its start
			// (the sidecar's clock: a skew of a few seconds moves the
			// rate a little).
			base, d.seconds = nil, last.at.Sub(last.start).Seconds()
		case base != nil && (base.start.Equal(last.start) || base.empty()):
			// The same run of the sidecar — or, for a sample with no
			// series, nothing counted yet: zero totals then, whether the
			// sidecar restarted since or not.
			d.seconds = last.at.Sub(base.at).Seconds()
		}
		if d.seconds < 1 {
			out = append(out, d) // reporting, with no figures yet
			continue
		}
		for i, v := range last.requests {
			if base != nil && i < len(base.requests) {
				if b := base.requests[i]; b <= v {
					v -= b
				}
			}
			if v > 0 {
				d.requests[in.reqs[i]] = v
			}
		}
		for i, h := range last.durations {
			if h == nil {
				continue
			}
			var b *hist
			if base != nil && i < len(base.durations) {
				b = base.durations[i]
			}
			if dh := h.minus(b); dh.count > 0 {
				d.durations[in.durs[i]] = dh
			}
		}
		out = append(out, d)
	}
	return out
}

// minus is h less an earlier b of the same series (nil, or a different
// layout or larger counts — a restart —: h whole).
func (h *hist) minus(b *hist) *hist {
	out := &hist{bounds: h.bounds, counts: slices.Clone(h.counts), count: h.count, sum: h.sum}
	if b == nil || len(b.counts) != len(h.counts) || b.count > h.count || !slices.Equal(b.bounds, h.bounds) {
		return out
	}
	for i, c := range b.counts {
		if c > h.counts[i] {
			return out
		}
	}
	for i, c := range b.counts {
		out.counts[i] -= c
	}
	out.count -= b.count
	out.sum -= b.sum
	return out
}
