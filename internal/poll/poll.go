// Package poll is for tests that wait for something to become true: they
// look again every few milliseconds, up to a bound, rather than sleep a
// guessed while.
package poll

import (
	"testing"
	"time"
)

// Until calls cond until it reports true, every interval, and fails t
// (naming what it waited for) if that takes longer than within.
func Until(t testing.TB, what string, within, interval time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", within, what)
		}
		time.Sleep(interval)
	}
}
