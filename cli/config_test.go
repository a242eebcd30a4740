package cli

import (
	"strings"
	"testing"

	"github.com/micromesh/micromesh/internal/meshtest"
)

func TestConfigCommands(t *testing.T) {
	env := meshtest.NewEnv(t)
	cp := env.StartControlPlane()
	cp.StartPlatform()
	home := string(env.Home)
	config := func(args ...string) (string, error) {
		return runCLI(t, append([]string{"--home", home, "config"}, args...)...)
	}
	for _, args := range [][]string{
		{"set", "db.pool", `{"size":20}`},
		{"set", "db.host", "db.internal"}, // not JSON: a string
		{"set", "db.password", "hunter2", "--secret"},
		{"set", "shop.mode", `"live"`, "-n", "shop"},
	} {
		if _, err := config(args...); err != nil {
			t.Fatalf("config %v: %v", args, err)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "db"}, `{"host":"db.internal","password":"[secret]","pool":{"size":20}}` + "\n"},
		{[]string{"get", "db.password", "--secret"}, `"hunter2"` + "\n"},
		{[]string{"get", "db.pool.size"}, "20\n"},
		{[]string{"get", "shop.mode", "-n", "shop"}, `"live"` + "\n"},
	} {
		out, err := config(tc.args...)
		if err != nil || out != tc.want {
			t.Errorf("config %v = %q, %v; want %q", tc.args, out, err, tc.want)
		}
	}
	if _, err := config("del", "db.host"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "db.host"}, "not found"},
		{[]string{"get", "shop.mode"}, "not found"}, // another namespace
		{[]string{"get", "a..b"}, "segments"},
		{[]string{"del", "nope"}, "not found"},
	} {
		if _, err := config(tc.args...); err == nil || !strings.Contains(describe(err), tc.want) {
			t.Errorf("config %v: %v, want %q", tc.args, err, tc.want)
		}
	}
}
