package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// grpcLike answers every other request UNAVAILABLE after reading its whole
// body (or only its first byte, with readFirst), and the others with the
// body's length and SHA-256 in headers.
func grpcLike(t *testing.T, n *atomic.Int32, readFirst bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		if n.Add(1)%2 == 1 {
			if readFirst {
				_, _ = r.Body.Read(make([]byte, 1))
			} else {
				_, _ = io.Copy(io.Discard, r.Body)
			}
			w.Header().Set("Grpc-Status", "14")
			return
		}
		h := sha256.New()
		size, _ := io.Copy(h, r.Body)
		w.Header().Set("X-Len", strconv.FormatInt(size, 10))
		w.Header().Set("X-Sum", hex.EncodeToString(h.Sum(nil)))
		w.Header().Set("Grpc-Status", "0")
	}
}

func streamCall(p *Proxy, body io.Reader) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, "http://b/svc/Method", io.NopCloser(body))
	r.ContentLength = -1 // as gRPC over HTTP/2 sends it
	r.Header.Set("Content-Type", "application/grpc")
	p.Outbound().ServeHTTP(w, r)
	return w
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// A streaming body (no content-length, as gRPC's) is kept as it streams, so
// an UNAVAILABLE answer is retried with the whole body — also when the
// first try was turned away before the caller had finished sending.
func TestRetryResendsAStreamingBody(t *testing.T) {
	for _, tc := range []struct {
		name      string
		readFirst bool
		slow      bool
	}{
		{"body read whole, then turned away", false, false},
		{"turned away mid-body, the caller still sending", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int32
			s := httptest.NewServer(grpcLike(t, &n, tc.readFirst))
			t.Cleanup(s.Close)
			p, reg := policyProxy(t, policy{retries: 1, retryOn: "unavailable"}, s)
			payload := []byte(strings.Repeat("0123456789abcdef", 2<<10)) // 32 KiB
			var body io.Reader = strings.NewReader(string(payload))
			if tc.slow {
				pr, pw := io.Pipe()
				go func() {
					for i := 0; i < len(payload); i += 4 << 10 {
						_, _ = pw.Write(payload[i : i+4<<10])
						time.Sleep(20 * time.Millisecond)
					}
					_ = pw.Close()
				}()
				body = pr
			}
			w := streamCall(p, body)
			if w.Header().Get("Grpc-Status") != "0" || w.Header().Get("X-Len") != strconv.Itoa(len(payload)) || w.Header().Get("X-Sum") != sum(payload) {
				t.Fatalf("answer %v, want the retry's, with the whole body (%d bytes)", w.Header(), len(payload))
			}
			if got := counterOf(t, reg, "micromesh_upstream_retries_total"); got != 1 || n.Load() != 2 {
				t.Fatalf("%v retries over %d tries, want 1 over 2", got, n.Load())
			}
		})
	}
}

// A streaming body longer than what the proxy keeps (64 KiB) is not
// retried: the answer is the upstream's.
func TestRetryGivesUpOnALongStreamingBody(t *testing.T) {
	var n atomic.Int32
	s := httptest.NewServer(grpcLike(t, &n, false))
	t.Cleanup(s.Close)
	p, reg := policyProxy(t, policy{retries: 1, retryOn: "unavailable"}, s)
	w := streamCall(p, strings.NewReader(strings.Repeat("x", maxReplayBody+1)))
	if w.Header().Get("Grpc-Status") != "14" || n.Load() != 1 || counterOf(t, reg, "micromesh_upstream_retries_total") != 0 {
		t.Fatalf("answer %v after %d tries, want the upstream's UNAVAILABLE after one", w.Header(), n.Load())
	}
}
