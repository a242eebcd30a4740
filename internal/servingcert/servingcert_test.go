package servingcert_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/micromesh/micromesh/internal/servingcert"
	"github.com/micromesh/micromesh/internal/servingcert/servingcerttest"
	"github.com/micromesh/micromesh/internal/syncbuf"
)

func logger() (*slog.Logger, *syncbuf.Buffer) {
	var buf syncbuf.Buffer
	return slog.New(slog.NewTextHandler(&buf, nil)), &buf
}

func TestLoadRefusesWhatCannotServe(t *testing.T) {
	ca := servingcerttest.NewCA(t)
	dir := t.TempDir()
	good, _ := ca.Write(t, dir, "good", servingcerttest.Cert{})
	other, _ := ca.Write(t, dir, "other", servingcerttest.Cert{})
	expired, _ := ca.Write(t, dir, "expired", servingcerttest.Cert{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	future, _ := ca.Write(t, dir, "future", servingcerttest.Cert{NotBefore: time.Now().Add(time.Hour)})
	open, _ := ca.Write(t, dir, "open", servingcerttest.Cert{})
	if err := os.Chmod(open.Key, 0o644); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.crt")
	if err := os.WriteFile(garbage, []byte("not PEM"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		files servingcert.Files
		want  string
	}{
		{"no key", servingcert.Files{Cert: good.Cert}, "needs both files"},
		{"key readable by others", open, "chmod 600 " + open.Key},
		{"missing file", servingcert.Files{Cert: filepath.Join(dir, "nope.crt"), Key: good.Key}, "no such file"},
		{"another certificate's key", servingcert.Files{Cert: good.Cert, Key: other.Key}, "private key does not match public key"},
		{"not a certificate", servingcert.Files{Cert: garbage, Key: good.Key}, garbage},
		{"expired", expired, "expired at"},
		{"not yet valid", future, "not valid before"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, _ := logger()
			_, err := servingcert.Load(tc.files, log)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
	log, out := logger()
	src, err := servingcert.Load(good, log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "serving TLS certificate") || strings.Contains(out.String(), "expires soon") {
		t.Errorf("log at load:\n%s", out)
	}
	if c, _ := src.GetCertificate(nil); c.Leaf != src.Leaf() || c.Leaf.DNSNames[0] != "localhost" {
		t.Errorf("served %v", c.Leaf.DNSNames)
	}
}

func TestFlagsNeedBothFiles(t *testing.T) {
	for _, tc := range []struct {
		f    servingcert.Files
		want string
	}{
		{servingcert.Files{}, ""},
		{servingcert.Files{Cert: "c", Key: "k"}, ""},
		{servingcert.Files{Cert: "c"}, "--cert needs --key"},
		{servingcert.Files{Key: "k"}, "--key needs --cert"},
	} {
		err := tc.f.Check("--cert", "--key")
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: got %v, want %q", tc.f, err, tc.want)
		}
	}
}

func TestSoonToExpireIsLogged(t *testing.T) {
	ca := servingcerttest.NewCA(t)
	f, _ := ca.Write(t, t.TempDir(), "soon", servingcerttest.Cert{NotAfter: time.Now().Add(time.Hour)})
	log, out := logger()
	if _, err := servingcert.Load(f, log); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "expires soon") {
		t.Errorf("no warning for a certificate with an hour left:\n%s", out)
	}
}

// TestRenewedFilesAreServed: a renewal replaces the files; the next
// handshake serves the new pair, and a renewal caught half-written (the
// new certificate with the old key), or a key left readable by others,
// keeps the last good pair and is logged once.
func TestRenewedFilesAreServed(t *testing.T) {
	servingcert.SetCheckEvery(t, 0)
	ca := servingcerttest.NewCA(t)
	dir := t.TempDir()
	f, first := ca.Write(t, dir, "tls", servingcerttest.Cert{})
	log, out := logger()
	src, err := servingcert.Load(f, log)
	if err != nil {
		t.Fatal(err)
	}
	serving := func() string {
		c, err := src.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.SerialNumber.String()
	}
	if got := serving(); got != first.String() {
		t.Fatalf("serving %s, want %s", got, first)
	}

	// Half-written: the new certificate beside the old key.
	oldKey, err := os.ReadFile(f.Key)
	if err != nil {
		t.Fatal(err)
	}
	_, second := ca.Write(t, dir, "tls", servingcerttest.Cert{})
	if err := os.WriteFile(f.Key, oldKey, 0o600); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got := serving(); got != first.String() {
			t.Fatalf("a mismatched pair replaced the good one: serving %s", got)
		}
	}
	if n := strings.Count(out.String(), "do not load"); n != 1 {
		t.Errorf("the mismatched pair logged %d times, want once:\n%s", n, out)
	}

	// Whole: served from the next handshake.
	_, third := ca.Write(t, dir, "tls", servingcerttest.Cert{})
	if got := serving(); got != third.String() {
		t.Fatalf("serving %s after the renewal, want %s (not %s)", got, third, second)
	}
	if !strings.Contains(out.String(), "reloaded the TLS certificate") {
		t.Errorf("the reload is not logged:\n%s", out)
	}

	// A key readable by others is not taken.
	_, fourth := ca.Write(t, dir, "tls", servingcerttest.Cert{})
	if err := os.Chmod(f.Key, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := serving(); got != third.String() {
		t.Fatalf("serving %s from a key readable by others", got)
	}
	if err := os.Chmod(f.Key, 0o600); err != nil {
		t.Fatal(err)
	}
	// chmod changes no size or time the stamp sees, so touch the key.
	later := time.Now().Add(time.Second)
	if err := os.Chtimes(f.Key, later, later); err != nil {
		t.Fatal(err)
	}
	if got := serving(); got != fourth.String() {
		t.Fatalf("serving %s once the key is private, want %s", got, fourth)
	}
}
