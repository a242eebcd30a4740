package tracing

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	const valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	c, ok := Parse(valid)
	if !ok || !c.Sampled || c.TraceIDString() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("Parse(%q) = %+v, %v", valid, c, ok)
	}
	if got := c.String(); got != valid {
		t.Errorf("String() = %q, want %q", got, valid)
	}
	if c, ok := Parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"); !ok || c.Sampled {
		t.Errorf("flags 00: %+v, %v; want not sampled", c, ok)
	}
	// A later version may add fields: its first four are read.
	if _, ok := Parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes"); !ok {
		t.Error("a later version with more fields was refused")
	}
	for _, bad := range []string{
		"",
		"garbage",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", // 00 has exactly four fields
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",       // version ff is invalid
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",       // all-zero trace
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",       // all-zero parent
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",       // upper case
		"00-4bf92f3577b34da6a3ce929d0e0e473-x00f067aa0ba902b7-01",
		"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
	} {
		if c, ok := Parse(bad); ok {
			t.Errorf("Parse(%q) = %+v, want refused", bad, c)
		}
	}
}

func TestNewIDs(t *testing.T) {
	seen := map[[16]byte]bool{}
	for range 1000 {
		id := NewTraceID()
		if seen[id] {
			t.Fatal("a trace ID repeated")
		}
		seen[id] = true
	}
	c := Context{TraceID: NewTraceID(), SpanID: NewSpanID()}
	back, ok := Parse(c.String())
	if !ok || back != c {
		t.Fatalf("round trip: %+v → %q → %+v, %v", c, c.String(), back, ok)
	}
	if strings.ToLower(c.String()) != c.String() {
		t.Error("not lower case")
	}
}
