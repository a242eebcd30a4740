package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/internal/meshtest"
	"github.com/micromesh/micromesh/internal/poll"
	"github.com/micromesh/micromesh/internal/syncbuf"
)

// greeterMain is a TCP service of its own (no framework): each client
// gets what linedb holds under "greeting", fetched through the sidecar's
// upstream port the runtime names in $MESH_UPSTREAM_LINEDB.
const greeterMain = `package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
)

func main() {
	ln, err := net.Listen("tcp", os.Getenv("MESH_ADDRESS"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		go func() {
			defer c.Close()
			db, err := net.Dial("tcp", os.Getenv("MESH_UPSTREAM_LINEDB"))
			if err != nil {
				fmt.Fprintf(c, "ERR %v\n", err)
				return
			}
			defer db.Close()
			fmt.Fprintf(db, "GET greeting\n")
			answer, err := bufio.NewReader(db).ReadString('\n')
			if err != nil {
				fmt.Fprintf(c, "ERR %v\n", err)
				return
			}
			fmt.Fprintf(c, "linedb says %s", answer)
		}()
	}
}
`

// TCP services through the mesh as a user runs them, real processes and
// QUIC between sidecars throughout: linedb (examples/linedb, a line
// protocol over TCP) run by the runtime with --app-protocol tcp; reached
// through a sidecar run by hand with --upstream; a TCP service of the
// runtime's that reaches it through --upstream; and that one reached from
// the terminal with port-forward.
func TestTCPServicesThroughTheMesh(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	srv := startServer(ctx, t)
	examples, err := filepath.Abs("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	srv.run(ctx, t, meshctl, "run", filepath.Join(examples, "linedb"), "--app-protocol", "tcp")
	if out := srv.run(ctx, t, meshctl, "services", "-o", "json"); !strings.Contains(out, `"protocol": "tcp"`) {
		t.Errorf("meshctl services does not say linedb is TCP:\n%s", out)
	}

	background := func(args ...string) *syncbuf.Buffer {
		t.Helper()
		var logs syncbuf.Buffer
		cmd := exec.CommandContext(ctx, meshctl, args...)
		cmd.Env, cmd.Stdout, cmd.Stderr = srv.env, &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			if t.Failed() {
				t.Logf("meshctl %s:\n%s", strings.Join(args, " "), logs.String())
			}
		})
		return &logs
	}
	dial := func(port int) (net.Conn, *bufio.Reader) {
		t.Helper()
		var c net.Conn
		poll.Until(t, "127.0.0.1:"+strconv.Itoa(port)+" to take connections", 30*time.Second, 100*time.Millisecond, func() bool {
			c, err = net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
			return err == nil
		})
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		return c, bufio.NewReader(c)
	}

	// A sidecar run by hand, for an app that reaches linedb at a port.
	port := meshtest.FreePort(t)
	background("sidecar", "--service", "web", "--app", "none", "--upstream", "linedb="+strconv.Itoa(port))
	c, r := dial(port)
	for _, qa := range [][2]string{{"SET greeting hello there", "OK"}, {"GET greeting", "hello there"}, {"FLY", `ERR unknown command "FLY"`}} {
		fmt.Fprintf(c, "%s\n", qa[0])
		if got, err := r.ReadString('\n'); !strings.HasPrefix(got, qa[1]) {
			t.Fatalf("%s: %q, %v; want %q", qa[0], got, err, qa[1])
		}
	}
	// Our end reaches linedb, whose end reaches us.
	_ = c.(*net.TCPConn).CloseWrite()
	if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
		t.Fatalf("after our end: %q, %v; want linedb's end", rest, err)
	}
	c.Close()

	// A TCP service of the runtime's reaching linedb through --upstream.
	srv.run(ctx, t, meshctl, "run", writeModule(t, greeterMain), "--name", "greeter", "--app-protocol", "tcp", "--upstream", "linedb")
	var st []struct {
		Instances []struct {
			Upstreams map[string]string `json:"upstreams"`
		} `json:"instances"`
	}
	if out := srv.run(ctx, t, meshctl, "status", "greeter", "-o", "json"); json.Unmarshal([]byte(out), &st) != nil ||
		len(st) != 1 || len(st[0].Instances) != 1 || !strings.HasPrefix(st[0].Instances[0].Upstreams["linedb"], "127.0.0.1:") {
		t.Errorf("status does not show greeter's upstream:\n%s", out)
	}
	// And it, from the terminal.
	fwd := meshtest.FreePort(t)
	logs := background("port-forward", "greeter", strconv.Itoa(fwd))
	poll.Until(t, "port-forward to say it forwards", 30*time.Second, 50*time.Millisecond, func() bool {
		return strings.Contains(logs.String(), "(TCP, tunnelled through a sidecar")
	})
	c, r = dial(fwd)
	defer c.Close()
	if got, err := r.ReadString('\n'); got != "linedb says hello there\n" {
		t.Fatalf("greeter through port-forward: %q, %v", got, err)
	}
}
