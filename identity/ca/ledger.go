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

	"github.com/micromesh/micromesh/identity"
)

// ledger is the authority's database (db.AuthDB), kept on bbolt: which join
// tokens were used (so none is accepted twice, across restarts) and which
// certificates were revoked. Concurrent token uses share one transaction
// (group commit): a lone caller commits at once, a crowd commits together, so
// durability costs one fsync per batch rather than per token.
type ledger struct {
	db   *bolt.DB
	uses chan useRequest
	stop chan struct{}
	done chan struct{}
}

var (
	usedTokensBucket = []byte("used_tokens")
	revokedBucket    = []byte("revoked")
)

// maxBatch bounds how many token uses one transaction carries.
const maxBatch = 256

type useRequest struct {
	id     []byte
	expiry time.Time
	reply  chan useResult
}

type useResult struct {
	fresh bool
	err   error
}

var _ db.AuthDB = (*ledger)(nil)

func openLedger(path string) (*ledger, error) {
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: another process (a running `meshctl server`?) holds it", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = bdb.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{usedTokensBucket, revokedBucket} {
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
	l := &ledger{db: bdb, uses: make(chan useRequest), stop: make(chan struct{}), done: make(chan struct{})}
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
	req := useRequest{id: []byte(id), expiry: expiry, reply: make(chan useResult, 1)}
	select {
	case l.uses <- req:
	case <-l.stop:
		return false, errors.New("token ledger is closed")
	}
	r := <-req.reply
	return r.fresh, r.err
}

func (l *ledger) commitLoop() {
	defer close(l.done)
	batch := make([]useRequest, 0, maxBatch)
	for {
		batch = batch[:0]
		select {
		case r := <-l.uses:
			batch = append(batch, r)
		case <-l.stop:
			return
		}
	drain:
		for len(batch) < maxBatch {
			select {
			case r := <-l.uses:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		results := make([]bool, len(batch))
		err := l.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(usedTokensBucket)
			for i, r := range batch {
				if b.Get(r.id) != nil {
					continue
				}
				var v [8]byte
				binary.BigEndian.PutUint64(v[:], uint64(r.expiry.Unix()))
				if err := b.Put(r.id, v[:]); err != nil {
					return err
				}
				results[i] = true
			}
			return nil
		})
		for i, r := range batch {
			if err != nil {
				r.reply <- useResult{err: fmt.Errorf("record used token: %w", err)}
				continue
			}
			r.reply <- useResult{fresh: results[i]}
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
// authority grants: they would be refused as expired anyway.
func (l *ledger) purge(now time.Time) (int, error) {
	cutoff := uint64(now.Add(-2 * tokenLeeway).Unix())
	n := 0
	err := l.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(usedTokensBucket).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(v) == 8 && binary.BigEndian.Uint64(v) < cutoff {
				if err := c.Delete(); err != nil {
					return err
				}
				n++
			}
		}
		return nil
	})
	return n, err
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

// Revoke records a revoked certificate.
func (l *ledger) Revoke(rci *db.RevokedCertificateInfo) error {
	data, err := json.Marshal(rci)
	if err != nil {
		return err
	}
	return l.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(revokedBucket)
		if b.Get([]byte(rci.Serial)) != nil {
			return db.ErrAlreadyExists
		}
		return b.Put([]byte(rci.Serial), data)
	})
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
