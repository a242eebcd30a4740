package traces

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/internal/otlptest"
	"github.com/micromesh/micromesh/internal/poll"
)

func TestForwardSendsKeptSpansOn(t *testing.T) {
	st, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := otlptest.Start(t, 1) // away for the first try: retried
	f, err := NewForwarder(r.Endpoint, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go f.Run(ctx)
	c := NewCollector(st, as(api, nil), nil)
	c.ForwardTo(f)
	now := time.Now()
	if _, err := c.Export(ctx, export("api.default", otlpSpan(3, 1, now), otlpSpan(3, 2, now))); err != nil {
		t.Fatal(err)
	}
	// A refused export is not sent on.
	if _, err := c.Export(ctx, export("web.default", otlpSpan(4, 1, now))); err == nil {
		t.Fatal("another service's spans were kept")
	}
	poll.Until(t, "the spans at the other collector", 10*time.Second, 20*time.Millisecond, func() bool { return len(r.Spans()) == 2 })
	if n, d := f.Stats(); n != 2 || d != 0 {
		t.Errorf("forwarded %d, dropped %d; want 2, 0", n, d)
	}
	if st.Count() != 2 {
		t.Errorf("kept %d spans, want 2 (forwarding is besides keeping)", st.Count())
	}
}

func TestParseForward(t *testing.T) {
	for _, ok := range []string{"http://127.0.0.1:4317", "https://tempo.example.com:4317", "http://jaeger:4317/"} {
		if _, _, err := ParseForward(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "127.0.0.1:4317", "grpc://x:4317", "http://x", "http://x:4317/v1/traces", "http://:4317"} {
		if _, _, err := ParseForward(bad); err == nil || !strings.Contains(err.Error(), "http://HOST:PORT") {
			t.Errorf("%q: %v; want an error saying the form", bad, err)
		}
	}
}
