package meshclient

import (
	"math/rand/v2"
	"strings"
	"testing"

	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
)

// meshctl call picks an instance as the mesh's callers would: any
// healthy one, or under a split one of a version drawn by its shares.
func TestPickInstanceFollowsTheSplit(t *testing.T) {
	in := func(id, version, health string) *registryv1.Instance {
		return &registryv1.Instance{Id: id, Version: version, Health: health, Address: "127.0.0.1", Port: 9000}
	}
	list := func(splits ...*registryv1.Split) *registryv1.ListServicesResponse {
		return &registryv1.ListServicesResponse{
			Services: []*registryv1.Service{{Name: "hello", Namespace: "default", Instances: []*registryv1.Instance{
				in("a1", "v1", "passing"), in("a2", "v1", "passing"), in("b1", "v2", "passing"), in("b2", "v2", "critical"), in("c1", "v3", "passing")}}},
			Splits: splits,
		}
	}
	split := func(weights ...uint32) *registryv1.Split {
		sp := &registryv1.Split{Service: "hello", Namespace: "default"}
		for i, w := range weights {
			sp.Versions = append(sp.Versions, &registryv1.VersionWeight{Version: []string{"v1", "v2"}[i], Weight: w})
		}
		return sp
	}
	r := rand.New(rand.NewPCG(1, 2))
	picks := func(l *registryv1.ListServicesResponse) map[string]int {
		got := map[string]int{}
		for range 1000 {
			inst, err := pickInstance(l, "default", "hello", r.IntN)
			if err != nil {
				t.Fatal(err)
			}
			got[inst.GetId()]++
		}
		return got
	}
	if got := picks(list()); len(got) != 4 || got["b2"] != 0 {
		t.Errorf("no split: %v; want every healthy instance, the unhealthy never", got)
	}
	if got := picks(list(split(0, 100))); len(got) != 1 || got["b1"] != 1000 {
		t.Errorf("v1=0 v2=100: %v; want v2's healthy instance alone (v3, not named, nothing)", got)
	}
	if got := picks(list(split(90, 10))); got["a1"]+got["a2"] < 850 || got["b1"] < 50 || got["c1"] != 0 {
		t.Errorf("v1=90 v2=10: %v", got)
	}
	l := list(split(0, 100))
	l.Services[0].Instances[2].Health = "critical"
	if _, err := pickInstance(l, "default", "hello", r.IntN); err == nil || !strings.Contains(err.Error(), "split sends its calls to versions with no healthy instance") {
		t.Errorf("the split's version down: %v", err)
	}
	if _, err := pickInstance(l, "default", "bye", r.IntN); err == nil || !strings.Contains(err.Error(), `service "bye" is not running in namespace "default"; it has: hello`) {
		t.Errorf("an unknown service: %v", err)
	}
}
