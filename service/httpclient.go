package service

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/micromesh/micromesh/internal/envconfig"
)

// HTTPClient returns an HTTP client whose requests go through this
// service's sidecar at $MESH_PROXY, by name: http://NAME/path reaches an
// HTTP service of the mesh (NAME.NAMESPACE in another namespace), or a
// service outside the mesh that an operator declared (`meshctl external
// set NAME --host HOST`), which the sidecar reaches over TLS with the
// host's certificate checked. URLs are http://: the sidecar opens the TLS
// (mTLS in the mesh). A request made with the context of one being
// served carries its x-request-id and trace context on, as calls through
// Dial do.
func HTTPClient() (*http.Client, error) {
	proxy := os.Getenv(envconfig.Proxy)
	if proxy == "" {
		return nil, fmt.Errorf("service.HTTPClient: %s is not set: calls go through the service's sidecar, which `meshctl run` starts and names there", envconfig.Proxy)
	}
	t := &http.Transport{
		// The sidecar is an HTTP proxy that routes by the request's
		// authority: requests go to it in absolute form.
		Proxy:               http.ProxyURL(&url.URL{Scheme: "http", Host: proxy}),
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}
	return &http.Client{Transport: propagatingTransport{t}}, nil
}

// propagatingTransport sends requests by name through the sidecar,
// carrying the served request's ID and trace context.
type propagatingTransport struct{ next http.RoundTripper }

func (p propagatingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "http" {
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return nil, fmt.Errorf("service.HTTPClient: %s: use http://NAME/…; the sidecar opens TLS to services in and outside the mesh", r.URL.Redacted())
	}
	kv := propagatedFrom(r.Context(), func(k string) bool { return r.Header.Get(k) != "" })
	if len(kv) > 0 {
		r = r.Clone(r.Context()) // a RoundTripper must not change the caller's request
		for i := 0; i < len(kv); i += 2 {
			r.Header.Set(kv[i], kv[i+1])
		}
	}
	return p.next.RoundTrip(r)
}
