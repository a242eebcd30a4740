package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/micromesh/micromesh/internal/meshtest"
)

func TestStoreCommands(t *testing.T) {
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	cp.StartPlatform()
	home := string(env.Home)
	store := func(args ...string) (string, error) {
		return runCLI(t, append([]string{"--home", home, "store"}, args...)...)
	}
	for _, args := range [][]string{
		{"write", "user/1", "alice"},
		{"write", "user/2", "bob", "--ttl", "1h", "--metadata", "owner=web"},
		{"write", "user/3", "carol"},
		{"write", "o1", "order", "--table", "orders"},
		{"write", "p1", "prod", "--database", "prod"},
	} {
		if _, err := store(args...); err != nil {
			t.Fatalf("store %v: %v", args, err)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"read", "user/1"}, "alice\n"},
		{[]string{"read", "-p", "user/", "-l", "2", "--order", "desc"}, "user/3\tcarol\nuser/2\tbob\n"},
		{[]string{"read", "--suffix", "/1"}, "user/1\talice\n"},
		{[]string{"read", "-p", "user/", "--offset", "2"}, "user/3\tcarol\n"},
		{[]string{"list", "-p", "user/"}, "user/1\nuser/2\nuser/3\n"},
		{[]string{"list", "--table", "orders"}, "o1\n"},
		{[]string{"read", "p1", "--database", "prod"}, "prod\n"},
		{[]string{"databases"}, "default\nprod\n"},
		{[]string{"tables"}, "default\norders\n"},
	} {
		out, err := store(tc.args...)
		if err != nil || out != tc.want {
			t.Errorf("store %v = %q, %v; want %q", tc.args, out, err, tc.want)
		}
	}
	out, err := runCLI(t, "--home", home, "-o", "json", "store", "read", "user/2")
	var recs []recordJSON
	if err != nil || json.Unmarshal([]byte(out), &recs) != nil || recs[0].Metadata["owner"] != "web" || recs[0].Expiry == "" {
		t.Errorf("read -o json = %s, %v", out, err)
	}
	if _, err := store("delete", "user/1"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"read", "user/1"}, "not found"},
		{[]string{"write", "", "x"}, "empty key"},
		{[]string{"write", "k", "v", "--ttl", "0s"}, "must be positive"},
		{[]string{"read", "-p", "x", "--order", "sideways"}, "asc or desc"},
		{[]string{"write", "k", "v", "--table", "a/b"}, "table"},
		{[]string{"write", "k", "v", "--metadata", "novalue"}, "key=value"},
	} {
		if _, err := store(tc.args...); err == nil || !strings.Contains(describe(err), tc.want) {
			t.Errorf("store %v: %v, want %q", tc.args, err, tc.want)
		}
	}
}
