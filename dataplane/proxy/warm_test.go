package proxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/micromesh/micromesh/dataplane/config"
)

// While the first config lacks what it refers to, the app's calls wait;
// they are answered as soon as it is complete, or, if it never is, once
// the initial fetch timeout has passed.
func TestCallsWaitForTheFirstCompleteConfig(t *testing.T) {
	partial := &config.Config{Outbound: &config.Outbound{Name: "outbound", Route: "outbound"},
		Routes: map[string]*config.RouteTable{}, Clusters: map[string]*config.Cluster{}}
	call := func(p *Proxy) <-chan *httptest.ResponseRecorder {
		done := make(chan *httptest.ResponseRecorder, 1)
		go func() {
			w := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodGet, "http://b/", nil)
			p.Outbound().ServeHTTP(w, r)
			done <- w
		}()
		return done
	}

	t.Run("answered once complete", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		p := New(nil, Options{InitialFetchTimeout: time.Minute, Metrics: reg})
		defer p.Close()
		if err := p.Apply(partial); err != nil {
			t.Fatal(err)
		}
		if v := gaugeOf(t, reg, "micromesh_config_warming"); v != 1 {
			t.Errorf("micromesh_config_warming = %v while warming, want 1", v)
		}
		done := call(p)
		select {
		case w := <-done:
			t.Fatalf("answered %d before the routes arrived", w.Code)
		case <-time.After(200 * time.Millisecond):
		}
		complete := *partial
		complete.Routes = map[string]*config.RouteTable{"outbound": {}}
		if err := p.Apply(&complete); err != nil {
			t.Fatal(err)
		}
		select {
		case w := <-done:
			if !strings.Contains(w.Body.String(), `"b" is not a service in the mesh`) {
				t.Fatalf("answered %d %q, want the complete config's answer", w.Code, w.Body.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatal("still waiting after the config became complete")
		}
		if v := gaugeOf(t, reg, "micromesh_config_warming"); v != 0 {
			t.Errorf("micromesh_config_warming = %v once warm, want 0", v)
		}
	})

	t.Run("answered after the timeout", func(t *testing.T) {
		p := New(nil, Options{InitialFetchTimeout: 100 * time.Millisecond})
		defer p.Close()
		if err := p.Apply(partial); err != nil {
			t.Fatal(err)
		}
		select {
		case w := <-call(p):
			if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "has not received its routes yet") {
				t.Fatalf("answered %d %q", w.Code, w.Body.String())
			}
		case <-time.After(10 * time.Second):
			t.Fatal("still waiting long after the initial fetch timeout")
		}
	})
}

// gaugeOf reads a gauge from reg.
func gaugeOf(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// Requests for authorities the sidecar knows nothing of are counted as
// one destination, "unknown": an app's random Host values do not each
// make a metric series (the message still names the host).
func TestUnknownAuthoritiesAreOneDestination(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := New(nil, Options{Metrics: reg})
	defer p.Close()
	if err := p.Apply(&config.Config{Outbound: &config.Outbound{Name: "outbound", Route: "outbound"},
		Routes: map[string]*config.RouteTable{"outbound": {}}, Clusters: map[string]*config.Cluster{}}); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		w := httptest.NewRecorder()
		p.Outbound().ServeHTTP(w, httptest.NewRequest(http.MethodGet, fmt.Sprintf("http://random-%d/", i), nil))
		if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), fmt.Sprintf(`"random-%d" is not a service in the mesh`, i)) {
			t.Fatalf("random-%d: %d %q", i, w.Code, w.Body.String())
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	dests := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "micromesh_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "destination" {
					dests[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	if len(dests) != 1 || dests[UnknownDestination] != 50 {
		t.Errorf("destinations counted: %v, want 50 requests to %q alone", dests, UnknownDestination)
	}
}
