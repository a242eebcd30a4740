package proxy

import (
	"net/http"
	"testing"

	"github.com/micromesh/micromesh/dataplane/config"
)

// The decision for a request with no trace context is its x-request-id's,
// as Envoy's: the trace status in the UUID, else its first 8 hex digits
// mod 10,000 against the sampling in hundredths of a percent — the same
// at every hop. A traced ID is marked sampled ('9').
func TestSampledByRequestID(t *testing.T) {
	onePercent := &config.Tracing{Sampling: 0.01}
	for _, tc := range []struct {
		id       string
		sampling *config.Tracing
		want     bool
		marked   string
	}{
		{"00000063-0000-4000-8000-000000000000", onePercent, true, "00000063-0000-9000-8000-000000000000"}, // 99 < 100
		{"00000064-0000-4000-8000-000000000000", onePercent, false, ""},                                    // 100
		{"00002773-0000-4000-8000-000000000000", onePercent, true, "00002773-0000-9000-8000-000000000000"}, // 0x2773 = 10,099: 99 mod 10,000
		{"ffffffff-0000-4000-8000-000000000000", &config.Tracing{Sampling: 1}, true, "ffffffff-0000-9000-8000-000000000000"},
		{"00000000-0000-4000-8000-000000000000", &config.Tracing{Sampling: 0}, false, ""},
		{"12345678-0000-9000-8000-000000000000", &config.Tracing{Sampling: 0}, true, ""}, // sampled upstream
		{"12345678-0000-a000-8000-000000000000", &config.Tracing{Sampling: 0}, true, ""}, // forced
		{"12345678-0000-b000-8000-000000000000", &config.Tracing{Sampling: 0}, true, ""}, // the client's
		{"not-a-uuid-but-long-enough-to-look-like-one", &config.Tracing{Sampling: 0}, false, ""},
	} {
		h := http.Header{requestIDHeader: {tc.id}}
		if got := sampledByRequestID(h, tc.sampling); got != tc.want {
			t.Errorf("%s at %v: sampled %v, want %v", tc.id, tc.sampling.Sampling, got, tc.want)
		}
		want := tc.marked
		if want == "" {
			want = tc.id
		}
		if got := h.Get(requestIDHeader); got != want {
			t.Errorf("%s: the ID became %s, want %s", tc.id, got, want)
		}
	}
}
