package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"testing"
)

func TestAuthority(t *testing.T) {
	for in, want := range map[string]string{
		"echo":               "echo",
		"echo:8080":          "echo",
		"Echo.Default":       "echo.default",
		"ECHO.default:80":    "echo.default",
		"[::1]":              "[::1]",
		"[::1]:8080":         "::1",
		"127.0.0.1:15001":    "127.0.0.1",
		"a:b:c":              "a:b:c", // not host:port: kept, as net.SplitHostPort refuses it
		"":                   "",
		"svc.ns.svc:9":       "svc.ns.svc",
		"[fe80::1%25eth0]:1": "fe80::1%25eth0",
	} {
		if got := authority(in); got != want {
			t.Errorf("authority(%q) = %q, want %q", in, got, want)
		}
	}
}

func certWith(raw string, uris ...string) *x509.Certificate {
	c := &x509.Certificate{Raw: []byte(raw)}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			panic(err)
		}
		c.URIs = append(c.URIs, pu)
	}
	return c
}

func requestFrom(c *x509.Certificate) *http.Request {
	r := &http.Request{}
	if c != nil {
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}}
	}
	return r
}

func TestPeerCacheDerivesTheCallerOncePerCertificate(t *testing.T) {
	var pc peerCache
	a := certWith("cert-a", "spiffe://mesh.local/ns/shop/svc/cart")
	for range 3 {
		got := pc.peer(requestFrom(a))
		if got.id != "spiffe://mesh.local/ns/shop/svc/cart" || got.workload != "cart.shop" {
			t.Fatalf("peer = %+v", got)
		}
	}
	if n := len(pc.m); n != 1 {
		t.Fatalf("cache holds %d entries, want 1", n)
	}
	// A request of a renewed certificate (other bytes) is its own entry.
	b := certWith("cert-a-renewed", "spiffe://mesh.local/ns/shop/svc/orders")
	if got := pc.peer(requestFrom(b)); got.workload != "orders.shop" {
		t.Fatalf("renewed cert: peer = %+v", got)
	}
	if got := pc.peer(requestFrom(a)); got.workload != "cart.shop" {
		t.Fatalf("first cert again: peer = %+v", got)
	}
}

func TestPeerCacheRefusesWhatIsNotOneSPIFFEID(t *testing.T) {
	var pc peerCache
	for name, r := range map[string]*http.Request{
		"no TLS":       requestFrom(nil),
		"no URI":       requestFrom(certWith("none")),
		"two URIs":     requestFrom(certWith("two", "spiffe://td/ns/a/svc/b", "spiffe://td/ns/c/svc/d")),
		"no peer cert": {TLS: &tls.ConnectionState{}},
	} {
		if got := pc.peer(r); got != (peer{}) {
			t.Errorf("%s: peer = %+v, want none", name, got)
		}
	}
	if got := pc.peer(requestFrom(certWith("odd", "spiffe://td/elsewhere"))); got.id != "spiffe://td/elsewhere" || got.workload != "unknown" {
		t.Errorf("a SPIFFE ID not of a workload: peer = %+v, want its ID and workload unknown", got)
	}
}

func TestPeerCacheStaysBounded(t *testing.T) {
	var pc peerCache
	for i := range 3 * maxPeers {
		c := certWith(fmt.Sprint("cert-", i), fmt.Sprintf("spiffe://td/ns/n/svc/s%d", i))
		if got := pc.peer(requestFrom(c)); got.workload != fmt.Sprintf("s%d.n", i) {
			t.Fatalf("cert %d: peer = %+v", i, got)
		}
		if len(pc.m) > maxPeers {
			t.Fatalf("cache grew to %d entries, past %d", len(pc.m), maxPeers)
		}
	}
}
