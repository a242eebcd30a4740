package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/micromesh/micromesh/dataplane/config"
)

// maxMirrorTime bounds a copy on a route with no timeout of its own (gRPC
// routes): Envoy's default route timeout.
const maxMirrorTime = 15 * time.Second

// maxMirrorAnswer is how much of a mirror's answer is read (and dropped)
// before the stream is closed.
const maxMirrorAnswer = 1 << 20

// mirrorTarget is a mirror one request fell in, with the upstream its
// copy goes to.
type mirrorTarget struct {
	m  config.Mirror
	up *upstream
}

// mirrorsFor rolls route's mirrors for one request. A mirror whose cluster
// the proxy does not have is skipped and counted, as Envoy skips it.
func (p *Proxy) mirrorsFor(st *state, route *config.Route) []mirrorTarget {
	var out []mirrorTarget
	for _, m := range route.Mirrors {
		if !m.Share.Roll() {
			continue
		}
		up := st.upstreams[m.Cluster]
		if up == nil {
			p.m.mirrored.WithLabelValues(m.Cluster, "no_cluster").Inc()
			continue
		}
		out = append(out, mirrorTarget{m: m, up: up})
	}
	return out
}

// mirror sends a copy of r (its headers as forward is about to send them,
// its body as it streams) to each target and drops the answers. A copy
// never holds up the original: it runs on its own, its body follows what
// the original reads (a body past the 64 KiB the proxy keeps resets the
// copy), it is not retried, and it lives at most the route's timeout.
func (p *Proxy) mirror(targets []mirrorTarget, r *http.Request, rt *config.Route, body *replayable) {
	for _, t := range targets {
		up, name := t.up, t.up.cluster.Name
		if lim := up.cluster.Limits.MaxRequests; lim > 0 && up.active.Load() >= int64(lim) {
			p.m.overflow.WithLabelValues(name).Inc()
			p.m.mirrored.WithLabelValues(name, "overflow").Inc()
			continue
		}
		ep := up.lb.pick(nil)
		if ep == nil {
			p.m.mirrored.WithLabelValues(name, "no_endpoint").Inc()
			continue
		}
		timeout := rt.Timeout
		if timeout <= 0 {
			timeout = maxMirrorTime
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		copyBody := body.follower()
		follower, _ := copyBody.(*keptCursor)
		cut := func() bool { return follower != nil && follower.cut.Load() }
		out := (&http.Request{
			Method:        r.Method,
			URL:           &url.URL{Scheme: up.scheme, Host: ep.addr, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery},
			Proto:         "HTTP/1.1",
			ProtoMajor:    1,
			ProtoMinor:    1,
			Header:        r.Header.Clone(),
			Host:          t.m.ShadowHost(r.Host),
			Body:          copyBody,
			ContentLength: r.ContentLength,
		}).WithContext(ctx)
		if out.Body == http.NoBody {
			out.ContentLength = 0
		}
		up.active.Add(1)
		ep.active.Add(1)
		go func() {
			defer cancel()
			defer up.active.Add(-1)
			defer ep.active.Add(-1)
			resp, err := up.rt.RoundTrip(out)
			if err != nil {
				outcome := "reset"
				if cut() || errors.Is(err, errBodyNotKept) {
					outcome = "body_not_kept" // the copy's fault, not the endpoint's
				} else {
					up.lb.report(ep, localFailure)
				}
				p.m.mirrored.WithLabelValues(name, outcome).Inc()
				p.log.Debug("mirror failed", "cluster", name, "endpoint", ep.addr, "path", out.URL.Path, "err", err)
				return
			}
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxMirrorAnswer))
			resp.Body.Close()
			outcome := codeLabel(resp.StatusCode)
			switch {
			case cut():
				outcome = "body_not_kept" // answered, but to a body cut short
			case resp.StatusCode >= 500:
				up.lb.report(ep, serverError)
			default:
				up.lb.report(ep, success)
			}
			p.m.mirrored.WithLabelValues(name, outcome).Inc()
		}()
	}
}
