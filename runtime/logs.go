package runtime

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Log files: one per instance and source (app, sidecar) under
// $MESH_HOME/logs/<namespace>/<service>/<instance>.<source>.log, each line
// "<RFC 3339 time> <text>", rotated at maxLogSize into .1 (one old file
// kept).
const maxLogSize = 10 << 20

// logFile appends time-stamped lines to a file, rotating it.
type logFile struct {
	mu   sync.Mutex
	path string
	f    *os.File
	size int64
}

func openLog(path string) (*logFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &logFile{path: path, f: f, size: st.Size()}, nil
}

func (l *logFile) writeLine(t time.Time, line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return
	}
	if l.size >= maxLogSize {
		l.f.Close()
		_ = os.Rename(l.path, l.path+".1")
		f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			l.f = nil
			return
		}
		l.f, l.size = f, 0
	}
	n, _ := fmt.Fprintf(l.f, "%s %s\n", t.UTC().Format(time.RFC3339Nano), line)
	l.size += int64(n)
}

func (l *logFile) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// Line is one line of a service's logs.
type Line struct {
	Time     time.Time
	Instance string
	Source   string // app or sidecar
	Text     string
}

// logFiles lists a service's current log files (not rotated ones) with
// the instance and source each holds.
func logFiles(dir, version string) ([]logRef, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var refs []logRef
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".log") {
			continue
		}
		base := strings.TrimSuffix(name, ".log")
		i := strings.LastIndexByte(base, '.')
		if i < 0 {
			continue
		}
		if version != "" && instanceVersion(dir, base[:i]) != version {
			continue
		}
		refs = append(refs, logRef{path: filepath.Join(dir, name), instance: base[:i], source: base[i+1:]})
	}
	return refs, nil
}

// versionFile is where an instance's version is noted beside its logs.
func versionFile(dir, instance string) string { return filepath.Join(dir, instance+".version") }

// instanceVersion is the version an instance of dir's service ran ("" if
// it is not noted).
func instanceVersion(dir, instance string) string {
	b, err := os.ReadFile(versionFile(dir, instance))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

type logRef struct {
	path, instance, source string
}

// parseLine splits "<time> <text>".
func parseLine(ref logRef, s string) (Line, bool) {
	ts, text, ok := strings.Cut(s, " ")
	if !ok {
		return Line{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return Line{}, false
	}
	return Line{Time: t, Instance: ref.instance, Source: ref.source, Text: text}, true
}

// readLogs returns the last n lines (0: all) newer than since from the
// service's logs, rotated files included, in time order, and each current
// file's size (where following starts).
func readLogs(dir, version string, since time.Time, n int) ([]Line, map[string]int64, error) {
	refs, err := logFiles(dir, version)
	if err != nil {
		return nil, nil, err
	}
	var lines []Line
	offsets := map[string]int64{}
	for _, ref := range refs {
		for _, path := range []string{ref.path + ".1", ref.path} {
			f, err := os.Open(path)
			if err != nil {
				continue
			}
			size, _ := f.Seek(0, io.SeekEnd)
			_, _ = f.Seek(0, io.SeekStart)
			sc := bufio.NewScanner(io.LimitReader(f, size))
			sc.Buffer(make([]byte, 64<<10), 2<<20)
			for sc.Scan() {
				if l, ok := parseLine(ref, sc.Text()); ok && l.Time.After(since) {
					lines = append(lines, l)
				}
			}
			f.Close()
			if path == ref.path {
				offsets[path] = size
			}
		}
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].Time.Before(lines[j].Time) })
	if n > 0 && len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines, offsets, nil
}

// followLogs sends lines appended to the service's log files after
// offsets, until ctx ends. Files that appear (new instances) are read from
// their start; a file that shrank was rotated and is read from its start.
func followLogs(ctx context.Context, dir, version string, offsets map[string]int64, send func(Line) error) error {
	partial := map[string]string{}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		refs, err := logFiles(dir, version)
		if err != nil {
			continue
		}
		var batch []Line
		for _, ref := range refs {
			f, err := os.Open(ref.path)
			if err != nil {
				continue
			}
			size, _ := f.Seek(0, io.SeekEnd)
			off := offsets[ref.path]
			if size < off {
				off = 0
			}
			if size > off {
				buf := make([]byte, size-off)
				if _, err := f.ReadAt(buf, off); err == nil {
					text := partial[ref.path] + string(buf)
					cut := strings.LastIndexByte(text, '\n')
					partial[ref.path] = text[cut+1:]
					for _, s := range strings.Split(text[:cut+1], "\n") {
						if l, ok := parseLine(ref, s); ok {
							batch = append(batch, l)
						}
					}
					off = size
				}
			}
			offsets[ref.path] = off
			f.Close()
		}
		sort.SliceStable(batch, func(i, j int) bool { return batch[i].Time.Before(batch[j].Time) })
		for _, l := range batch {
			if err := send(l); err != nil {
				return err
			}
		}
	}
}
