package runtime

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseSource(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		in        string
		url, ref  string
		dir, name string
		err       string
	}{
		{in: dir, dir: dir, name: strings.ToLower(filepath.Base(dir))},
		{in: "file:///srv/git/orders.git", url: "file:///srv/git/orders.git", name: "orders"},
		{in: "file:///srv/git/orders.git@v1.2.0", url: "file:///srv/git/orders.git", ref: "v1.2.0", name: "orders"},
		{in: "https://user@example.com/org/Billing@main", url: "https://user@example.com/org/Billing", ref: "main", name: "billing"},
		{in: "git@example.com:org/repo.git", url: "git@example.com:org/repo.git", name: "repo"},
		{in: "git@example.com:org/repo.git@abc123", url: "git@example.com:org/repo.git", ref: "abc123", name: "repo"},
		{in: "git@example.com:repo.git", url: "git@example.com:repo.git", name: "repo"},
		{in: "", err: "no source"},
		{in: "relative/path", err: "must be absolute"},
		{in: filepath.Join(dir, "nope"), err: "no such file"},
		{in: "file:///x.git@", err: "empty ref"},
	} {
		src, err := parseSource(tc.in)
		if tc.err != "" {
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || src.url != tc.url || src.ref != tc.ref || src.dir != tc.dir || src.defaultName() != tc.name {
			t.Errorf("%q = %+v (name %q) %v", tc.in, src, src.defaultName(), err)
		}
	}
}

func TestNormalizeRefusesBadSpecs(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		spec Spec
		want string
	}{
		{Spec{Source: dir, Name: "Bad_Name"}, "service"},
		{Spec{Source: dir, Name: "ok", Namespace: "micromesh"}, "platform"},
		{Spec{Source: dir, Name: "ok", Instances: 17}, "between 1 and 16"},
		{Spec{Source: dir, Name: "ok", Env: []string{"NOEQUALS"}}, "KEY=VALUE"},
		{Spec{Source: dir, Name: "ok", Env: []string{"MESH_PROXY=x"}}, "set by the runtime"},
		{Spec{Source: dir, Name: "ok", Policy: map[string]string{"retries": "lots"}}, `--policy: policy key policy_retries: "lots"`},
		{Spec{Source: dir, Name: "ok", Policy: map[string]string{"/slow:lb": "round_robin"}}, `--policy: policy /slow:lb: lb applies to the whole service`},
		{Spec{Source: filepath.Join(dir, "Under_Score")}, "pass --name"},
		{Spec{Source: dir, Name: "ok", Upstreams: []string{"Db"}}, "--upstream: \"Db\" is not a service"},
		{Spec{Source: dir, Name: "ok", AppProtocol: "udp"}, `--app-protocol "udp": grpc (the framework's), http or tcp`},
		{Spec{Source: dir, Name: "ok", Upstreams: []string{"db-shop", "db.shop"}}, "--upstream db-shop and db.shop: both would be $MESH_UPSTREAM_DB_SHOP"},
	} {
		if tc.spec.Source != dir {
			_ = os.MkdirAll(tc.spec.Source, 0o755)
		}
		if _, _, err := normalize(tc.spec); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.spec, err, tc.want)
		}
	}
	spec, _, err := normalize(Spec{Source: dir, Name: "ok"})
	if err != nil || spec.Namespace != "default" || spec.Instances != 1 || spec.AppProtocol != "grpc" {
		t.Errorf("defaults: %+v %v", spec, err)
	}
}

func TestLogsReadRotateAndFollow(t *testing.T) {
	dir := t.TempDir()
	app, err := openLog(filepath.Join(dir, "svc-1.app.log"))
	if err != nil {
		t.Fatal(err)
	}
	side, err := openLog(filepath.Join(dir, "svc-1.sidecar.log"))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Hour)
	app.writeLine(t0, "old app line")
	side.writeLine(t0.Add(time.Minute), "sidecar line")
	app.writeLine(t0.Add(2*time.Minute), "new app line")
	lines, offsets, err := readLogs(dir, "", time.Time{}, 0)
	if err != nil || len(lines) != 3 || lines[1].Source != "sidecar" || lines[2].Text != "new app line" || lines[0].Instance != "svc-1" {
		t.Fatalf("all lines: %+v %v", lines, err)
	}
	if lines, _, _ := readLogs(dir, "", t0.Add(30*time.Second), 0); len(lines) != 2 {
		t.Errorf("since: %+v", lines)
	}
	if lines, _, _ := readLogs(dir, "", time.Time{}, 1); len(lines) != 1 || lines[0].Text != "new app line" {
		t.Errorf("last 1: %+v", lines)
	}

	// Following sees lines written after, including past a rotation.
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var got []string
	done := make(chan error, 1)
	go func() {
		done <- followLogs(ctx, dir, "", offsets, func(l Line) error {
			mu.Lock()
			got = append(got, l.Text)
			mu.Unlock()
			return nil
		})
	}()
	app.writeLine(time.Now(), "followed 1")
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	app.mu.Lock()
	app.size = maxLogSize // the next line rotates
	app.mu.Unlock()
	app.writeLine(time.Now(), "after rotation")
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-done
	if len(got) != 2 || got[0] != "followed 1" || got[1] != "after rotation" {
		t.Errorf("followed: %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "svc-1.app.log.1")); err != nil {
		t.Errorf("no rotated file: %v", err)
	}
	// Rotated lines still count for reading.
	if lines, _, _ := readLogs(dir, "", time.Time{}, 0); len(lines) != 5 {
		t.Errorf("after rotation: %d lines", len(lines))
	}
	if st, _ := os.Stat(filepath.Join(dir, "svc-1.app.log")); st.Mode().Perm() != 0o600 {
		t.Errorf("log mode %v", st.Mode().Perm())
	}
}

func TestTailKeepsTheLastLines(t *testing.T) {
	tl := newTail(3)
	for _, l := range []string{"a", "b", "c", "d"} {
		tl.add(l)
	}
	if got := strings.Join(tl.lines(), ","); got != "b,c,d" {
		t.Errorf("tail = %s", got)
	}
}

// A sidecar that exited because its port was taken is told apart from
// one that failed otherwise: the runtime retries only the first.
func TestLostPortIsToldApart(t *testing.T) {
	for _, tc := range []struct {
		script string
		want   bool
	}{
		{`echo 'sidecar: inbound port 4242 (UDP, for QUIC): listen udp 0.0.0.0:4242: bind: address already in use'; exit 1`, true},
		{`echo 'sidecar: no credentials'; exit 1`, false},
	} {
		log, err := openLog(filepath.Join(t.TempDir(), "sidecar.log"))
		if err != nil {
			t.Fatal(err)
		}
		p, err := startProc([]string{"sh", "-c", tc.script}, nil, "", log, newTail(5))
		if err != nil {
			t.Fatal(err)
		}
		<-p.exited
		if got := p.lostPort(); got != tc.want {
			t.Errorf("%s: lostPort = %v, want %v", tc.script, got, tc.want)
		}
		log.close()
	}
}

func TestSidecarCommandPrefersMeshSidecarBesideMeshctl(t *testing.T) {
	dir := t.TempDir()
	meshctl := filepath.Join(dir, "meshctl")
	if got := sidecarCommand(meshctl); !slices.Equal(got, []string{meshctl, "sidecar"}) {
		t.Fatalf("alone: %q", got)
	}
	lean := filepath.Join(dir, "mesh-sidecar")
	if err := os.WriteFile(lean, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := sidecarCommand(meshctl); got[0] != meshctl {
		t.Fatalf("not executable: %q", got)
	}
	if err := os.Chmod(lean, 0o755); err != nil {
		t.Fatal(err)
	}
	if got := sidecarCommand(meshctl); !slices.Equal(got, []string{lean}) {
		t.Fatalf("beside: %q", got)
	}
}

func TestPolicyArgsInKeyOrder(t *testing.T) {
	got := strings.Join(policyArgs(map[string]string{"timeout": "2s", "lb": "round_robin", "/slow:timeout": "1m"}), " ")
	if got != "--policy /slow:timeout=1m --policy lb=round_robin --policy timeout=2s" {
		t.Errorf("policyArgs = %q", got)
	}
}

// Logs of one version: the instances whose noted version is that one
// (versions side by side share the service's log directory); instances
// with no version noted (older logs) show only without a version.
func TestLogsOfOneVersion(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	for id, version := range map[string]string{"svc-a": "v1", "svc-b": "v2", "svc-c": ""} {
		l, err := openLog(filepath.Join(dir, id+".app.log"))
		if err != nil {
			t.Fatal(err)
		}
		l.writeLine(now, "line of "+id)
		l.close()
		if version != "" {
			if err := os.WriteFile(versionFile(dir, id), []byte(version+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	for version, want := range map[string][]string{"v2": {"svc-b"}, "v1": {"svc-a"}, "v3": nil, "": {"svc-a", "svc-b", "svc-c"}} {
		lines, _, err := readLogs(dir, version, time.Time{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, l := range lines {
			got = append(got, l.Instance)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("version %q: instances %v, want %v", version, got, want)
		}
	}
}
