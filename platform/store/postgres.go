package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Postgres is the store on PostgreSQL: one table, keyed by (database,
// table, key) with keys in byte order (COLLATE "C") so that prefix reads
// are index range scans. A write is durable when its transaction commits
// (PostgreSQL's default synchronous commit). Expired records are skipped
// when read and deleted in the background.
type Postgres struct {
	pool *pgxpool.Pool
	log  *slog.Logger
	stop chan struct{}
	done sync.WaitGroup
}

const pgSchema = `
CREATE TABLE IF NOT EXISTS micromesh_store (
	db       text NOT NULL,
	tbl      text NOT NULL,
	key      text COLLATE "C" NOT NULL,
	value    bytea NOT NULL,
	metadata jsonb,
	expiry   timestamptz,
	PRIMARY KEY (db, tbl, key)
);
CREATE INDEX IF NOT EXISTS micromesh_store_expiry ON micromesh_store (expiry) WHERE expiry IS NOT NULL;
`

// OpenPostgres connects to dsn, creates the table if needed and starts
// purging expired records every purgeEvery (0: every 30 s).
func OpenPostgres(ctx context.Context, dsn string, purgeEvery time.Duration, log *slog.Logger) (*Postgres, error) {
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w", err)
	}
	if _, err := pool.Exec(ctx, pgSchema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store: postgres: creating the table: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	if purgeEvery <= 0 {
		purgeEvery = 30 * time.Second
	}
	p := &Postgres{pool: pool, log: log, stop: make(chan struct{})}
	p.done.Add(1)
	go p.purgeLoop(purgeEvery)
	return p, nil
}

const live = `(expiry IS NULL OR expiry > now())`

// where builds the filter of q, with arguments after db and tbl.
func (q Query) where(read bool) (string, []any) {
	var conds []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args)+2)
	}
	prefix, suffix := q.PrefixStr, q.SuffixStr
	if read {
		prefix, suffix = "", ""
		switch {
		case q.Prefix:
			prefix = q.Key
		case q.Suffix:
			suffix = q.Key
		}
	}
	if prefix != "" {
		conds = append(conds, "key >= "+arg(prefix))
		if end := prefixEnd([]byte(prefix)); end != nil && strings.ToValidUTF8(string(end), "") == string(end) {
			conds = append(conds, "key < "+arg(string(end)))
		} else {
			conds = append(conds, "left(key, char_length("+arg(prefix)+")) = $"+strconv.Itoa(len(args)+2))
		}
	}
	if suffix != "" {
		conds = append(conds, "right(key, char_length("+arg(suffix)+")) = $"+strconv.Itoa(len(args)+2))
	}
	w := "db = $1 AND tbl = $2 AND " + live
	for _, c := range conds {
		w += " AND " + c
	}
	return w, args
}

func (q Query) tail() string {
	s := " ORDER BY key"
	if q.Order == Desc {
		s += " DESC"
	}
	if q.Offset > 0 {
		s += " OFFSET " + strconv.Itoa(q.Offset)
	}
	if q.Limit > 0 {
		s += " LIMIT " + strconv.Itoa(q.Limit)
	}
	return s
}

func scanRecord(rows pgx.CollectableRow) (Record, error) {
	var r Record
	var md []byte
	var exp *time.Time
	if err := rows.Scan(&r.Key, &r.Value, &md, &exp); err != nil {
		return r, err
	}
	if len(md) > 0 {
		if err := json.Unmarshal(md, &r.Metadata); err != nil {
			return r, err
		}
	}
	if exp != nil {
		r.Expiry = *exp
	}
	return r, nil
}

// Read implements Backend.
func (p *Postgres) Read(ctx context.Context, s Scope, q Query) ([]Record, error) {
	if !q.Prefix && !q.Suffix {
		rows, err := p.pool.Query(ctx, "SELECT key, value, metadata, expiry FROM micromesh_store WHERE db = $1 AND tbl = $2 AND key = $3 AND "+live, s.Database, s.Table, q.Key)
		if err != nil {
			return nil, err
		}
		recs, err := pgx.CollectRows(rows, scanRecord)
		if err != nil {
			return nil, err
		}
		if len(recs) == 0 {
			return nil, ErrNotFound
		}
		return recs, nil
	}
	w, args := q.where(true)
	rows, err := p.pool.Query(ctx, "SELECT key, value, metadata, expiry FROM micromesh_store WHERE "+w+q.tail(), append([]any{s.Database, s.Table}, args...)...)
	if err != nil {
		return nil, err
	}
	recs, err := pgx.CollectRows(rows, scanRecord)
	if err != nil {
		return nil, err
	}
	if recs == nil {
		recs = []Record{}
	}
	return recs, nil
}

// Write implements Backend.
func (p *Postgres) Write(ctx context.Context, s Scope, r Record) error {
	var md []byte
	if len(r.Metadata) > 0 {
		var err error
		if md, err = json.Marshal(r.Metadata); err != nil {
			return err
		}
	}
	var exp *time.Time
	if !r.Expiry.IsZero() {
		exp = &r.Expiry
	}
	value := r.Value
	if value == nil {
		value = []byte{}
	}
	_, err := p.pool.Exec(ctx, `INSERT INTO micromesh_store (db, tbl, key, value, metadata, expiry) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (db, tbl, key) DO UPDATE SET value = EXCLUDED.value, metadata = EXCLUDED.metadata, expiry = EXCLUDED.expiry`,
		s.Database, s.Table, r.Key, value, md, exp)
	return err
}

// Delete implements Backend.
func (p *Postgres) Delete(ctx context.Context, s Scope, key string) error {
	_, err := p.pool.Exec(ctx, "DELETE FROM micromesh_store WHERE db = $1 AND tbl = $2 AND key = $3", s.Database, s.Table, key)
	return err
}

// List implements Backend.
func (p *Postgres) List(ctx context.Context, s Scope, q Query) ([]string, error) {
	w, args := q.where(false)
	rows, err := p.pool.Query(ctx, "SELECT key FROM micromesh_store WHERE "+w+q.tail(), append([]any{s.Database, s.Table}, args...)...)
	if err != nil {
		return nil, err
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if keys == nil {
		keys = []string{}
	}
	return keys, err
}

// Databases implements Backend.
func (p *Postgres) Databases(ctx context.Context) ([]string, error) {
	rows, err := p.pool.Query(ctx, "SELECT DISTINCT db FROM micromesh_store ORDER BY db")
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Tables implements Backend.
func (p *Postgres) Tables(ctx context.Context, database string) ([]string, error) {
	rows, err := p.pool.Query(ctx, "SELECT DISTINCT tbl FROM micromesh_store WHERE db = $1 ORDER BY tbl", database)
	if err != nil {
		return nil, err
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if tables == nil {
		tables = []string{}
	}
	return tables, err
}

// Purge deletes expired records now; it returns how many.
func (p *Postgres) Purge(ctx context.Context) (int64, error) {
	tag, err := p.pool.Exec(ctx, "DELETE FROM micromesh_store WHERE expiry IS NOT NULL AND expiry <= now()")
	return tag.RowsAffected(), err
}

func (p *Postgres) purgeLoop(every time.Duration) {
	defer p.done.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), every)
		n, err := p.Purge(ctx)
		cancel()
		switch {
		case err != nil && !errors.Is(err, context.Canceled):
			p.log.Warn("purging expired records", "err", err)
		case n > 0:
			p.log.Debug("purged expired records", "count", n)
		}
	}
}

// Close stops purging and closes the pool.
func (p *Postgres) Close() error {
	close(p.stop)
	p.done.Wait()
	p.pool.Close()
	return nil
}
