package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/micromesh/micromesh/internal/atomicfile"
)

// savedService is what the runtime remembers of a service across restarts
// of the server.
type savedService struct {
	Spec   Spec   `json:"spec"`
	Binary string `json:"binary"`
}

func (rt *Runtime) statePath() string { return filepath.Join(rt.o.Home.Runtime(), "services.json") }

func (rt *Runtime) loadState() ([]savedService, error) {
	data, err := os.ReadFile(rt.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var saved []savedService
	if err := json.Unmarshal(data, &saved); err != nil {
		return nil, fmt.Errorf("runtime state %s: %w", rt.statePath(), err)
	}
	return saved, nil
}

// saveState writes the services that run (or are starting), atomically.
func (rt *Runtime) saveState() error {
	rt.mu.Lock()
	saved := []savedService{}
	for _, s := range rt.services {
		s.mu.Lock()
		if s.status != "stopped" && s.binary != "" {
			saved = append(saved, savedService{Spec: s.spec, Binary: s.binary})
		}
		s.mu.Unlock()
	}
	rt.mu.Unlock()
	sort.Slice(saved, func(i, j int) bool {
		a, b := saved[i].Spec, saved[j].Spec
		return key(a.Namespace, a.Name, a.Version) < key(b.Namespace, b.Name, b.Version)
	})
	data, err := json.MarshalIndent(saved, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(rt.o.Home.Runtime(), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(rt.statePath(), data, 0o600)
}
