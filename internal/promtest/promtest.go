// Package promtest reads metrics back in tests: a counter's value, or a
// histogram's count, by name and exact labels.
package promtest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Count is the value of a counter, or a histogram's count, with exactly
// these labels (Prometheus' text form, sorted by name: a="x",b="y"); 0 if
// there is none.
func Count(t testing.TB, g prometheus.Gatherer, name, labels string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, metric := range f.GetMetric() {
			var ls []string
			for _, l := range metric.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			if strings.Join(ls, ",") == labels {
				return metric.GetCounter().GetValue() + float64(metric.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}
