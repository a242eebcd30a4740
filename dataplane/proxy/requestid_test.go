package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"testing"
)

// uuid4 is a random UUID's text form (version 4, variant 10).
var uuid4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestNewRequestIDIsARandomUUID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := newRequestID()
		if !uuid4.MatchString(id) {
			t.Fatalf("%q is not a version 4 UUID", id)
		}
		if seen[id] {
			t.Fatalf("%q twice in 1,000", id)
		}
		seen[id] = true
	}
}

// Both sides set x-request-id on a request that has none and keep one it
// has, as Envoy's connection manager does (generate_request_id); off, they
// leave the request alone.
func TestRequestIDsAsEnvoy(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Header.Get("X-Request-Id"))
	}))
	t.Cleanup(app.Close)
	p := inboundProxy(t, app)
	send := func(side http.Handler, id string) string {
		t.Helper()
		r := httptest.NewRequest(http.MethodGet, "http://b/thing", nil)
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{certWith("caller", "spiffe://td/ns/default/svc/a")}}
		if id != "" {
			r.Header.Set("X-Request-Id", id)
		}
		w := httptest.NewRecorder()
		side.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		return w.Body.String()
	}
	set := func(on bool) {
		cfg := *p.Config()
		out, in := *cfg.Outbound, *cfg.Inbound
		out.RequestID, in.RequestID = on, on
		cfg.Outbound, cfg.Inbound = &out, &in
		if err := p.Apply(&cfg); err != nil {
			t.Fatal(err)
		}
	}
	set(true)
	for name, side := range map[string]http.Handler{"outbound": p.Outbound(), "inbound": p.Inbound()} {
		first, second := send(side, ""), send(side, "")
		if !uuid4.MatchString(first) || first == second {
			t.Errorf("%s: request IDs %q and %q, want two different UUIDs", name, first, second)
		}
		if got := send(side, "from-the-caller"); got != "from-the-caller" {
			t.Errorf("%s: the caller's x-request-id arrived as %q", name, got)
		}
	}
	set(false)
	for name, side := range map[string]http.Handler{"outbound": p.Outbound(), "inbound": p.Inbound()} {
		if got := send(side, ""); got != "" {
			t.Errorf("%s with generate_request_id false: x-request-id %q", name, got)
		}
	}
}
