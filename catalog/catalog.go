// Package catalog is the archive's search index: an SQLite database with a
// contentless FTS5 table (the .eml files are the content), kept beside the
// archive at ROOT/index/catalog.sqlite. It is a cache: every row comes from
// the files through archive.Reader, Update brings it up to date
// incrementally, and deleting it loses nothing (the next Update rebuilds
// it). Nothing reads an item through the catalog: it only finds IDs.
package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"modernc.org/sqlite" // database/sql driver "sqlite", FTS5 compiled in
	sqlite3 "modernc.org/sqlite/lib"
)

// SchemaVersion is the layout of the tables below. A catalog with an older
// version is rebuilt by the next Update: it is only a cache. One with a
// newer version is left alone (ErrNewer).
const SchemaVersion = 4 // 3: CJK characters one token each; 4: items.location

// DefaultPath is where the catalog of an archive root lives.
func DefaultPath(root string) string { return filepath.Join(root, "index", "catalog.sqlite") }

// schema: items holds one row per item with what search shows and filters
// on; attrs the exact-match values (msgid, queueid, source, outcome, tag,
// and the addresses of from, to, cc and rcpt);
// fts the words, without their text (content=”). days remembers each dated
// directory's modification time when it was last read in full.
var schema = []string{
	`CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)`,
	`CREATE TABLE items(
		rowid INTEGER PRIMARY KEY,
		id TEXT NOT NULL UNIQUE,
		dir TEXT NOT NULL,
		stamp INTEGER NOT NULL,
		archived_at TEXT NOT NULL DEFAULT '',
		source TEXT NOT NULL DEFAULT '',
		outcome TEXT NOT NULL DEFAULT '',
		sender TEXT NOT NULL DEFAULT '',
		rcpts TEXT NOT NULL DEFAULT '[]',
		from_hdr TEXT NOT NULL DEFAULT '',
		to_hdr TEXT NOT NULL DEFAULT '',
		subject TEXT NOT NULL DEFAULT '',
		msgid TEXT NOT NULL DEFAULT '',
		queueids TEXT NOT NULL DEFAULT '[]',
		size INTEGER NOT NULL DEFAULT 0,
		attachments INTEGER NOT NULL DEFAULT 0,
		problem TEXT NOT NULL DEFAULT '',
		location TEXT NOT NULL DEFAULT ''
	)`,
	`CREATE INDEX items_stamp ON items(stamp)`,
	`CREATE INDEX items_msgid ON items(msgid) WHERE msgid != ''`,
	`CREATE INDEX items_dir ON items(dir)`,
	`CREATE TABLE attrs(item INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL COLLATE NOCASE)`,
	`CREATE INDEX attrs_kv ON attrs(key, value)`,
	`CREATE INDEX attrs_item ON attrs(item)`,
	`CREATE TABLE days(day TEXT PRIMARY KEY, mtime INTEGER NOT NULL)`,
	`CREATE VIRTUAL TABLE fts USING fts5(sender, from_hdr, rcpt, to_hdr, cc_hdr, subject, body, attachment, headers,
		content='', contentless_delete=1, tokenize='unicode61 remove_diacritics 2')`,
}

// Catalog is an open catalog.
type Catalog struct {
	db   *sql.DB
	path string
}

// ErrNoCatalog: there is no catalog at the path (run Update).
var ErrNoCatalog = errors.New("no catalog")

// ErrOutdated: the catalog was made by another version of the code.
var ErrOutdated = errors.New("catalog made by another version")

// ErrNewer: the catalog was made by a newer version; it is left alone.
var ErrNewer = errors.New("catalog made by a newer mailarchive (use that one, or --index another path)")

// ErrDamaged: the file is not a usable SQLite database.
var ErrDamaged = errors.New("catalog damaged")

// dsn: Update writes in WAL mode (searches go on meanwhile); readers set
// no journal mode (that would persist in the file, see Update) and open
// read-only when they may not write.
func dsn(path string, writer, readOnly bool) string {
	q := "?_pragma=busy_timeout(30000)"
	switch {
	case writer:
		q += "&_pragma=journal_mode(wal)&_pragma=synchronous(normal)&_txlock=immediate"
	case readOnly:
		q += "&mode=ro"
	}
	return "file:" + path + q
}

// OpenRead opens an existing catalog for searching. It returns
// ErrNoCatalog, ErrOutdated or ErrDamaged (wrapped) when Update must run
// first.
func OpenRead(path string) (*Catalog, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("catalog: %s: %w", path, ErrNoCatalog)
	}
	// Read-write when we may, so that SQLite can use the WAL's shared
	// memory; read-only for users who may only read (the archive group).
	ro := syscall.Access(path, 2 /* W_OK */) != nil
	db, err := sql.Open("sqlite", dsn(path, false, ro))
	if err != nil {
		return nil, fmt.Errorf("catalog: open %s: %w", path, err)
	}
	c := &Catalog{db: db, path: path}
	if err := c.checkVersion(); err != nil {
		db.Close()
		return nil, err
	}
	return c, nil
}

// damaged tells a file that is not a database (or a broken one) from
// errors such as a permission denied, which a rebuild would not cure.
func damaged(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB:
			return true
		}
	}
	return false
}

func (c *Catalog) checkVersion() error {
	var v int
	if err := c.db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		if damaged(err) {
			return fmt.Errorf("catalog: %s: %w: %v", c.path, ErrDamaged, err)
		}
		return fmt.Errorf("catalog: %s: %w", c.path, err)
	}
	if v < SchemaVersion {
		return fmt.Errorf("catalog: %s has schema %d, this program uses %d: %w", c.path, v, SchemaVersion, ErrOutdated)
	}
	if v > SchemaVersion {
		// Made by a newer mailarchive: rebuilding it here would make the
		// newer one rebuild it again, and so on.
		return fmt.Errorf("catalog: %s has schema %d, newer than this program's %d: %w", c.path, v, SchemaVersion, ErrNewer)
	}
	var n int
	if err := c.db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name IN ('items','fts','attrs','days','meta')`).Scan(&n); err != nil || n != 5 {
		return fmt.Errorf("catalog: %s: %w: tables missing", c.path, ErrDamaged)
	}
	return nil
}

// Close closes the catalog.
func (c *Catalog) Close() error { return c.db.Close() }

// Path is the catalog's file.
func (c *Catalog) Path() string { return c.path }

// openWrite opens (creating or recreating as needed) the catalog for
// Update, which holds the lock. A damaged file is removed: it is a cache,
// and what it held is in the files.
func openWrite(ctx context.Context, path string, rebuild bool, warn func(string)) (*Catalog, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	_, statErr := os.Stat(path)
	fresh := errors.Is(statErr, fs.ErrNotExist)
	if !fresh && !rebuild {
		c, err := OpenRead(path)
		if err == nil {
			err = c.quickCheck(ctx)
			c.Close()
			if err == nil {
				db, err := sql.Open("sqlite", dsn(path, true, false))
				if err != nil {
					return nil, fmt.Errorf("catalog: open %s: %w", path, err)
				}
				return &Catalog{db: db, path: path}, nil
			}
		}
		if errors.Is(err, ErrNewer) {
			return nil, err
		}
		warn(fmt.Sprintf("%v: rebuilding it from the archive", err))
		rebuild = true
	}
	if rebuild && !fresh {
		// Start from an empty file: removing it (and its WAL) rather than
		// dropping tables is the one way that also works on a damaged file.
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("catalog: %w", err)
			}
		}
	}
	// The archive group may read the catalog, as it may read the items.
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	f.Close()
	db, err := sql.Open("sqlite", dsn(path, true, false))
	if err != nil {
		return nil, fmt.Errorf("catalog: open %s: %w", path, err)
	}
	c := &Catalog{db: db, path: path}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("catalog: %s: %w", path, err)
	}
	defer tx.Rollback()
	for _, s := range schema {
		if _, err := tx.Exec(s); err != nil {
			db.Close()
			return nil, fmt.Errorf("catalog: create %s: %w", path, err)
		}
	}
	if _, err := tx.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, SchemaVersion)); err != nil {
		db.Close()
		return nil, fmt.Errorf("catalog: %w", err)
	}
	if err := tx.Commit(); err != nil {
		db.Close()
		return nil, fmt.Errorf("catalog: create %s: %w", path, err)
	}
	return c, nil
}

func (c *Catalog) quickCheck(ctx context.Context) error {
	var res string
	if err := c.db.QueryRowContext(ctx, `PRAGMA quick_check`).Scan(&res); err != nil {
		return fmt.Errorf("catalog: %s: %w: %v", c.path, ErrDamaged, err)
	}
	if res != "ok" {
		return fmt.Errorf("catalog: %s: %w: %s", c.path, ErrDamaged, res)
	}
	return nil
}

func (c *Catalog) meta(key string) string {
	var v string
	c.db.QueryRow(`SELECT value FROM meta WHERE key = ?`, key).Scan(&v)
	return v
}

// LastUpdate is when Update last finished, zero if never.
func (c *Catalog) LastUpdate() time.Time {
	t, _ := time.Parse(time.RFC3339Nano, c.meta("last_update"))
	return t
}

// lockFile takes an exclusive flock on path+".lock", waiting for another
// Update to finish (or ctx to end). The kernel drops it if we die.
func lockFile(ctx context.Context, path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	f, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("catalog: lock: %w", err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("catalog: lock %s.lock: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("catalog: waiting for another index run: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// joinWords is how lists go into an FTS column.
func joinWords(xs []string) string { return strings.Join(xs, "\n") }
