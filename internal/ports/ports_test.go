package ports

import (
	"net"
	"strconv"
	"testing"
)

func TestFreePortsAreDistinct(t *testing.T) {
	ps, err := Free(4)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ps {
		if seen[p] || p == 0 {
			t.Fatalf("ports %v", ps)
		}
		seen[p] = true
	}
	// The last is a sidecar's inbound port: free for UDP on all addresses.
	u, err := net.ListenPacket("udp", ":"+strconv.Itoa(ps[len(ps)-1]))
	if err != nil {
		t.Fatalf("the last port is not free for UDP: %v", err)
	}
	u.Close()
}

func TestFreeLoopbackPortsTakeTCPAndUDP(t *testing.T) {
	ps, err := FreeLoopback(3)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		bindBoth(t, p)
	}
}

// bindBoth fails the test unless port p takes both a TCP listener and a
// UDP socket on loopback.
func bindBoth(t *testing.T, p int) {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(p)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("TCP %s: %v", addr, err)
	}
	l.Close()
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("UDP %s: %v", addr, err)
	}
	u.Close()
}

func TestInUse(t *testing.T) {
	for out, want := range map[string]bool{
		"listen tcp 127.0.0.1:5432: bind: address already in use":                         true,
		`LOG:  could not bind IPv4 address "127.0.0.1": Address already in use`:           true,
		"FATAL:  could not create lock file: Permission denied":                           false,
		"sidecar: inbound port 4242 (UDP, for QUIC): listen udp: bind: permission denied": false,
	} {
		if got := InUse(out); got != want {
			t.Errorf("InUse(%q) = %v", out, got)
		}
	}
}

func TestFreeOutsideEphemeral(t *testing.T) {
	ps, err := FreeOutsideEphemeral(3)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ps {
		if seen[p] || p < outsideLow || p >= ephemeralLow() {
			t.Fatalf("ports %v: want distinct ones in [%d, %d)", ps, outsideLow, ephemeralLow())
		}
		seen[p] = true
		bindBoth(t, p)
	}
}
