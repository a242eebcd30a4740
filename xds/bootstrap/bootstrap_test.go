package bootstrap

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

func TestEnvoyBootstrapUnmarshalsStrictlyAndValidates(t *testing.T) {
	for _, cp := range []string{"127.0.0.1:8443", "controlplane.mesh.internal:8443"} {
		b, err := Envoy(EnvoyOptions{
			ControlPlane: cp, ControlPlaneID: "spiffe://micromesh.local/ns/micromesh/svc/controlplane",
			NodeID: "spiffe://micromesh.local/ns/default/svc/web~web-1", Cluster: "web", CertDir: "/etc/envoy/certs",
			Metadata: map[string]any{"kind": "envoy", "inbound_port": 15006, "outbound_port": 15001, "app_port": 8080, "cert_dir": "/etc/envoy/certs"},
		})
		if err != nil {
			t.Fatal(err)
		}
		doc, err := protojson.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		var back bootstrapv3.Bootstrap
		if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(doc, &back); err != nil {
			t.Fatalf("%s: strict unmarshal: %v", cp, err)
		}
		if err := back.ValidateAll(); err != nil {
			t.Fatalf("%s: ValidateAll: %v", cp, err)
		}
		if back.GetNode().GetId() != "spiffe://micromesh.local/ns/default/svc/web~web-1" {
			t.Errorf("node id = %q", back.GetNode().GetId())
		}
	}
}

func TestEnvoyBootstrapRequiresIdentity(t *testing.T) {
	if _, err := Envoy(EnvoyOptions{ControlPlane: "127.0.0.1:8443"}); err == nil {
		t.Fatal("a bootstrap without node ID and certificates was built")
	}
}

func TestGRPCBootstrap(t *testing.T) {
	doc, err := GRPC(GRPCOptions{ServerURI: "127.0.0.1:8443", NodeID: "spiffe://micromesh.local/ns/default/svc/client", Cluster: "client",
		Files: Files{Cert: "/c/cert.pem", Key: "/c/key.pem", Bundle: "/c/bundle.pem"}, Refresh: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"type": "tls"`, `"plugin_name": "file_watcher"`, `"refresh_interval": "300s"`, `"kind": "proxyless"`, `"server_features"`} {
		if !strings.Contains(string(doc), want) {
			t.Errorf("bootstrap lacks %s:\n%s", want, doc)
		}
	}
	if _, err := GRPC(GRPCOptions{ServerURI: "x:1", NodeID: "n"}); err == nil {
		t.Error("a bootstrap without certificate files was built")
	}
}
