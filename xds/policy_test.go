package xds

import (
	"maps"
	"strings"
	"testing"
	"time"
)

func TestPolicyFromMetadata(t *testing.T) {
	p, err := PolicyFromMetadata(map[string]string{"policy_timeout": "250ms", "policy_retries": "0", "policy_lb": "round_robin",
		"policy_max_requests": "7", "policy_base_ejection_time": "1s", "policy_max_ejection_percent": "100", "other": "kept out"})
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultPolicy
	want.Timeout, want.Retries, want.LoadBalancer, want.MaxRequests, want.BaseEjectionTime, want.MaxEjectionPercent =
		250*time.Millisecond, 0, "round_robin", 7, time.Second, 100
	if p != want {
		t.Errorf("policy = %+v, want %+v", p, want)
	}
	if p, err := PolicyFromMetadata(nil); err != nil || p != DefaultPolicy {
		t.Errorf("no keys: %+v, %v; want the default policy", p, err)
	}
	for md, mention := range map[string]string{
		"policy_timeout=2":              `"2" is not a duration`,
		"policy_timeout=-1s":            "outside",
		"policy_retries=11":             "from 0 to 10",
		"policy_max_requests=0":         "from 1 to",
		"policy_max_ejection_percent=x": "whole number",
		"policy_lb=random":              "round_robin or least_request",
		"policy_timout=1s":              `policy key "policy_timout" is not one of`,
	} {
		k, v, _ := strings.Cut(md, "=")
		_, err := PolicyFromMetadata(map[string]string{k: v})
		if err == nil || !strings.Contains(err.Error(), mention) {
			t.Errorf("%s: %v, want an error mentioning %q", md, err, mention)
		}
	}
}

func TestPolicyFlagsUndoesPolicyMetadata(t *testing.T) {
	flags := map[string]string{"timeout": "2s", "retries": "0"}
	md := PolicyMetadata(flags)
	md["team"] = "growth" // not a policy key: left out
	if got := PolicyFlags(md); !maps.Equal(got, flags) {
		t.Errorf("PolicyFlags(%v) = %v, want %v", md, got, flags)
	}
	if got := PolicyFlags(map[string]string{"team": "growth"}); got != nil {
		t.Errorf("PolicyFlags without policy keys = %v, want nil", got)
	}
}
