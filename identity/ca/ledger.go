package ca

import (
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/smallstep/certificates/db"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"golang.org/x/crypto/ssh"

	"github.com/micromesh/micromesh/identity"
)

// ledger is the authority's database (db.AuthDB), kept on bbolt: which join
// tokens were used (so none is accepted twice, across restarts), which
// certificates were issued to whom (until they expire: what revoking an
// identity revokes) and which were revoked. Concurrent writes of token uses
// and issued certificates share one transaction (group commit): a lone
// caller commits at once, a crowd commits together, so durability costs one
// fsync per batch rather than per certificate.
type ledger struct {
	db     *bolt.DB
	writes chan writeRequest
	stop   chan struct{}
	done   chan struct{}
}

var (
	usedTokensBucket = []byte("used_tokens")
	revokedBucket    = []byte("revoked")
	issuedBucket     = []byte("issued")
)

// maxBatch bounds how many writes one transaction carries.
const maxBatch = 256

// writeRequest is one write of a group commit: apply runs inside the
// batch's transaction and reports whether it changed anything.
type writeRequest struct {
	apply func(*bolt.Tx) (bool, error)
	reply chan writeResult
}

type writeResult struct {
	changed bool
	err     error
}

// issuedRecord is what the ledger keeps of an issued certificate, by
// serial (decimal, as the authority names serials).
type issuedRecord struct {
	ID       string    `json:"id"`
	NotAfter time.Time `json:"not_after"`
}

// revokedRecord is a revoked certificate, by serial.
type revokedRecord struct {
	Serial    string    `json:"serial"`
	ID        string    `json:"id"`
	Reason    string    `json:"reason,omitempty"`
	RevokedAt time.Time `json:"revoked_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

var (
	_ db.AuthDB            = (*ledger)(nil)
	_ db.CertificateStorer = (*ledger)(nil)
)

func openLedger(path string) (*ledger, error) {
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: another process (a running `meshctl server`?) holds it", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = bdb.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{usedTokensBucket, revokedBucket, issuedBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = bdb.Close()
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	l := &ledger{db: bdb, writes: make(chan writeRequest), stop: make(chan struct{}), done: make(chan struct{})}
	go l.commitLoop()
	return l, nil
}

// UseToken records token id as used; it reports false if it was used before.
// tok is the token itself, read only for its expiry so the entry can be
// purged once the token could no longer be accepted anyway.
func (l *ledger) UseToken(id, tok string) (bool, error) {
	expiry := time.Now().Add(MaxTokenTTL)
	if info, err := identity.InspectToken(tok); err == nil && !info.Expiry.IsZero() {
		expiry = info.Expiry
	}
	key := []byte(id)
	fresh, err := l.write(func(tx *bolt.Tx) (bool, error) {
		b := tx.Bucket(usedTokensBucket)
		if b.Get(key) != nil {
			return false, nil
		}
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], uint64(expiry.Unix()))
		return true, b.Put(key, v[:])
	})
	if err != nil {
		return false, fmt.Errorf("record used token: %w", err)
	}
	return fresh, nil
}

// StoreCertificate records an issued certificate (the authority calls it
// for every certificate it signs or renews, and fails the issuance if it
// cannot): its serial, identity and expiry.
func (l *ledger) StoreCertificate(crt *x509.Certificate) error {
	rec := issuedRecord{NotAfter: crt.NotAfter.UTC()}
	if id, err := identity.IDFromCertificate(crt); err == nil {
		rec.ID = id.String()
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	key := []byte(crt.SerialNumber.String())
	if _, err := l.write(func(tx *bolt.Tx) (bool, error) {
		return true, tx.Bucket(issuedBucket).Put(key, data)
	}); err != nil {
		return fmt.Errorf("record issued certificate: %w", err)
	}
	return nil
}

// StoreSSHCertificate: SSH certificates are not issued by this CA.
func (l *ledger) StoreSSHCertificate(*ssh.Certificate) error { return db.ErrNotImplemented }

// write runs apply in the next group commit.
func (l *ledger) write(apply func(*bolt.Tx) (bool, error)) (bool, error) {
	req := writeRequest{apply: apply, reply: make(chan writeResult, 1)}
	select {
	case l.writes <- req:
	case <-l.stop:
		return false, errors.New("the CA's ledger is closed")
	}
	r := <-req.reply
	return r.changed, r.err
}

func (l *ledger) commitLoop() {
	defer close(l.done)
	batch := make([]writeRequest, 0, maxBatch)
	for {
		batch = batch[:0]
		select {
		case r := <-l.writes:
			batch = append(batch, r)
		case <-l.stop:
			return
		}
	drain:
		for len(batch) < maxBatch {
			select {
			case r := <-l.writes:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		results := make([]bool, len(batch))
		err := l.db.Update(func(tx *bolt.Tx) error {
			for i, r := range batch {
				changed, err := r.apply(tx)
				if err != nil {
					return err
				}
				results[i] = changed
			}
			return nil
		})
		for i, r := range batch {
			r.reply <- writeResult{changed: results[i] && err == nil, err: err}
		}
	}
}

// used reports whether token id is recorded as used.
func (l *ledger) used(id string) (bool, error) {
	var found bool
	err := l.db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket(usedTokensBucket).Get([]byte(id)) != nil
		return nil
	})
	return found, err
}

// purge forgets used tokens that expired before now, less the leeway the
// authority grants (they would be refused as expired anyway), and issued
// and revoked certificates past their expiry (no peer accepts them
// anyway). It reports how many of each it forgot.
func (l *ledger) purge(now time.Time) (tokens, revoked int, err error) {
	cutoff := uint64(now.Add(-2 * tokenLeeway).Unix())
	err = l.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(usedTokensBucket).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(v) == 8 && binary.BigEndian.Uint64(v) < cutoff {
				if err := c.Delete(); err != nil {
					return err
				}
				tokens++
			}
		}
		c = tx.Bucket(issuedBucket).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var rec issuedRecord
			if json.Unmarshal(v, &rec) != nil || rec.NotAfter.Before(now) {
				if err := c.Delete(); err != nil {
					return err
				}
			}
		}
		c = tx.Bucket(revokedBucket).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var rec revokedRecord
			if json.Unmarshal(v, &rec) == nil && !rec.ExpiresAt.IsZero() && rec.ExpiresAt.Before(now) {
				if err := c.Delete(); err != nil {
					return err
				}
				revoked++
			}
		}
		return nil
	})
	return tokens, revoked, err
}

// issuedTo returns the serials of the unexpired certificates issued to id.
func (l *ledger) issuedTo(id string, now time.Time) (map[string]issuedRecord, error) {
	out := map[string]issuedRecord{}
	err := l.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(issuedBucket).ForEach(func(k, v []byte) error {
			var rec issuedRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return nil
			}
			if rec.ID == id && rec.NotAfter.After(now) {
				out[string(k)] = rec
			}
			return nil
		})
	})
	return out, err
}

// issued returns what the ledger knows of certificate serial.
func (l *ledger) issued(serial string) (issuedRecord, bool, error) {
	var rec issuedRecord
	var found bool
	err := l.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(issuedBucket).Get([]byte(serial))
		if v == nil {
			return nil
		}
		found = true
		return json.Unmarshal(v, &rec)
	})
	return rec, found, err
}

// revoke records revocations; it returns the ones that were not recorded
// before (a serial revoked twice keeps its first record).
func (l *ledger) revoke(recs []revokedRecord) ([]revokedRecord, error) {
	var fresh []revokedRecord
	err := l.db.Update(func(tx *bolt.Tx) error {
		fresh = fresh[:0]
		b := tx.Bucket(revokedBucket)
		for _, r := range recs {
			if b.Get([]byte(r.Serial)) != nil {
				continue
			}
			data, err := json.Marshal(r)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(r.Serial), data); err != nil {
				return err
			}
			fresh = append(fresh, r)
		}
		return nil
	})
	return fresh, err
}

// revoked returns every recorded revocation, by serial.
func (l *ledger) revoked() ([]revokedRecord, error) {
	var out []revokedRecord
	err := l.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(revokedBucket).ForEach(func(k, v []byte) error {
			var rec revokedRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("revocation of %s does not decode: %w", k, err)
			}
			out = append(out, rec)
			return nil
		})
	})
	return out, err
}

// IsRevoked reports whether the certificate with serial sn was revoked.
func (l *ledger) IsRevoked(sn string) (bool, error) {
	var found bool
	err := l.db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket(revokedBucket).Get([]byte(sn)) != nil
		return nil
	})
	return found, err
}

// Revoke records a revoked certificate (the authority's own revocation
// API; the CA revokes through revoke).
func (l *ledger) Revoke(rci *db.RevokedCertificateInfo) error {
	fresh, err := l.revoke([]revokedRecord{{Serial: rci.Serial, Reason: rci.Reason, RevokedAt: rci.RevokedAt, ExpiresAt: rci.ExpiresAt}})
	if err == nil && len(fresh) == 0 {
		return db.ErrAlreadyExists
	}
	return err
}

// GetCertificate: issued certificates are not stored.
func (l *ledger) GetCertificate(serial string) (*x509.Certificate, error) {
	return nil, fmt.Errorf("certificate %s: issued certificates are not stored", serial)
}

// SSH certificates are not issued by this CA.
func (l *ledger) IsSSHRevoked(string) (bool, error)          { return false, nil }
func (l *ledger) RevokeSSH(*db.RevokedCertificateInfo) error { return db.ErrNotImplemented }
func (l *ledger) IsSSHHost(string) (bool, error)             { return false, nil }
func (l *ledger) GetSSHHostPrincipals() ([]string, error)    { return nil, nil }

// Shutdown is called by the authority; the CA closes the ledger itself.
func (l *ledger) Shutdown() error { return nil }

// close stops the committer and closes the database.
func (l *ledger) close() error {
	close(l.stop)
	<-l.done
	return l.db.Close()
}
