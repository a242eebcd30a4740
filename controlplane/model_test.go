package controlplane

import (
	"testing"
	"time"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/xds"
	"github.com/micromesh/micromesh/xds/policymeta"
)

// An operator's policy goes over what the instances registered, key by
// key; one that does not fit them is left out; one for a service whose
// instances registered none applies alone.
func TestOperatorPoliciesGoOverRegisteredOnes(t *testing.T) {
	inst := func(svc, id string, policy map[string]string) registry.Instance {
		return registry.Instance{ID: id, Service: svc, Namespace: "default", Address: "127.0.0.1", Port: 8443, Kind: registry.KindBuiltin,
			Protocol: registry.ProtocolHTTP, Metadata: policymeta.Metadata(policy)}
	}
	snap := registry.Snapshot{
		Instances: []registry.Instance{
			inst("a", "a-1", map[string]string{"timeout": "2s", "fault_abort": "503"}),
			inst("b", "b-1", map[string]string{"retries": "1"}),
			inst("c", "c-1", nil),
		},
		Policies: []registry.Policy{
			{Namespace: "default", Service: "a", Keys: map[string]string{"timeout": "5s", "fault_abort_percent": "10"}},
			{Namespace: "default", Service: "b", Keys: map[string]string{"fault_delay_percent": "10"}}, // no delay to give a share of
			{Namespace: "default", Service: "c", Keys: map[string]string{"/slow:fault_delay": "1s"}},
		},
	}
	m := buildMesh("td", nil, snap)
	by := map[string]xds.Service{}
	for _, s := range m.Services {
		by[s.Name] = s
	}
	if p := by["a"].Policy; p.Timeout != 5*time.Second || p.Fault.Abort != 503 || p.Fault.AbortShare != 100_000 {
		t.Errorf("a: %+v; want the operator's timeout and share over the instances' abort", p)
	}
	if p := by["b"].Policy; p.Retries != 1 || p.Fault.Active() {
		t.Errorf("b: %+v; want the instances' policy alone (the operator's does not fit it)", p)
	}
	if c := by["c"]; c.Policy.Timeout != xds.DefaultPolicy.Timeout || len(c.Routes) != 1 || c.Routes[0].Fault.Delay != time.Second {
		t.Errorf("c: %+v, routes %+v; want the defaults with the operator's path fault", c.Policy, c.Routes)
	}
}
