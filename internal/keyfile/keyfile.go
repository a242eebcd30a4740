// Package keyfile checks the files private keys are kept in: a key that
// others on the host can read is refused rather than used, with the
// command that fixes it.
package keyfile

import (
	"fmt"
	"os"
)

// CheckPrivate returns an error naming path and its mode when anyone but
// its owner may read or write it (what is a key for names the key in the
// message: "a CA key", "the gateway's TLS key").
func CheckPrivate(path, what string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s has mode %04o, readable by others; %s must be readable by its owner only: chmod 600 %s", path, fi.Mode().Perm(), what, path)
	}
	return nil
}
