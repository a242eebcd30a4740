// Package ports picks free ports for processes the platform starts.
package ports

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// Free returns n distinct ports free on loopback for TCP now, the last one
// free on all addresses for TCP and UDP too (a sidecar's inbound port). The
// ports are released when it returns: whoever binds them may still lose a
// race, and should try again on others.
func Free(n int) ([]int, error) {
	return pick(n, func(i int) (host string, udp bool) {
		if i == n-1 {
			return "", true
		}
		return "127.0.0.1", false
	})
}

// FreeLoopback returns n distinct ports free on 127.0.0.1 for both TCP and
// UDP now (a Consul agent's serf ports, a sidecar's inbound port in tests).
// Like Free, they are released when it returns.
func FreeLoopback(n int) ([]int, error) {
	return pick(n, func(int) (string, bool) { return "127.0.0.1", true })
}

// pick holds a TCP port the kernel chooses on the host at(i) names for
// each of n ports, and the same port for UDP where at says so, trying
// others while one is taken for UDP; everything is released on return.
func pick(n int, at func(i int) (host string, udp bool)) ([]int, error) {
	var closers []func() error
	defer func() {
		for _, c := range closers {
			_ = c()
		}
	}()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries == 50*n {
			return nil, errors.New("ports: no port free for both TCP and UDP")
		}
		host, udp := at(len(ports))
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, err
		}
		closers = append(closers, l.Close)
		port := l.Addr().(*net.TCPAddr).Port
		if udp {
			u, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(port)))
			if err != nil {
				continue // taken for UDP: try another
			}
			closers = append(closers, u.Close)
		}
		ports = append(ports, port)
	}
	return ports, nil
}

// InUse reports whether a process's output says it could not bind an
// address: the way to tell a start that lost a picked port (and should be
// tried again on others) from one that failed.
func InUse(output string) bool {
	return strings.Contains(output, "address already in use") || strings.Contains(output, "Address already in use")
}

// Below the ephemeral range: FreeOutsideEphemeral draws from
// [outsideLow, the range's start).
const outsideLow = 15000

// FreeOutsideEphemeral is FreeLoopback with ports drawn at random below
// the kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range,
// 32768 up by default), for tests that must name a port before whatever
// binds it starts (an ACME CA told where to validate). The kernel's own
// choice comes from the ephemeral range, which every outgoing connection
// on the machine draws from too — under a parallel test run one of them
// can take a picked port before its bind; none takes a port below it.
func FreeOutsideEphemeral(n int) ([]int, error) {
	high := ephemeralLow()
	var ports []int
	seen := map[int]bool{}
	for tries := 0; len(ports) < n; tries++ {
		if tries == 100*n {
			return nil, fmt.Errorf("ports: no port free for TCP and UDP on 127.0.0.1 in [%d, %d)", outsideLow, high)
		}
		p := outsideLow + rand.IntN(high-outsideLow)
		if seen[p] {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", addr)
		_ = l.Close()
		if err != nil {
			continue
		}
		_ = u.Close()
		seen[p] = true
		ports = append(ports, p)
	}
	return ports, nil
}

// ephemeralLow is where the kernel's ephemeral ports start (32768 when it
// cannot be read, Linux's default).
func ephemeralLow() int {
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > outsideLow+1000 {
				return v
			}
		}
	}
	return 32768
}
