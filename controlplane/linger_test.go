package controlplane

import (
	"fmt"
	"testing"
	"time"

	"github.com/micromesh/micromesh/xds"
)

func meshWithSplit(split ...xds.VersionWeight) *xds.Mesh {
	return &xds.Mesh{Services: []xds.Service{{Name: "b", Namespace: "default", Split: split}}}
}

// A version a split stops naming keeps its cluster (a share of 0: no
// route) for lingerFor, so that callers that get the route change late
// still find it; named again, it is a version like any other.
func TestDroppedVersionsLinger(t *testing.T) {
	var l lingering
	t0 := time.Unix(1000, 0)
	split := func(m *xds.Mesh) string { return fmt.Sprint(m.Services[0].Split) }

	m := meshWithSplit(xds.VersionWeight{Version: "v1", Weight: 10}, xds.VersionWeight{Version: "v2", Weight: 90})
	if next := l.apply(m, t0); !next.IsZero() || split(m) != "[{v1 10} {v2 90}]" {
		t.Fatalf("first mesh: %s, next %v", split(m), next)
	}
	// The split is cleared: both versions linger as shares of 0.
	m = meshWithSplit()
	next := l.apply(m, t0.Add(time.Second))
	if split(m) != "[{v1 0} {v2 0}]" || !next.Equal(t0.Add(time.Second+lingerFor)) {
		t.Fatalf("cleared: %s, next %v", split(m), next)
	}
	// Still within the time: still there.
	m = meshWithSplit()
	if l.apply(m, t0.Add(lingerFor)); split(m) != "[{v1 0} {v2 0}]" {
		t.Fatalf("within lingerFor: %s", split(m))
	}
	// Past it: gone.
	m = meshWithSplit()
	if next := l.apply(m, t0.Add(time.Second+lingerFor)); split(m) != "[]" || !next.IsZero() {
		t.Fatalf("past lingerFor: %s, next %v", split(m), next)
	}

	// A version dropped and named again does not linger afterwards.
	l = lingering{}
	l.apply(meshWithSplit(xds.VersionWeight{Version: "v1", Weight: 100}), t0)
	l.apply(meshWithSplit(xds.VersionWeight{Version: "v2", Weight: 100}), t0)
	m = meshWithSplit(xds.VersionWeight{Version: "v1", Weight: 50}, xds.VersionWeight{Version: "v2", Weight: 50})
	if l.apply(m, t0); split(m) != "[{v1 50} {v2 50}]" {
		t.Fatalf("named again: %s", split(m))
	}
	// A service that is gone takes its lingering versions with it.
	l.apply(&xds.Mesh{}, t0)
	if len(l.until) != 0 {
		t.Errorf("a gone service's versions linger: %v", l.until)
	}
}
