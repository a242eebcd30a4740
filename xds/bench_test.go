package xds

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
)

// benchMesh has services×instances built-in endpoints, all in one namespace:
// the worst case, where every proxy may call every service.
func benchMesh(services, instances int) *Mesh {
	m := &Mesh{TrustDomain: "micromesh.local", Roots: []byte("roots")}
	for s := range services {
		svc := Service{Name: fmt.Sprintf("svc-%04d", s), Namespace: "default", Protocol: ProtocolGRPC}
		for i := range instances {
			svc.Endpoints = append(svc.Endpoints, Endpoint{
				ID: fmt.Sprintf("svc-%04d-%d", s, i), Address: fmt.Sprintf("10.%d.%d.%d", s/250, s%250, i+1),
				Port: 8443, QUICPort: 8443, Kind: KindBuiltin, Health: HealthPassing, Zone: fmt.Sprintf("z%d", i%3),
			})
		}
		m.Services = append(m.Services, svc)
	}
	return WithDefaults(m)
}

var benchProxy = Proxy{NodeID: "spiffe://micromesh.local/ns/default/svc/web~1", Namespace: "default", Service: "web", Kind: KindBuiltin,
	InboundPort: 8443, OutboundPort: 15001, AppPort: 8080, AppProtocol: ProtocolGRPC, CertDir: "/certs"}

// BenchmarkBuild1000x10 is one proxy's full Build: what a control plane
// without sharing would do per proxy per change.
func BenchmarkBuild1000x10(b *testing.B) {
	m := benchMesh(1000, 10)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Build(m, benchProxy); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBuildShared1000x10 builds what all proxies of a namespace and
// kind share: once per change per (namespace, kind).
func BenchmarkBuildShared1000x10(b *testing.B) {
	m := benchMesh(1000, 10)
	b.ReportAllocs()
	for b.Loop() {
		BuildShared(m, "default", KindBuiltin)
	}
}

// BenchmarkBuildForNode1000x10 is the per-proxy part once the shared part
// exists: what each further proxy costs.
func BenchmarkBuildForNode1000x10(b *testing.B) {
	m := benchMesh(1000, 10)
	sh := BuildShared(m, "default", KindBuiltin)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := BuildFor(m, benchProxy, sh); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBaselineMarshal1000x10 is the same-run baseline: marshalling one
// proxy's resources once, the least any server must do to send them.
func BenchmarkBaselineMarshal1000x10(b *testing.B) {
	r, err := Build(benchMesh(1000, 10), benchProxy)
	if err != nil {
		b.Fatal(err)
	}
	var msgs []proto.Message
	for _, x := range r.Listeners {
		msgs = append(msgs, x)
	}
	for _, x := range r.Routes {
		msgs = append(msgs, x)
	}
	for _, x := range r.Clusters {
		msgs = append(msgs, x)
	}
	for _, x := range r.Endpoints {
		msgs = append(msgs, x)
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, m := range msgs {
			if _, err := proto.Marshal(m); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkValidateShared1000x10 is ValidateAll on the shared resources,
// once per change per (namespace, kind).
func BenchmarkValidateShared1000x10(b *testing.B) {
	sh := BuildShared(benchMesh(1000, 10), "default", KindBuiltin)
	b.ReportAllocs()
	for b.Loop() {
		if err := sh.ValidateShared(); err != nil {
			b.Fatal(err)
		}
	}
}
