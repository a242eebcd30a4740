package proxy

import (
	"math/rand/v2"
	"net/http"
)

// requestIDHeader carries a request's ID from the first sidecar it passes
// to the app and every sidecar after it, as Envoy's x-request-id: the
// thread that ties their access log lines and the apps' own together.
const requestIDHeader = "X-Request-Id"

// ensureRequestID gives a request that has no x-request-id a new one, as
// Envoy's connection manager does with generate_request_id (its default);
// one the request brings is kept.
func ensureRequestID(h http.Header) {
	if _, ok := h[requestIDHeader]; !ok {
		h[requestIDHeader] = []string{newRequestID()}
	}
}

// newRequestID returns a random (version 4) UUID in its text form, as
// Envoy's request IDs. The runtime's generator (ChaCha8, seeded by the OS,
// per thread) is enough for an ID that must not collide and costs no
// system call, where crypto/rand would cost one per request.
func newRequestID() string {
	hi, lo := rand.Uint64(), rand.Uint64()
	hi = hi&^0xf000 | 0x4000     // version 4
	lo = lo&^(0xc<<60) | 0x8<<60 // variant 10
	var b [36]byte
	const hex = "0123456789abcdef"
	put := func(at int, v uint64, digits int) {
		for i := digits - 1; i >= 0; i-- {
			b[at+i] = hex[v&0xf]
			v >>= 4
		}
	}
	put(0, hi>>32, 8)
	b[8] = '-'
	put(9, hi>>16, 4)
	b[13] = '-'
	put(14, hi, 4)
	b[18] = '-'
	put(19, lo>>48, 4)
	b[23] = '-'
	put(24, lo, 12)
	return string(b[:])
}
