package platform_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/micromesh/micromesh/controlplane/registry"
	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/version"
	"github.com/micromesh/micromesh/platform"
	"github.com/micromesh/micromesh/platform/natsserver"
	brclient "github.com/micromesh/micromesh/service/broker"
	evclient "github.com/micromesh/micromesh/service/events"
)

// With --nats-url the primitives use that NATS and run none of their own:
// what they publish is in the external server's JetStream.
func TestExternalNATS(t *testing.T) {
	external, err := natsserver.Start(filepath.Join(t.TempDir(), "nats"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer external.Shutdown()
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h, err := platform.Start(ctx, platform.Options{Home: env.Home, ControlPlane: cp.Info.Address, NATSURL: external.URLWithCredentials()})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Stop()
	out := cp.StartSidecar("shop", "web").Info.Outbound
	ev := evclient.NewClient(meshtest.DialThrough(t, out, evclient.ServiceName))
	br := brclient.NewClient(meshtest.DialThrough(t, out, brclient.ServiceName))
	for i := 0; ; i++ {
		if _, err = ev.Publish(ctx, "orders", []byte("one")); err == nil {
			break
		} else if i > 400 {
			t.Fatal(err)
		}
		time.Sleep(25 * time.Millisecond)
	}
	// The event is in the external server.
	nc, err := external.Connect("check")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := nc.JetStream()
	found := false
	for name := range js.StreamNames() {
		if info, err := js.StreamInfo(name); err == nil && info.Config.Description == "shop/orders" && info.State.Msgs == 1 {
			found = true
		}
	}
	if !found {
		t.Fatal("the event is not in the external NATS")
	}
	// The broker too: a raw subscriber on the external server hears it.
	sub, err := nc.SubscribeSync("mesh.broker.shop.news")
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	if err := br.Publish(ctx, "news", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil || string(msg.Data) != "hello" {
		t.Fatalf("external subscriber: %v %v", msg, err)
	}
	// The platform's services are registered with the server's version.
	snap, err := registry.List(ctx, cp.Registry())
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, in := range snap.Instances {
		if in.Namespace == identity.SystemNamespace && in.Service != "" {
			seen++
			if in.Version != version.Version {
				t.Errorf("%s registered with version %q, want %q", in.Service, in.Version, version.Version)
			}
		}
	}
	if seen == 0 {
		t.Error("no platform service in the registry")
	}
}
