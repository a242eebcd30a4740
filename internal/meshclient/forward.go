package meshclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"time"

	"github.com/micromesh/micromesh/identity"
)

// ErrNotLoopback is returned for a forward's address that is not on
// loopback.
var ErrNotLoopback = errors.New("not a loopback address")

// CheckForwardAddr checks a local forward's address: loopback only, since
// whoever reaches the port calls as the caller's identity.
func CheckForwardAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s is %w: whoever reaches the port calls as the forward's identity, so it listens on this machine only (127.0.0.1:PORT)", addr, ErrNotLoopback)
	}
	return nil
}

// Forward serves ln until ctx ends: every request, HTTP/1.1 or h2c (gRPC,
// grpcurl, a browser), goes to service name of namespace ns through the
// caller's sidecar, whatever authority the client sent — a local port
// standing for the service, as kubectl port-forward does for a pod. The
// client's other headers (an account's Authorization, say) go as sent.
func (c *Caller) Forward(ctx context.Context, ln net.Listener, ns, name string) error {
	if err := identity.ValidateName("service", name); err != nil {
		return err
	}
	authority := name
	if ns != c.ID.Namespace {
		authority = name + "." + ns
	}
	h1 := &http.Transport{MaxIdleConnsPerHost: 32, IdleConnTimeout: 90 * time.Second, DisableCompression: true}
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	h2c := &http.Transport{Protocols: &protocols, IdleConnTimeout: 90 * time.Second, DisableCompression: true}
	defer h1.CloseIdleConnections()
	defer h2c.CloseIdleConnections()
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", c.outbound
			pr.Out.Host = authority
		},
		// gRPC (HTTP/2 from the client) stays HTTP/2 to the sidecar:
		// trailers, and streams both ways at once.
		Transport: roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			if r.ProtoMajor == 2 {
				return h2c.RoundTrip(r)
			}
			return h1.RoundTrip(r)
		}),
		FlushInterval: -1, // streams, as they come
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, "meshctl port-forward: the sidecar: "+err.Error(), http.StatusBadGateway)
		},
	}
	var serverProtocols http.Protocols
	serverProtocols.SetHTTP1(true)
	serverProtocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: proxy, Protocols: &serverProtocols, ReadHeaderTimeout: 30 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			_ = srv.Close()
		}
		<-done
		return nil
	}
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
