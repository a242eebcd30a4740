package endpoints

import (
	"slices"
	"strings"
	"testing"
)

func TestWords(t *testing.T) {
	set := &Set{}
	for _, m := range []string{"/shop.v1.Orders/Get", "/shop.v1.Orders/List_All", "/shop.v1.Audit/Get", "/shop.v1.Audit/Trail"} {
		set.Endpoints = append(set.Endpoints, &Endpoint{Method: m})
	}
	names := func(eps []*Endpoint) string {
		var out []string
		for _, ep := range eps {
			out = append(out, ep.Method)
		}
		return strings.Join(out, " ")
	}
	for _, tc := range []struct {
		service string
		words   []string
		want    string
	}{
		{"orders", []string{"get"}, "/shop.v1.Orders/Get"},                     // named like the service: it wins
		{"billing", []string{"get"}, "/shop.v1.Orders/Get /shop.v1.Audit/Get"}, // ambiguous
		{"orders", []string{"trail"}, "/shop.v1.Audit/Trail"},                  // the only one
		{"orders", []string{"LISTALL"}, "/shop.v1.Orders/List_All"},            // case, '_' and '-' aside
		{"orders", []string{"audit", "get"}, "/shop.v1.Audit/Get"},
		{"orders", []string{"shop.v1.Audit", "Get"}, "/shop.v1.Audit/Get"},
		{"orders", []string{"nope"}, ""},
		{"orders", []string{"a", "b", "c"}, ""},
	} {
		if got := names(set.Match(tc.service, tc.words)); got != tc.want {
			t.Errorf("Match(%s, %v) = %s, want %s", tc.service, tc.words, got, tc.want)
		}
	}
	for i, want := range [][]string{{"get"}, {"list_all"}, {"audit", "get"}, {"trail"}} {
		if got := set.Words("orders", set.Endpoints[i]); !slices.Equal(got, want) {
			t.Errorf("Words(orders, %s) = %v, want %v", set.Endpoints[i].Method, got, want)
		}
	}
}
