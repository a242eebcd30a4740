// Package pgtest runs a real PostgreSQL server for a test: Debian's
// postgresql package (`make test` installs it), a fresh cluster in a
// temporary directory, listening on a free loopback port, trust
// authentication, stopped when the test ends. Run as root (as CI is), the
// server runs as the postgres user, since PostgreSQL refuses root.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/micromesh/micromesh/internal/ports"
	"github.com/micromesh/micromesh/internal/syncbuf"
)

// Server is a running PostgreSQL server.
type Server struct {
	Port int
	dir  string
}

// bin finds a PostgreSQL binary directory.
func bin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Strings(dirs)
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "postgres")); err == nil {
			return dirs[i], nil
		}
	}
	return "", fmt.Errorf("no PostgreSQL server under /usr/lib/postgresql: `make test` installs Debian's postgresql package (or: apt-get install postgresql)")
}

// command runs a PostgreSQL program, as the postgres user when we are root.
func command(name string, args ...string) (*exec.Cmd, error) {
	if os.Geteuid() != 0 {
		return exec.Command(name, args...), nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running PostgreSQL as root needs the postgres user (Debian's package makes it): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	return cmd, nil
}

// Start starts a server for t.
func Start(t testing.TB) *Server {
	t.Helper()
	binDir, err := bin()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(dir, "data")
	initdb, err := command(filepath.Join(binDir, "initdb"), "-D", data, "--auth=trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	// The port is picked free, then bound by postgres; another process may
	// take it in between: start again on another.
	for attempt := 1; ; attempt++ {
		s, logs, err := run(t, binDir, dir, data)
		if err == nil {
			return s
		}
		if attempt == 3 || !ports.InUse(logs) {
			t.Fatalf("%v\n%s", err, logs)
		}
		t.Logf("postgres lost its port; trying another")
	}
}

// run starts postgres on a free port and waits until it takes connections;
// on failure it returns the server's output.
func run(t testing.TB, binDir, dir, data string) (*Server, string, error) {
	free, err := ports.Free(1)
	if err != nil {
		return nil, "", err
	}
	s := &Server{Port: free[0], dir: dir}
	pg, err := command(filepath.Join(binDir, "postgres"), "-D", data, "-p", strconv.Itoa(s.Port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200")
	if err != nil {
		return nil, "", err
	}
	logs := &syncbuf.Buffer{}
	pg.Stdout, pg.Stderr = logs, logs
	if err := pg.Start(); err != nil {
		return nil, "", err
	}
	exited := make(chan struct{})
	go func() { _ = pg.Wait(); close(exited) }()
	stop := func() {
		_ = pg.Process.Signal(syscall.SIGINT) // fast shutdown
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = pg.Process.Kill()
			<-exited
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := pgx.Connect(ctx, s.DSN("postgres"))
		cancel()
		if err == nil {
			_ = c.Close(context.Background())
			t.Cleanup(stop)
			return s, "", nil
		}
		select {
		case <-exited:
			return nil, logs.String(), errors.New("postgres exited")
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return nil, logs.String(), fmt.Errorf("postgres did not accept connections within 30 s: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// DSN is the connection string for database db.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

// NewDatabase creates an empty database and returns its DSN.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	name := fmt.Sprintf("t_%d", time.Now().UnixNano())
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	return s.DSN(name)
}
