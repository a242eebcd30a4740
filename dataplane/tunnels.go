package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/micromesh/micromesh/dataplane/config"
	"github.com/micromesh/micromesh/dataplane/proxy"
)

// tunnelListener is a tcp_proxy listener on loopback: each connection the
// app opens is tunnelled to a TCP service (proxy.ServeTunnel).
type tunnelListener struct {
	addr   string
	ln     net.Listener
	ctx    context.Context
	cancel context.CancelFunc
	conns  sync.WaitGroup
}

func newTunnelListener(addr string, ln net.Listener) *tunnelListener {
	ctx, cancel := context.WithCancel(context.Background())
	return &tunnelListener{addr: addr, ln: ln, ctx: ctx, cancel: cancel}
}

func (t *tunnelListener) serve(p *proxy.Proxy, log *slog.Logger) {
	for {
		c, err := t.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil { // out of file descriptors, a connection reset before it was taken
			log.Warn("tunnel listener: accepting a connection", "listener", t.addr, "error", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		t.conns.Add(1)
		go func() {
			defer t.conns.Done()
			p.ServeTunnel(t.ctx, t.addr, c)
		}()
	}
}

// shutdown stops taking connections and gives the open ones drain to end
// before cutting them.
func (t *tunnelListener) shutdown(drain time.Duration) {
	_ = t.ln.Close()
	done := make(chan struct{})
	go func() { t.conns.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drain):
		t.cancel()
		select {
		case <-done:
		case <-time.After(time.Second):
		}
	}
	t.cancel()
}

// reserveTunnels binds the loopback addresses of the sidecar's upstreams
// at start, as its own ports: a taken one fails the start, and the
// tunnel listeners the control plane sends adopt them.
func (l *listeners) reserveTunnels(addrs []string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, addr := range addrs {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			l.closeReservedLocked()
			return fmt.Errorf("upstream %s: %w", addr, err)
		}
		if l.reservedTunnels == nil {
			l.reservedTunnels = map[string]net.Listener{}
		}
		l.reservedTunnels[addr] = ln
	}
	return nil
}

// prepareTunnels binds the tunnel listeners cfg adds (l.mu held). commit
// starts them and retires those cfg drops; release gives back what it
// bound.
func (l *listeners) prepareTunnels(cfg *config.Config) (commit, release func(), err error) {
	fresh := map[string]*tunnelListener{}
	adopted := map[string]bool{}
	release = func() {
		for addr, t := range fresh {
			if adopted[addr] {
				l.reservedTunnels[addr] = t.ln // still ours, for the next config
			} else {
				_ = t.ln.Close()
			}
		}
	}
	for _, tu := range cfg.Tunnels {
		if _, ok := l.tunnels[tu.Address]; ok {
			continue
		}
		if ln, ok := l.reservedTunnels[tu.Address]; ok {
			delete(l.reservedTunnels, tu.Address)
			fresh[tu.Address], adopted[tu.Address] = newTunnelListener(tu.Address, ln), true
			continue
		}
		ln, err := net.Listen("tcp", tu.Address)
		if err != nil {
			release()
			return nil, nil, fmt.Errorf("listener %s (%s): %w", tu.Name, tu.Address, err)
		}
		fresh[tu.Address] = newTunnelListener(tu.Address, ln)
	}
	commit = func() {
		if l.tunnels == nil {
			l.tunnels = map[string]*tunnelListener{}
		}
		for addr, t := range fresh {
			l.tunnels[addr] = t
			go t.serve(l.proxy, l.log)
		}
		for addr, t := range l.tunnels {
			if cfg.TunnelAt(addr) == nil {
				delete(l.tunnels, addr)
				go t.shutdown(5 * time.Second)
			}
		}
	}
	return commit, release, nil
}
