package upstreams

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	us, err := Parse(" cache.shop=16379, db=15432 ,")
	if err != nil {
		t.Fatal(err)
	}
	if got := Format(us); got != "db=15432,cache.shop=16379" {
		t.Errorf("Format(Parse) = %q, want sorted by port", got)
	}
	if us, err := Parse(""); err != nil || len(us) != 0 {
		t.Errorf("Parse(\"\") = %v, %v", us, err)
	}
}

func TestParseRefuses(t *testing.T) {
	for in, want := range map[string]string{
		"db":                   "want SERVICE[.NAMESPACE]=PORT",
		"db=":                  `port "" is not a port number`,
		"db=0":                 `port "0" is not a port number`,
		"db=70000":             `port "70000" is not a port number`,
		"Db=1":                 "is not a service",
		"db.Shop=1":            "is not a service",
		"db=1,cache=1":         "one port for two services",
		"db=1,db=2":            "one service at two ports",
		"db.shop=1,db.shop=2":  "one service at two ports",
		"=15432":               "is not a service",
		"db=15432,=":           "is not a service",
		"db.shop.extra=1":      "is not a service",
		"db=15432,cache=x5432": `port "x5432"`,
	} {
		if _, err := Parse(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error saying %q", in, err, want)
		}
	}
	// The same name in two namespaces is two services.
	if _, err := Parse("db=1,db.shop=2"); err != nil {
		t.Errorf("db and db.shop: %v", err)
	}
}
