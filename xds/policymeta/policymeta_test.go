package policymeta

import (
	"maps"
	"strings"
	"testing"
)

func TestFlagsUndoMetadata(t *testing.T) {
	flags := map[string]string{"timeout": "2s", "retries": "0", "/pkg.Greeter/Slow:timeout": "30s", "/a:b/c*:retries": "1"}
	md := Metadata(flags)
	for k := range md {
		if strings.Trim(k, "abcdefghijklmnopqrstuvwxyz0123456789_-") != "" || len(k) > 128 {
			t.Errorf("metadata key %q is not one Consul takes", k)
		}
	}
	if md["policy_route_0"] != "/a:b/c*:retries=1" || md["policy_timeout"] != "2s" {
		t.Errorf("metadata = %v", md)
	}
	md["team"] = "growth" // not a policy key: left out
	if got := Flags(md); !maps.Equal(got, flags) {
		t.Errorf("Flags(%v) = %v, want %v", md, got, flags)
	}
	if got := Flags(map[string]string{"team": "growth"}); got != nil || Has(map[string]string{"team": "growth"}) {
		t.Errorf("Flags without policy keys = %v, want nil", got)
	}
	if path, key, ok := SplitRoute("/a:b/c*:retries"); !ok || path != "/a:b/c*" || key != "retries" {
		t.Errorf("SplitRoute = %q, %q, %v", path, key, ok)
	}
}
