package endpoints

import (
	"strings"
)

// Words name endpoints as Micro's gateway and CLI did: service helloworld's
// endpoint Helloworld.Call is "call" (the method of the gRPC service named
// like the mesh service, or of the only one with that method), or
// "helloworld call" (gRPC service and method, the service short or full);
// letters' case, '-' and '_' do not count. `meshctl helloworld call` and the
// gateway's /helloworld/call read them.

// Match returns the endpoints that words name in a set described from
// mesh service service: one when they name one, none or several
// otherwise (say which with Words).
func (s *Set) Match(service string, words []string) []*Endpoint {
	var found []*Endpoint
	switch len(words) {
	case 1:
		var named []*Endpoint
		for _, ep := range s.Endpoints {
			_, short, method := ep.parts()
			if fold(method) != fold(words[0]) {
				continue
			}
			found = append(found, ep)
			if fold(short) == fold(service) {
				named = append(named, ep)
			}
		}
		if len(found) > 1 && len(named) == 1 {
			found = named
		}
	case 2:
		for _, ep := range s.Endpoints {
			full, short, method := ep.parts()
			if fold(method) == fold(words[1]) && (fold(short) == fold(words[0]) || strings.EqualFold(full, words[0])) {
				found = append(found, ep)
			}
		}
	}
	return found
}

// Words are the fewest words that name ep among the set's endpoints, in
// lower case: ["call"], or ["helloworld", "call"] when the method alone
// would name another too or the gRPC service is not named like service.
func (s *Set) Words(service string, ep *Endpoint) []string {
	_, short, method := ep.parts()
	one := []string{strings.ToLower(method)}
	if m := s.Match(service, one); len(m) == 1 && m[0] == ep {
		return one
	}
	return []string{strings.ToLower(short), strings.ToLower(method)}
}

// parts reads the endpoint's gRPC path /pkg.Service/Method.
func (e *Endpoint) parts() (full, short, method string) {
	full, method, _ = strings.Cut(strings.TrimPrefix(e.Method, "/"), "/")
	short = full[strings.LastIndex(full, ".")+1:]
	return full, short, method
}

// fold compares names as words do.
func fold(s string) string { return strings.ToLower(unseparated.Replace(s)) }

var unseparated = strings.NewReplacer("-", "", "_", "")
