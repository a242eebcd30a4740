package servingcert

import (
	"testing"
	"time"
)

// SetCheckEvery sets how often handshakes look at the files, for a test.
func SetCheckEvery(t *testing.T, d time.Duration) {
	old := checkEvery
	checkEvery = d
	t.Cleanup(func() { checkEvery = old })
}
