// Package natsserver runs the NATS server that the broker, events and
// config primitives use, inside `meshctl server`: loopback only, a random
// port, a user and password generated once and kept under $MESH_HOME/nats
// (0600), JetStream's files beside them. Connect gives a client; with an
// external cluster (--nats-url) nothing runs here and Connect dials that.
package natsserver

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/bcrypt"

	"github.com/micromesh/micromesh/internal/atomicfile"
)

// Server is an embedded NATS server.
type Server struct {
	ns    *server.Server
	url   string
	creds credentials
}

type credentials struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

// Start runs a NATS server with JetStream storing under dir.
func Start(dir string, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	creds, err := loadOrCreateCredentials(filepath.Join(dir, "credentials.json"))
	if err != nil {
		return nil, err
	}
	// The server holds only a bcrypt hash; clients send the password. It
	// is 192 random bits, so bcrypt's cost buys nothing: the minimum keeps
	// each connect under a millisecond.
	hash, err := bcrypt.GenerateFromPassword([]byte(creds.Password), bcrypt.MinCost)
	if err != nil {
		return nil, fmt.Errorf("nats: hashing the password: %w", err)
	}
	opts := &server.Options{
		ServerName: "micromesh",
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		Username:   creds.User,
		Password:   string(hash),
		JetStream:  true,
		StoreDir:   filepath.Join(dir, "jetstream"),
		// Every acknowledged message is on disk before the ack: events
		// and config lose nothing on a crash.
		SyncAlways: true,
		NoSigs:     true,
		MaxPayload: 4 << 20,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	if log != nil {
		ns.SetLoggerV2(&slogger{log.With("component", "nats")}, false, false, false)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("nats: the embedded server did not start within 10 s")
	}
	return &Server{ns: ns, url: ns.ClientURL(), creds: creds}, nil
}

func loadOrCreateCredentials(path string) (credentials, error) {
	var c credentials
	data, err := os.ReadFile(path)
	if err == nil {
		if err := json.Unmarshal(data, &c); err != nil || c.User == "" || c.Password == "" {
			return c, fmt.Errorf("nats: %s is damaged; remove it to make new credentials", path)
		}
		return c, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return c, err
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return c, err
	}
	c = credentials{User: "micromesh", Password: hex.EncodeToString(b)}
	data, _ = json.Marshal(c)
	return c, atomicfile.Write(path, data, 0o600)
}

// URL is where clients connect.
func (s *Server) URL() string { return s.url }

// URLWithCredentials is URL with the user and password in it: what
// another server's --nats-url takes. It holds a secret; do not log it.
func (s *Server) URLWithCredentials() string {
	u, err := url.Parse(s.url)
	if err != nil {
		return s.url
	}
	u.User = url.UserPassword(s.creds.User, s.creds.Password)
	return u.String()
}

// Connect returns a client of this server, named for what uses it.
func (s *Server) Connect(name string) (*nats.Conn, error) {
	return nats.Connect(s.url, nats.UserInfo(s.creds.User, s.creds.Password), nats.Name(name),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
}

// Shutdown stops the server.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// slogger adapts the server's logging to slog; credentials never reach it
// (the server does not log them).
type slogger struct{ l *slog.Logger }

func (s *slogger) Noticef(format string, v ...any) { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s *slogger) Warnf(format string, v ...any)   { s.l.Warn(fmt.Sprintf(format, v...)) }
func (s *slogger) Fatalf(format string, v ...any)  { s.l.Error(fmt.Sprintf(format, v...)) }
func (s *slogger) Errorf(format string, v ...any)  { s.l.Error(fmt.Sprintf(format, v...)) }
func (s *slogger) Debugf(format string, v ...any)  { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s *slogger) Tracef(format string, v ...any)  {}
