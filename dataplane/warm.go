package dataplane

import (
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/micromesh/micromesh/dataplane/config"
)

// warmer puts configs in force in order, holding back one that refers to
// resources that have not arrived yet — which the config in force did not
// miss — once a config is in force: a new cluster whose endpoints come in
// the next response (a split's new version), or a route to a cluster whose
// removal came before the route that stops using it, so that no request
// meets a cluster that is not there or has no endpoints yet. That is
// Envoy's cluster warming, during which it pauses route updates. A held
// config is replaced by any later one, and goes in force anyway after
// within (the first config is not held: the proxy does not serve until it
// is complete, on its own bound). What the config in force misses too (a
// reference the control plane never fills) holds nothing back.
type warmer struct {
	put    func(*config.Config) error
	within time.Duration
	log    *slog.Logger

	mu     sync.Mutex
	closed bool
	// missing is what the config in force misses; nil before the first.
	missing map[string]bool
	held    *config.Config
	timer   *time.Timer
	gen     uint64 // which timer is current: one that fired late is not
}

// offer puts cfg in force, or holds it; an error is put's, for a config
// that was not held.
func (w *warmer) offer(cfg *config.Config) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if missing := w.newlyMissing(cfg); w.missing != nil && len(missing) > 0 {
		w.held = cfg
		if w.timer == nil {
			w.log.Debug("holding a config until what it refers to arrives", "missing", strings.Join(missing, ", "))
			gen := w.gen
			w.timer = time.AfterFunc(w.within, func() { w.timeout(gen) })
		}
		return nil
	}
	w.held = nil
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
		w.gen++
	}
	if err := w.put(cfg); err != nil {
		return err
	}
	w.inForce(cfg)
	return nil
}

// newlyMissing is what cfg misses that the config in force does not.
func (w *warmer) newlyMissing(cfg *config.Config) []string {
	var out []string
	for _, m := range cfg.Missing() {
		if !w.missing[m] {
			out = append(out, m)
		}
	}
	return out
}

// inForce records cfg as the config in force.
func (w *warmer) inForce(cfg *config.Config) {
	w.missing = map[string]bool{}
	for _, m := range cfg.Missing() {
		w.missing[m] = true
	}
}

// timeout puts the held config in force: what it waited for has not come.
func (w *warmer) timeout(gen uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if gen != w.gen {
		return // stopped after it fired: a config in force since
	}
	w.timer = nil
	w.gen++
	cfg := w.held
	if cfg == nil || w.closed {
		return
	}
	w.held = nil
	w.log.Warn("the control plane has not sent everything the config refers to; applying it without", "within", w.within, "missing", strings.Join(w.newlyMissing(cfg), ", "))
	if err := w.put(cfg); err != nil {
		w.log.Error("applying the held config failed; the one in force stays", "err", err)
		return
	}
	w.inForce(cfg)
}

// close ends the holding: a held config is dropped (the sidecar is
// stopping).
func (w *warmer) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed, w.held = true, nil
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
		w.gen++
	}
}

// holding reports whether a config is held.
func (w *warmer) holding() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.held != nil
}
