// Package netnstest gives a test two hosts on one machine: two network
// namespaces joined by a veth pair (10.77.0.1 and 10.77.0.2), each with its
// own loopback, for tests of what crosses hosts — the remote proxy, the
// gateway, sidecars on different hosts. It needs root and ip(8); without
// them the test is skipped, saying why.
package netnstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Host is one network namespace.
type Host struct {
	// Name is the namespace's (ip netns).
	Name string
	// IP is its address on the link between the two.
	IP string
}

// Command runs name in the host's namespace.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.Name, name}, args...)...)
}

// Pair makes two hosts joined by a link; the test's cleanup kills what
// runs in them and removes them.
func Pair(t testing.TB) (a, b *Host) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip(8) for network namespaces")
	}
	tag := make([]byte, 3)
	_, _ = rand.Read(tag)
	id := hex.EncodeToString(tag)
	a = &Host{Name: "mm" + id + "a", IP: "10.77.0.1"}
	b = &Host{Name: "mm" + id + "b", IP: "10.77.0.2"}
	run := func(args ...string) error {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := run("netns", "add", a.Name); err != nil {
		t.Skipf("cannot make a network namespace here: %v", err)
	}
	t.Cleanup(func() { remove(a.Name) })
	if err := run("netns", "add", b.Name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { remove(b.Name) })
	steps := [][]string{
		{"link", "add", "mv" + id + "a", "netns", a.Name, "type", "veth", "peer", "name", "mv" + id + "b", "netns", b.Name},
		{"-n", a.Name, "addr", "add", a.IP + "/24", "dev", "mv" + id + "a"},
		{"-n", b.Name, "addr", "add", b.IP + "/24", "dev", "mv" + id + "b"},
		{"-n", a.Name, "link", "set", "mv" + id + "a", "up"},
		{"-n", b.Name, "link", "set", "mv" + id + "b", "up"},
		{"-n", a.Name, "link", "set", "lo", "up"},
		{"-n", b.Name, "link", "set", "lo", "up"},
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
}

// remove kills what still runs in a namespace and deletes it (its end of
// the link goes with it).
func remove(name string) {
	out, _ := exec.Command("ip", "netns", "pids", name).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	_ = exec.Command("ip", "netns", "del", name).Run()
}
