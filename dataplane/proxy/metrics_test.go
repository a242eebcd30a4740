package proxy

import (
	"fmt"
	"sync"
	"testing"
)

// A gRPC method is labelled by its name; past maxMethods names, and for
// paths no gRPC method has, "other" — whatever callers send.
func TestMethodLabelsAreBounded(t *testing.T) {
	var m methodLabels
	for path, want := range map[string]string{
		"/pkg.Svc/Call":  "pkg.Svc/Call",
		"/":              "other",
		"/a/b/c":         "other",
		"/pkg.Svc/":      "other",
		"//Call":         "other",
		"/pkg.Svc/Ca ll": "other",
		"/pkg.Svc/\xff":  "other",
	} {
		if got := m.label(path); got != want {
			t.Errorf("label(%q) = %q, want %q", path, got, want)
		}
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range maxMethods {
				if l := m.label(fmt.Sprintf("/pkg.Svc/M%d", i)); l != fmt.Sprintf("pkg.Svc/M%d", i) && l != "other" {
					t.Errorf("goroutine %d: %q", g, l)
				}
			}
		})
	}
	wg.Wait()
	if got := m.label("/pkg.Svc/Call"); got != "pkg.Svc/Call" {
		t.Errorf("a method seen first keeps its label: %q", got)
	}
	if got := m.label("/pkg.Svc/OneTooMany"); got != "other" {
		t.Errorf("past %d methods: %q, want other", maxMethods, got)
	}
	if n := len(*m.seen.Load()); n != maxMethods {
		t.Errorf("%d labels kept, want %d", n, maxMethods)
	}
}
