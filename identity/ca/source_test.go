package ca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/micromesh/micromesh/identity"
	"github.com/micromesh/micromesh/internal/syncbuf"
)

// A TLS server and client using Sources keep exchanging requests across three
// forced rotations of both sides: no failed handshake, no failed request, and
// an established connection survives every rotation.
func TestRotationKeepsTrafficFlowing(t *testing.T) {
	ca := openTestCA(t)
	serverSrc := identity.NewSource(issue(t, ca, "server"), ca.RenewFunc())
	clientSrc := identity.NewSource(issue(t, ca, "client"), ca.RenewFunc())
	serverID, clientID := serverSrc.Current().ID, clientSrc.Current().ID

	var (
		mu            sync.Mutex
		clientSerials = map[string]bool{}
		keepAliveAddr = map[string]bool{}
	)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaf := r.TLS.PeerCertificates[0]
		mu.Lock()
		clientSerials[leaf.SerialNumber.String()] = true
		if r.URL.Path == "/keepalive" {
			keepAliveAddr[r.RemoteAddr] = true
		}
		mu.Unlock()
		fmt.Fprint(w, leaf.SerialNumber)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errLog := &syncbuf.Buffer{}
	srv := &http.Server{Handler: handler, TLSConfig: serverSrc.ServerTLSConfig(identity.AuthorizeID(clientID)), ErrorLog: log.New(errLog, "", 0)}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })

	// One client opens a new connection (a full handshake) per request;
	// the other keeps one connection for the whole test.
	fresh := &http.Client{Transport: &http.Transport{TLSClientConfig: clientSrc.ClientTLSConfig(identity.AuthorizeID(serverID)), DisableKeepAlives: true}}
	kept := &http.Client{Transport: &http.Transport{TLSClientConfig: clientSrc.ClientTLSConfig(identity.AuthorizeID(serverID)), MaxIdleConnsPerHost: 1}}
	t.Cleanup(fresh.CloseIdleConnections)
	t.Cleanup(kept.CloseIdleConnections)
	base := "https://" + ln.Addr().String()

	var requests, failures atomic.Int64
	var lastErr atomic.Value
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, c := range []struct {
		client *http.Client
		path   string
	}{{fresh, "/fresh"}, {kept, "/keepalive"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5000 && ctx.Err() == nil; i++ {
				resp, err := c.client.Get(base + c.path)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				requests.Add(1)
				if err != nil && ctx.Err() == nil {
					failures.Add(1)
					lastErr.Store(err)
				}
			}
		}()
	}

	seen := func(serial string) bool {
		mu.Lock()
		defer mu.Unlock()
		return clientSerials[serial]
	}
	waitSeen := func(round int, serial string) {
		for !seen(serial) {
			if ctx.Err() != nil {
				t.Fatalf("round %d: the server never saw client certificate %s", round, serial)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitSeen(0, clientSrc.Current().Leaf().SerialNumber.String())
	for round := 1; round <= 3; round++ {
		if err := serverSrc.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		if err := clientSrc.Rotate(ctx); err != nil {
			t.Fatal(err)
		}
		waitSeen(round, clientSrc.Current().Leaf().SerialNumber.String())
	}
	cancel()
	wg.Wait()

	if n := failures.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed across rotations; last: %v", n, requests.Load(), lastErr.Load())
	}
	if log := errLog.String(); log != "" {
		t.Fatalf("server logged handshake errors:\n%s", log)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(clientSerials) < 4 {
		t.Errorf("server saw %d client certificates, want at least 4 (initial + 3 rotations)", len(clientSerials))
	}
	if len(keepAliveAddr) != 1 {
		t.Errorf("the kept-alive client used %d connections, want 1: rotation dropped it", len(keepAliveAddr))
	}
	t.Logf("%d requests, %d client certificates, 0 failures", requests.Load(), len(clientSerials))
}

func TestMTLSRefusesWrongPeer(t *testing.T) {
	ca := openTestCA(t)
	server := identity.NewSource(issue(t, ca, "server"), ca.RenewFunc())
	client := identity.NewSource(issue(t, ca, "client"), ca.RenewFunc())
	intruder := identity.NewSource(issue(t, openTestCA(t), "client"), nil) // same name, other CA
	stranger := identity.NewSource(issue(t, ca, "stranger"), nil)

	tests := []struct {
		name   string
		client *tls.Config
		want   error
	}{
		{"expected client", client.ClientTLSConfig(identity.AuthorizeID(server.Current().ID)), nil},
		{"client of another CA", intruder.ClientTLSConfig(identity.AuthorizeAny()), identity.ErrUntrusted},
		{"client with the wrong ID", stranger.ClientTLSConfig(identity.AuthorizeAny()), identity.ErrIDMismatch},
		{"client that wants another server", client.ClientTLSConfig(identity.AuthorizeID(stranger.Current().ID)), identity.ErrIDMismatch},
		{"client without a certificate", identity.ClientTLSConfig(func() *identity.Bundle { return ca.Bundle() }, nil, identity.AuthorizeAny()), errAnyRefusal},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clientErr, serverErr := handshake(t, server.ServerTLSConfig(identity.AuthorizeID(client.Current().ID)), tc.client)
			if tc.want == nil {
				if clientErr != nil || serverErr != nil {
					t.Fatalf("handshake failed: client %v, server %v", clientErr, serverErr)
				}
				return
			}
			if tc.want == errAnyRefusal && serverErr != nil && clientErr != nil {
				return
			}
			if !errors.Is(serverErr, tc.want) && !errors.Is(clientErr, tc.want) {
				t.Fatalf("handshake errors: client %v, server %v; want %v", clientErr, serverErr, tc.want)
			}
		})
	}
}

// errAnyRefusal: the handshake must fail on both sides, for whatever reason.
var errAnyRefusal = errors.New("any refusal")

// handshake runs a TLS handshake over a loopback TCP connection. The server
// answers one byte after a good handshake, so the client learns the verdict
// on its client certificate (which TLS 1.3 gives after Dial returns).
func handshake(t *testing.T, server, client *tls.Config) (clientErr, serverErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	deadline := time.Now().Add(10 * time.Second)
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(deadline)
		tc := tls.Server(c, server)
		if err = tc.Handshake(); err == nil {
			_, err = tc.Write([]byte{'y'})
		}
		done <- err
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Deadline: deadline}, "tcp", ln.Addr().String(), client)
	if err == nil {
		_ = c.SetDeadline(deadline)
		_, err = c.Read(make([]byte, 1))
		c.Close()
	}
	return err, <-done
}

func TestRenewalTimeIsHalfLifeWithJitter(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	leaf := &x509.Certificate{NotBefore: nb, NotAfter: nb.Add(24 * time.Hour)}
	if got := identity.RenewalTime(leaf, 0); !got.Equal(nb.Add(12 * time.Hour)) {
		t.Errorf("u=0: %v, want half-life", got)
	}
	if got := identity.RenewalTime(leaf, 0.999); got.Before(nb.Add(12*time.Hour-145*time.Minute)) || !got.Before(nb.Add(12*time.Hour)) {
		t.Errorf("u≈1: %v, want within a tenth of the life before half-life", got)
	}
}

func TestRunRenewsAtHalfLife(t *testing.T) {
	ca := openTestCA(t, WithCertificateTTL(time.Minute))
	first := issue(t, ca, "short")
	rotated := make(chan *identity.Credentials, 1)
	src := identity.NewSource(first, ca.RenewFunc(), identity.OnRotate(func(c *identity.Credentials) error {
		select {
		case rotated <- c:
		default:
		}
		return nil
	}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	// The leaf is backdated by a minute: its life is 2m, half-life ≈ now.
	select {
	case c := <-rotated:
		if c.ID != first.ID || c.Leaf().SerialNumber.Cmp(first.Leaf().SerialNumber) == 0 {
			t.Fatalf("rotation gave %v serial %v", c.ID, c.Leaf().SerialNumber)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not renew a certificate past half-life")
	}
}
