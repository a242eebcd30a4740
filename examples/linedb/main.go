// Linedb is a TCP service: a key-value server with a line protocol, as a
// database or a cache speaks its own protocol over TCP. It knows nothing
// of the mesh but the address to listen on; its callers reach it through
// their sidecars, the bytes in mTLS tunnels between sidecars.
//
//	meshctl run examples/linedb --app-protocol tcp
//	meshctl port-forward linedb 16000
//	printf 'SET greeting hello\nGET greeting\n' | nc -q1 127.0.0.1 16000
//
// Commands, one a line: SET KEY VALUE, GET KEY, DEL KEY, KEYS, QUIT.
// Answers: OK, the value, (nil), a count, or ERR and why.
package main

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "linedb")
	addr := os.Getenv("MESH_ADDRESS") // set by meshctl run
	if addr == "" {
		addr = "127.0.0.1:6380"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Error("listening", "addr", addr, "err", err)
		os.Exit(1)
	}
	log.Info("listening", "addr", ln.Addr().String())
	db := &store{values: map[string]string{}}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Error("accepting", "err", err)
			os.Exit(1)
		}
		go db.serve(c)
	}
}

// store is the server's data, in memory.
type store struct {
	mu     sync.Mutex
	values map[string]string
}

// maxLine bounds a command line.
const maxLine = 64 << 10

func (s *store) serve(c net.Conn) {
	defer c.Close()
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 4096), maxLine)
	w := bufio.NewWriter(c)
	for sc.Scan() {
		answer, quit := s.do(sc.Text())
		fmt.Fprintln(w, answer)
		if err := w.Flush(); err != nil || quit {
			return
		}
	}
	if sc.Err() != nil {
		fmt.Fprintf(w, "ERR %v\n", sc.Err())
		_ = w.Flush()
	}
}

// do runs one command line and answers it; quit ends the connection.
func (s *store) do(line string) (answer string, quit bool) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return "ERR empty command: SET KEY VALUE, GET KEY, DEL KEY, KEYS or QUIT", false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch cmd := strings.ToUpper(f[0]); {
	case cmd == "SET" && len(f) >= 3:
		s.values[f[1]] = strings.Join(f[2:], " ")
		return "OK", false
	case cmd == "GET" && len(f) == 2:
		if v, ok := s.values[f[1]]; ok {
			return v, false
		}
		return "(nil)", false
	case cmd == "DEL" && len(f) == 2:
		_, ok := s.values[f[1]]
		delete(s.values, f[1])
		if ok {
			return "1", false
		}
		return "0", false
	case cmd == "KEYS" && len(f) == 1:
		keys := make([]string, 0, len(s.values))
		for k := range s.values {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		return strings.Join(keys, " "), false
	case cmd == "QUIT":
		return "OK", true
	case cmd == "SET" || cmd == "GET" || cmd == "DEL" || cmd == "KEYS":
		return "ERR wrong number of arguments for " + cmd, false
	default:
		return fmt.Sprintf("ERR unknown command %q: SET KEY VALUE, GET KEY, DEL KEY, KEYS or QUIT", f[0]), false
	}
}
