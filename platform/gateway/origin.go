package gateway

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// ValidateOrigin checks a trusted origin: scheme://host[:port], http or
// https, nothing else.
func ValidateOrigin(origin string) error {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
		return fmt.Errorf("origin %q: write scheme://host[:port], as a browser sends it (https://app.example.com)", origin)
	}
	return nil
}

// SameOrigin refuses what a browser sends on another site's behalf, so a
// web page cannot call the mesh's services through a gateway on the
// user's machine: a request a browser marks cross-site or same-site
// (Sec-Fetch-Site) or whose Origin is not the gateway's own is refused
// 403, whatever its method (the gateway's GETs call endpoints too). With
// loopbackOnly (a gateway on a loopback address) a Host that is not a
// loopback name is refused 421, so a DNS name rebound to 127.0.0.1 does
// not make another site same-origin. curl, programs and the dashboard's
// own pages send none of that and pass. Pages of a trusted origin
// (scheme://host[:port], exactly) pass too, with CORS: their preflights
// are answered and their answers carry Access-Control-Allow-Origin.
func SameOrigin(next http.Handler, loopbackOnly bool, trusted ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if loopbackOnly && !loopbackHost(r.Host) {
			writeStatus(w, http.StatusMisdirectedRequest, "this gateway listens on loopback and answers requests for localhost, 127.0.0.1 or [::1] only, not "+r.Host)
			return
		}
		if origin := r.Header.Get("Origin"); origin != "" && slices.Contains(trusted, origin) {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", origin)
			h.Add("Vary", "Origin")
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE")
				if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
					h.Set("Access-Control-Allow-Headers", req)
				}
				h.Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusNoContent)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		switch site := r.Header.Get("Sec-Fetch-Site"); site {
		case "", "same-origin", "none": // none: the user typed the address
		default:
			writeStatus(w, http.StatusForbidden, "a "+site+" request from a browser: the gateway answers pages of its own origin only")
			return
		}
		if origin := r.Header.Get("Origin"); origin != "" {
			if u, err := url.Parse(origin); err != nil || u.Host != r.Host {
				writeStatus(w, http.StatusForbidden, "a request from origin "+origin+": the gateway answers pages of its own origin only")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// loopbackHost reports whether a Host header names this machine by a
// loopback name or address.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
