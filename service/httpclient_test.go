package service

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/micromesh/micromesh/internal/envconfig"
)

// HTTPClient sends http://NAME/… to the sidecar in absolute form, the
// served request's ID and trace context with it (a header the caller set
// wins), and refuses https:// URLs, saying why.
func TestHTTPClientGoesThroughTheSidecar(t *testing.T) {
	type seen struct{ host, path, requestID, traceparent string }
	got := make(chan seen, 2)
	sidecar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Host, r.URL.Path, r.Header.Get(RequestIDHeader), r.Header.Get(TraceHeader)}
	}))
	defer sidecar.Close()
	t.Setenv(envconfig.Proxy, strings.TrimPrefix(sidecar.URL, "http://"))
	client, err := HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	tp := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	served := metadata.NewIncomingContext(context.Background(), metadata.Pairs(RequestIDHeader, "req-1", TraceHeader, tp))

	req, _ := http.NewRequestWithContext(served, "GET", "http://payments/v1/charges", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if s := <-got; s != (seen{"payments", "/v1/charges", "req-1", tp}) {
		t.Errorf("the sidecar saw %+v", s)
	}
	if req.Header.Get(RequestIDHeader) != "" {
		t.Error("the caller's request was changed")
	}

	req, _ = http.NewRequestWithContext(served, "GET", "http://payments/", nil)
	req.Header.Set(RequestIDHeader, "mine")
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if s := <-got; s.requestID != "mine" {
		t.Errorf("the caller's own x-request-id replaced: %+v", s)
	}

	if _, err := client.Get("https://payments/"); err == nil || !strings.Contains(err.Error(), "use http://NAME") {
		t.Errorf("an https:// URL: %v", err)
	}
}

func TestUpstreamSaysWhereOrHowToGetIt(t *testing.T) {
	t.Setenv("MESH_UPSTREAM_ORDER_DB_SHOP", "127.0.0.1:40123")
	if addr, err := Upstream("order-db.shop"); err != nil || addr != "127.0.0.1:40123" {
		t.Errorf("Upstream(order-db.shop) = %q, %v", addr, err)
	}
	if _, err := Upstream("cache"); err == nil || !strings.Contains(err.Error(), "meshctl run --upstream cache") || !strings.Contains(err.Error(), "$MESH_UPSTREAM_CACHE") {
		t.Errorf("an upstream not declared: %v", err)
	}
}
