package keyfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckPrivate(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		mode os.FileMode
		want string // "" for no error
	}{
		{0o600, ""},
		{0o400, ""},
		{0o640, "mode 0640, readable by others; a test key must be readable by its owner only: chmod 600 "},
		{0o604, "chmod 600"},
		{0o620, "chmod 600"},
	} {
		path := filepath.Join(dir, "key.pem")
		if err := os.WriteFile(path, []byte("k"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		err := CheckPrivate(path, "a test key")
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("mode %04o: %v", tc.mode, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("mode %04o: got %v, want it to say %q", tc.mode, err, tc.want)
		}
		_ = os.Remove(path)
	}
	if err := CheckPrivate(filepath.Join(dir, "missing"), "a test key"); !os.IsNotExist(err) {
		t.Errorf("a missing file: got %v, want not-exist", err)
	}
}
