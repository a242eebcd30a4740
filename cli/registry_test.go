package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/poll"
	adminv1 "github.com/micromesh/micromesh/proto/admin/v1"
	registryv1 "github.com/micromesh/micromesh/proto/registry/v1"
)

func TestRegistryAndServicesCommands(t *testing.T) {
	env := meshtest.NewEnv(t)
	env.StartControlPlane()
	home := string(env.Home)

	for _, args := range [][]string{
		{"registry", "register", "--service", "greeter", "--address", "127.0.0.1:7001", "--id", "greeter-1"},
		{"registry", "register", "--service", "greeter", "--address", "127.0.0.1:7002", "--id", "greeter-2", "--version", "v2", "--kind", "envoy", "--policy", "timeout=2s", "--policy", "/reports/*:timeout=1m"},
		{"registry", "register", "--service", "billing", "-n", "prod", "--address", "10.0.0.9:8443", "--id", "billing-1", "--kind", "builtin", "--quic-port", "8443"},
	} {
		if _, err := runCLI(t, append([]string{"--home", home}, args...)...); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	var got []serviceJSON
	waitFor(t, func() bool {
		out, err := runCLI(t, "--home", home, "-o", "json", "services")
		if err != nil {
			t.Fatal(err)
		}
		got = nil
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err)
		}
		return len(got) == 2
	})
	if got[0].Name != "greeter" || len(got[0].Instances) != 2 || got[1].Namespace != "prod" || got[1].Instances[0].QUICPort != 8443 {
		t.Errorf("services = %+v", got)
	}
	if p := got[0].Policy; len(p) != 2 || p["timeout"] != "2s" || p["/reports/*:timeout"] != "1m" || got[1].Policy != nil {
		t.Errorf("policies = %v, %v; want greeter's timeout=2s and /reports/*:timeout=1m (registered with greeter-2) and none for billing", p, got[1].Policy)
	}
	text, err := runCLI(t, "--home", home, "services", "-n", "default")
	if err != nil || !strings.Contains(text, "greeter-2") || strings.Contains(text, "billing") || !strings.Contains(text, "default/greeter  /reports/*:timeout=1m timeout=2s") {
		t.Errorf("services -n default:\n%s%v", text, err)
	}

	// Bad input gets a clear error and changes nothing.
	for args, mention := range map[string]string{
		"registry register --service greeter --address 127.0.0.1":                                      "HOST:PORT",
		"registry register --service greeter --address 127.0.0.1:99999":                                "port",
		"registry register --service Greeter --address 127.0.0.1:1":                                    "DNS label",
		"registry register --service web --address 127.0.0.1:1 --id greeter-1":                         "AlreadyExists",
		"registry register --service web --address 127.0.0.1:1 --kind nginx":                           "kind",
		"registry register --service web --address 127.0.0.1:1 --kind envoy --quic-port 443":           "QUIC",
		"registry register --service web --address 127.0.0.1:1 --policy retries=many":                  `policy_retries: "many" is not a whole number`,
		"registry register --service web --address 127.0.0.1:1 --policy timout=1s":                     `"policy_timout" is not one of`,
		"registry register --service web --address 127.0.0.1:1 --policy /a:max_requests=5":             "max_requests applies to the whole service, not to one path",
		"registry register --service web --address 127.0.0.1:1 --policy a/b:timeout=1s":                `the path "a/b" does not start with /`,
		"registry register --service web --address 127.0.0.1:1 --kind proxyless --policy rate_limit=5": "a proxyless instance has none",
		"registry register --service web --address 127.0.0.1:1 --policy rate_limit_burst=5":            "rate_limit_burst needs policy_rate_limit",
		"registry deregister --id nope":                                                                "NotFound",
		"registry deregister":                                                                          "--id",
	} {
		_, err := runCLI(t, append([]string{"--home", home}, strings.Fields(args)...)...)
		if err == nil || !strings.Contains(describe(err), mention) {
			t.Errorf("%s: %v; want an error mentioning %q", args, err, mention)
		}
	}
	if _, err := runCLI(t, "--home", home, "registry", "deregister", "--id", "greeter-1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		out, _ := runCLI(t, "--home", home, "services")
		return !strings.Contains(out, "greeter-1") && strings.Contains(out, "greeter-2")
	})
}

func TestWorkloadsMayRegisterOnlyThemselves(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	creds := cp.Join("default", "web")
	client := cp.RegistryClient(creds)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	own := &registryv1.Instance{Id: "web-1", Service: "web", Namespace: "default", Address: "127.0.0.1", Port: 8443, Kind: registry.KindBuiltin}
	if _, err := client.Register(ctx, &registryv1.RegisterRequest{Instance: own}); err != nil {
		t.Fatalf("registering its own service: %v", err)
	}
	other := &registryv1.Instance{Id: "db-1", Service: "db", Namespace: "default", Address: "127.0.0.1", Port: 5432}
	if _, err := client.Register(ctx, &registryv1.RegisterRequest{Instance: other}); err == nil || !strings.Contains(err.Error(), "PermissionDenied") {
		t.Errorf("registering another service: %v; want PermissionDenied", err)
	}
}

func TestBootstrapCommands(t *testing.T) {
	env := meshtest.NewEnv(t)
	env.StartControlPlane()
	home := string(env.Home)
	out := filepath.Join(t.TempDir(), "client")
	if _, err := runCLI(t, "--home", home, "bootstrap", "grpc", "--service", "client", "--out", out); err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(out, "bootstrap.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), `"id": "spiffe://micromesh.local/ns/default/svc/client"`) || !strings.Contains(string(doc), filepath.Join(out, "key.pem")) {
		t.Errorf("bootstrap.json:\n%s", doc)
	}

	envoyJSON, err := runCLI(t, "--home", home, "envoy", "bootstrap", "--service", "web", "--cert-dir", out, "--app-port", "8080", "--instance", "web-1")
	if err != nil {
		t.Fatal(err)
	}
	var b bootstrapv3.Bootstrap
	if err := protojson.Unmarshal([]byte(envoyJSON), &b); err != nil {
		t.Fatalf("envoy bootstrap does not unmarshal strictly: %v", err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("envoy bootstrap: %v", err)
	}
	if b.GetNode().GetId() != "spiffe://micromesh.local/ns/default/svc/web~web-1" {
		t.Errorf("node id %q", b.GetNode().GetId())
	}
	if got := b.GetDynamicResources().GetAdsConfig().GetApiType(); got != corev3.ApiConfigSource_DELTA_GRPC {
		t.Errorf("envoy bootstrap speaks %v, want delta xDS", got)
	}
	sotwJSON, err := runCLI(t, "--home", home, "envoy", "bootstrap", "--service", "web", "--cert-dir", out, "--app-port", "8080", "--xds", "sotw")
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal([]byte(sotwJSON), &b); err != nil || b.GetDynamicResources().GetAdsConfig().GetApiType() != corev3.ApiConfigSource_GRPC {
		t.Errorf("envoy bootstrap --xds sotw: %v, %v", err, b.GetDynamicResources().GetAdsConfig().GetApiType())
	}
	if _, err := runCLI(t, "--home", home, "envoy", "bootstrap", "--service", "web"); err == nil || !strings.Contains(err.Error(), "--cert-dir") {
		t.Errorf("envoy bootstrap without --cert-dir: %v", err)
	}
	tcpJSON, err := runCLI(t, "--home", home, "envoy", "bootstrap", "--service", "web", "--cert-dir", out, "--app-port", "8080",
		"--app-protocol", "tcp", "--upstream", "db=15432", "--upstream", "cache.shop=16379,queue=15672")
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal([]byte(tcpJSON), &b); err != nil {
		t.Fatal(err)
	}
	meta := b.GetNode().GetMetadata().GetFields()
	if got := meta["upstreams"].GetStringValue(); got != "db=15432,queue=15672,cache.shop=16379" {
		t.Errorf("node metadata upstreams = %q", got)
	}
	if got := meta["app_protocol"].GetStringValue(); got != "tcp" {
		t.Errorf("node metadata app_protocol = %q", got)
	}
	for args, want := range map[string]string{
		"--app-protocol ftp":             `--app-protocol "ftp": http, grpc or tcp`,
		"--upstream db":                  `--upstream: upstream "db": want SERVICE[.NAMESPACE]=PORT`,
		"--upstream db=1 --upstream x=1": "one port for two services",
	} {
		_, err := runCLI(t, append([]string{"--home", home, "envoy", "bootstrap", "--service", "web", "--cert-dir", out, "--app-port", "8080"}, strings.Fields(args)...)...)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("envoy bootstrap %s: %v, want %q", args, err, want)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	poll.Until(t, "the condition", 5*time.Second, 20*time.Millisecond, cond)
}

func TestServicesAndProxyStatusRendering(t *testing.T) {
	services := &registryv1.ListServicesResponse{Services: []*registryv1.Service{
		{Name: "greeter", Namespace: "default", Instances: []*registryv1.Instance{
			{Id: "greeter-1", Address: "10.0.0.1", Port: 7000, Kind: "proxyless", Protocol: "grpc", Health: "passing"},
			{Id: "greeter-2", Address: "10.0.0.2", Port: 7000, Kind: "proxyless", Protocol: "grpc", Health: "critical", Version: "v2",
				Metadata: map[string]string{"policy_timeout": "2s", "policy_retries": "0", "team": "growth"}},
			{Id: "greeter-3", Address: "10.0.0.3", Port: 7000, Kind: "proxyless", Protocol: "grpc", Health: "passing", Version: "v3",
				Metadata: map[string]string{"policy_timeout": "5s"}},
		}},
		{Name: "web", Namespace: "prod", Instances: []*registryv1.Instance{
			{Id: "web-1", Address: "10.1.0.1", Port: 8443, QuicPort: 8443, Kind: "builtin", Protocol: "http", Health: "passing"},
		}},
	}}
	golden(t, "services.txt", renderServices(services))

	at := timestamppb.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	status := &adminv1.ProxyStatusResponse{Generation: 7, Proxies: []*adminv1.Proxy{
		{NodeId: "spiffe://micromesh.local/ns/default/svc/client", Kind: "proxyless", ConnectedAt: at, Types: []*adminv1.TypeStatus{
			{Type: "LDS", ServedVersion: "a", AckedVersion: "a"}, {Type: "RDS", ServedVersion: "b", AckedVersion: "b"},
			{Type: "CDS", ServedVersion: "c2", AckedVersion: "c1", NackedVersion: "c2", NackError: "cluster web.prod: bad SAN"},
			{Type: "EDS", ServedVersion: "d2", AckedVersion: "d1"}, {Type: "SDS", ServedVersion: "empty"},
		}},
	}}
	golden(t, "proxy_status.txt", renderProxyStatus(proxyStatus(status)))
}

// A policy the control plane cannot apply is refused at registration,
// with the key, the value and what it takes.
func TestRegistrationRefusesABadPolicy(t *testing.T) {
	cp := meshtest.NewEnv(t).StartControlPlane()
	client := cp.RegistryClient(cp.Join("default", "web"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	in := &registryv1.Instance{Id: "web-1", Service: "web", Namespace: "default", Address: "127.0.0.1", Port: 8443, Kind: registry.KindBuiltin,
		Metadata: map[string]string{"policy_timeout": "soon"}}
	_, err := client.Register(ctx, &registryv1.RegisterRequest{Instance: in})
	if err == nil || !strings.Contains(err.Error(), "InvalidArgument") || !strings.Contains(err.Error(), `policy key policy_timeout: "soon" is not a duration`) {
		t.Fatalf("registering policy_timeout=soon: %v; want InvalidArgument naming the key and value", err)
	}
	in.Metadata = map[string]string{"policy_timeout": "2s", "policy_lb": "round_robin"}
	if _, err := client.Register(ctx, &registryv1.RegisterRequest{Instance: in}); err != nil {
		t.Fatalf("a valid policy: %v", err)
	}
}

func TestSplitCommands(t *testing.T) {
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	home := string(env.Home)
	cli := func(args ...string) (string, error) { return runCLI(t, append([]string{"--home", home}, args...)...) }
	if _, err := cli("registry", "register", "--service", "greeter", "--address", "127.0.0.1:7001", "--id", "greeter-1", "--version", "v1"); err != nil {
		t.Fatal(err)
	}

	out, err := cli("split", "set", "greeter", "v2=10", "v1=90")
	if err != nil {
		t.Fatal(err)
	}
	want := "split greeter.default: v1=90 v2=10\nwarning: no instance of greeter.default has version v2: its share of requests fails (503) until one registers\n"
	if out != want {
		t.Errorf("split set:\n%s\nwant:\n%s", out, want)
	}
	// A split of a service with no instance yet is listed too; a header
	// picks a version whatever the shares.
	out, err = cli("split", "set", "reports", "blue=100", "green=0", "--header", "x-color")
	if err != nil || out != "split reports.default: blue=100 green=0; a request with x-color: VERSION goes to that version\n"+
		"warning: reports.default has no instance registered (is the name right?); the split applies once it has\n" {
		t.Errorf("split set --header: %q, %v", out, err)
	}
	var got []serviceJSON
	waitFor(t, func() bool {
		js, err := cli("-o", "json", "services")
		if err != nil {
			t.Fatal(err)
		}
		got = nil
		if err := json.Unmarshal([]byte(js), &got); err != nil {
			t.Fatal(err)
		}
		return len(got) == 2
	})
	if g := fmt.Sprintf("%s %v %s %v %d", got[0].Name, got[0].Split, got[1].Name, got[1].Split, len(got[1].Instances)); g != "greeter [{v1 90} {v2 10}] reports [{blue 100} {green 0}] 0" {
		t.Errorf("services = %+v", got)
	}
	text, err := cli("services")
	if err != nil || !strings.Contains(text, "default/greeter  v1=90 v2=10  (no instance of v2: its share fails)") || !strings.Contains(text, "default/reports  blue=100 green=0; a request with x-color: VERSION goes to that version  (no instance of blue: its share fails)") {
		t.Errorf("services:\n%s%v", text, err)
	}

	// Bad input gets a clear error and changes nothing.
	for args, mention := range map[string]string{
		"split set greeter":                      "names no version",
		"split set greeter v1":                   "want VERSION=PERCENT",
		"split set greeter v1=ninety":            "whole percentage",
		"split set greeter v1=101":               "whole percentage",
		"split set greeter v1=50 v2=40":          "add up to 90 %",
		"split set greeter v1=50 v1=50":          `"v1" is named twice`,
		"split set greeter v/1=100":              "may hold only",
		"split set greeter v1=100 --header host": "means something else to the mesh",
		"split set Greeter v1=100":               "DNS label",
		"split set greeter -n Prod v1=100":       "DNS label",
		"split clear nothing-split":              "NotFound",
		"split clear":                            "accepts 1 arg",
	} {
		_, err := cli(strings.Fields(args)...)
		if err == nil || !strings.Contains(describe(err), mention) {
			t.Errorf("%s: %v; want an error mentioning %q", args, err, mention)
		}
	}
	if text, _ := cli("services"); !strings.Contains(text, "v1=90 v2=10") {
		t.Errorf("after the refusals:\n%s", text)
	}

	// A workload may split only its own service.
	client := cp.RegistryClient(cp.Join("default", "web"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = client.SetSplit(ctx, &registryv1.SetSplitRequest{Split: &registryv1.Split{Service: "greeter", Versions: []*registryv1.VersionWeight{{Version: "v1", Weight: 100}}}})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("web splitting greeter: %v; want PermissionDenied", err)
	}
	if _, err := client.SetSplit(ctx, &registryv1.SetSplitRequest{Split: &registryv1.Split{Service: "web", Versions: []*registryv1.VersionWeight{{Version: "v1", Weight: 100}}}}); err != nil {
		t.Errorf("web splitting itself: %v", err)
	}

	if out, err := cli("split", "clear", "greeter"); err != nil || out != "split of greeter.default removed: its callers use every instance alike\n" {
		t.Errorf("split clear: %q, %v", out, err)
	}
	waitFor(t, func() bool {
		text, _ := cli("services")
		return !strings.Contains(text, "v1=90")
	})
}
