// Package ports picks free ports for processes the platform starts.
package ports

import (
	"net"
	"strconv"
)

// Free returns n distinct ports free on loopback for TCP now, the last one
// free on all addresses for TCP and UDP too (a sidecar's inbound port). The
// ports are released when it returns: whoever binds them may still lose a
// race, and should try again on others.
func Free(n int) ([]int, error) {
	var closers []func() error
	defer func() {
		for _, c := range closers {
			_ = c()
		}
	}()
	var ports []int
	for len(ports) < n {
		last := len(ports) == n-1
		addr := "127.0.0.1:0"
		if last {
			addr = ":0"
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		closers = append(closers, l.Close)
		port := l.Addr().(*net.TCPAddr).Port
		if last {
			u, err := net.ListenPacket("udp", ":"+strconv.Itoa(port))
			if err != nil {
				continue // taken for UDP: try another
			}
			closers = append(closers, u.Close)
		}
		ports = append(ports, port)
	}
	return ports, nil
}
