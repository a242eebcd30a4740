package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/micromesh/micromesh/identity"
)

// peer is what the inbound side derives from a caller's certificate.
type peer struct {
	id       string // SPIFFE ID
	workload string // "name.namespace", for metrics
	// x-forwarded-client-cert values as Envoy writes them: By (this
	// workload) and Hash (SHA-256 of the certificate, hex); then URI.
	xfcc, xfccURI string
	// revoked, if not "", says why the certificate is refused: the CA
	// revoked it after the connection was made.
	revoked string
}

// maxPeers bounds the cache; past it the cache starts over.
const maxPeers = 256

// peerCache maps certificates (by their DER bytes) to what the proxy
// derives from them: every request of a connection carries the same
// certificate, and the lookup allocates nothing where formatting the
// SPIFFE ID and the workload name would, per request.
type peerCache struct {
	by      string // this workload's SPIFFE ID, for XFCC's By
	mu      sync.RWMutex
	m       map[string]peer
	revoked *identity.Revocations // what peers are checked against
}

// setRevocations checks peers against r from now on: the cache starts
// over, so a connection made before a certificate was revoked has its
// next request refused.
func (c *peerCache) setRevocations(r *identity.Revocations) {
	c.mu.Lock()
	c.revoked = r
	c.m = nil
	c.mu.Unlock()
}

// peer returns the verified caller of r, or the zero peer if r carries no
// certificate with exactly one URI SAN.
func (c *peerCache) peer(r *http.Request) peer {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return peer{}
	}
	cert := r.TLS.PeerCertificates[0]
	c.mu.RLock()
	p, ok := c.m[string(cert.Raw)]
	c.mu.RUnlock()
	if ok {
		return p
	}
	if len(cert.URIs) != 1 {
		return peer{}
	}
	id := cert.URIs[0].String()
	p = peer{id: id, workload: workload(id)}
	sum := sha256.Sum256(cert.Raw)
	p.xfcc = "Hash=" + hex.EncodeToString(sum[:])
	if c.by != "" {
		p.xfcc = "By=" + c.by + ";" + p.xfcc
	}
	p.xfccURI = p.xfcc + ";URI=" + id
	c.mu.Lock()
	if c.revoked != nil {
		if sid, err := identity.IDFromCertificate(cert); err == nil {
			if err := c.revoked.Check(sid, r.TLS.PeerCertificates); err != nil {
				p.revoked = err.Error()
			}
		}
	}
	if c.m == nil || len(c.m) >= maxPeers {
		c.m = make(map[string]peer)
	}
	c.m[string(cert.Raw)] = p
	c.mu.Unlock()
	return p
}

// workload turns a SPIFFE ID into "name.namespace" for metrics.
func workload(spiffe string) string {
	_, path, ok := strings.Cut(strings.TrimPrefix(spiffe, "spiffe://"), "/")
	if !ok {
		return "unknown"
	}
	parts := strings.Split(path, "/")
	if len(parts) != 4 {
		return "unknown"
	}
	return parts[3] + "." + parts[1]
}

// authority returns the host of an authority, lower-cased, without a port.
func authority(h string) string {
	// Only an authority that may have a port is split (no error to build
	// for the common "name" with none).
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
		}
	}
	return strings.ToLower(h)
}
