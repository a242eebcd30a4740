package runtime

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/micromesh/micromesh/internal/ports"
)

// proc is one child process (an app or a sidecar) whose output goes, line
// by line and time-stamped, to a log file, with the last lines kept for
// status.
type proc struct {
	cmd     *exec.Cmd
	started time.Time
	exited  chan struct{} // closed when it has exited and its output is drained
	code    int           // exit code; -1 for a signal (valid after exited)
	tail    *tail
}

// startProc starts argv with env in dir. Its process group is its own, so a
// Ctrl-C at the terminal reaches the server, which stops services in
// order, and stopping takes any children it started along.
func startProc(argv, env []string, dir string, log *logFile, t *tail) (*proc, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env, cmd.Dir = env, dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return nil, err
	}
	pw.Close()
	p := &proc{cmd: cmd, started: time.Now(), exited: make(chan struct{}), tail: t}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			log.writeLine(time.Now(), line)
			t.add(line)
		}
		// A line longer than 1 MiB ends the scan: keep the pipe drained so
		// the process never blocks on it.
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		err := cmd.Wait()
		p.code = 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.code = ee.ExitCode() // -1 when killed by a signal
		}
		// Its own output ends with it; a grandchild holding the pipe does
		// not hold up the exit for long.
		select {
		case <-copied:
		case <-time.After(2 * time.Second):
		}
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// running reports whether it has not exited.
func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM to the process group, and SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if !p.running() {
		return
	}
	_ = syscall.Kill(-p.pid(), syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.exited
	}
}

// describeExit words an exit for a person: the code and the last lines.
func (p *proc) describeExit(what string) string {
	<-p.exited
	msg := fmt.Sprintf("%s exited with code %d", what, p.code)
	if p.code == -1 {
		msg = what + " was killed by a signal"
	}
	if lines := p.tail.lines(); len(lines) > 0 {
		msg += "; its last lines:\n  " + strings.Join(lines, "\n  ")
	}
	return msg
}

// lostPort reports whether the process exited because an address it was
// to bind was taken (the sidecar binds its ports at start and says so).
func (p *proc) lostPort() bool {
	select {
	case <-p.exited:
	default:
		return false
	}
	return ports.InUse(strings.Join(p.tail.lines(), "\n"))
}

// tail keeps the last lines of a process's output.
type tail struct {
	mu  sync.Mutex
	buf []string
	max int
}

func newTail(n int) *tail { return &tail{max: n} }

func (t *tail) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = t.buf[:0]
}

func (t *tail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.buf) == t.max {
		copy(t.buf, t.buf[1:])
		t.buf = t.buf[:t.max-1]
	}
	t.buf = append(t.buf, line)
}

func (t *tail) lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.buf...)
}
