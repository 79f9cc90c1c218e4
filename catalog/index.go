package catalog

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/mimetext"
	"github.com/postfix-archive/mailarchive/query"
)

// UpdateOptions configure Update.
type UpdateOptions struct {
	Rebuild bool // start from an empty catalog
	// Workers parse messages in parallel (default: the number of CPUs).
	Workers int
	// Warn receives messages about the catalog itself (rebuilt, damaged).
	Warn func(string)
	// Progress, if set, is called now and then with the items done so far.
	Progress func(done int)
	// open opens an item's message; tests replace it to make files
	// unreadable (the tests run as root, who can read anything).
	open func(archive.Item) (io.ReadCloser, error)
}

// Result says what an Update did.
type Result struct {
	Added     int // items indexed for the first time
	Moved     int // items the filer moved since the last run
	Removed   int // items gone from the archive
	Unparsed  int // added items whose message or envelope did not parse: indexed by what could be read
	Unchanged int // items seen and already indexed (days not re-read are not counted)
	// Problems are damaged or unreadable items: not indexed, retried by
	// the next Update.
	Problems []archive.Problem
	Took     time.Duration
}

// batchSize rows per transaction: large enough that commits cost little,
// small enough that searches see progress and the WAL stays small.
const batchSize = 2000

type known struct {
	rowid int64
	dir   string
	loc   string // Record.Location
	seen  bool
}

// op is one change the writer makes.
type op struct {
	rec   *Record // add
	rowid int64   // move (with dir and loc) or remove (rec nil, remove set)
	dir   string  // move
	loc   string  // move: "" local, else the bucket URL
	prob  *archive.Problem
}

// Update brings the catalog at path up to date with the archive r reads:
// it indexes items not in it yet, follows items the filer moved, and
// drops items no longer in the archive. Only the root and the dated
// directories changed since the last run are read. It holds a lock for
// its whole run, so two Updates at once run one after the other; searches
// may run meanwhile and see its work batch by batch.
func Update(ctx context.Context, r *archive.Reader, path string, opt UpdateOptions) (*Result, error) {
	start := time.Now()
	if opt.Warn == nil {
		opt.Warn = func(string) {}
	}
	if opt.Workers <= 0 {
		opt.Workers = runtime.NumCPU()
	}
	if opt.open == nil {
		opt.open = func(it archive.Item) (io.ReadCloser, error) { return it.Open() }
	}
	unlock, err := lockFile(ctx, path)
	if err != nil {
		return nil, err
	}
	defer unlock()
	c, err := openWrite(ctx, path, opt.Rebuild, opt.Warn)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	u := &updater{c: c, r: r, opt: opt, res: &Result{}, start: start}
	if err := u.run(ctx); err != nil {
		return nil, err
	}
	u.res.Took = time.Since(start)
	// At rest the catalog is in rollback-journal mode: a reader who may
	// only read (the archive group) cannot open a WAL database, whose
	// shared-memory file it would have to create. Update writes in WAL
	// mode, so searches run meanwhile. A search running now keeps it in
	// WAL mode until the next Update: that is all.
	c.db.ExecContext(ctx, `PRAGMA journal_mode = DELETE`)
	return u.res, nil
}

type updater struct {
	c      *Catalog
	r      *archive.Reader
	opt    UpdateOptions
	res    *Result
	start  time.Time
	known  map[string]*known
	days   map[string]int64 // day -> mtime (ns) recorded at its last full read
	read   map[string]int64 // days read in this run -> their mtime
	listed map[string]bool  // days that exist (read or skipped)
	failed map[string]bool  // days with a problem: read again next time
}

func (u *updater) run(ctx context.Context) error {
	if err := u.load(ctx); err != nil {
		return err
	}
	// A write error stops the walk and the parsers early.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	todo := make(chan archive.Item, 256)
	ops := make(chan op, 256)
	walkErr := make(chan error, 1)
	go func() {
		defer close(todo)
		walkErr <- u.walk(ctx, todo, ops)
	}()
	var wg sync.WaitGroup
	for range u.opt.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range todo {
				rec, prob := u.parse(it)
				if rec == nil && prob == nil {
					continue // gone meanwhile (retention): nothing to index
				}
				if prob != nil {
					ops <- op{prob: prob}
					continue
				}
				ops <- op{rec: rec}
			}
		}()
	}
	go func() { wg.Wait(); close(ops) }()
	err := u.write(ctx, ops)
	if err != nil {
		cancel()
	}
	for range ops {
		// drain after a write error, so the workers end
	}
	if werr := <-walkErr; err == nil {
		err = werr
	}
	if err != nil {
		return err
	}
	return u.finish(ctx)
}

func (u *updater) load(ctx context.Context) error {
	u.known, u.days, u.read = map[string]*known{}, map[string]int64{}, map[string]int64{}
	u.listed, u.failed = map[string]bool{}, map[string]bool{}
	rows, err := u.c.db.QueryContext(ctx, `SELECT rowid, id, dir, location FROM items`)
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	for rows.Next() {
		k := &known{}
		var id string
		if err := rows.Scan(&k.rowid, &id, &k.dir, &k.loc); err != nil {
			rows.Close()
			return fmt.Errorf("catalog: %w", err)
		}
		u.known[id] = k
	}
	rows.Close()
	rows, err = u.c.db.QueryContext(ctx, `SELECT day, mtime FROM days`)
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var d string
		var m int64
		if err := rows.Scan(&d, &m); err != nil {
			return fmt.Errorf("catalog: %w", err)
		}
		u.days[d] = m
	}
	return rows.Err()
}

// walk lists the archive and sends new items to the parsers and moves to
// the writer. u.known is only read here until the walk ends.
func (u *updater) walk(ctx context.Context, todo chan<- archive.Item, ops chan<- op) error {
	skip := func(day string, mtime time.Time) bool {
		u.listed[day] = true
		if m, ok := u.days[day]; ok && m == mtime.UnixNano() {
			return true
		}
		u.read[day] = mtime.UnixNano()
		return false
	}
	return u.r.WalkWith(archive.WalkOptions{SkipDay: skip}, func(it archive.Item) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := u.known[it.ID]
		switch {
		case k == nil:
			todo <- it
		case k.dir != it.Dir || k.loc != Location(it):
			k.seen = true
			ops <- op{rowid: k.rowid, dir: it.Dir, loc: Location(it)} // rare: the filer moved it
		default:
			k.seen = true
			u.res.Unchanged++
		}
		return nil
	}, func(p archive.Problem) {
		ops <- op{prob: &p}
	})
}

// parse reads one item. An item the filer moves meanwhile is located
// again; a damaged envelope still lets the message be indexed.
func (u *updater) parse(it archive.Item) (*Record, *archive.Problem) {
	for attempt := 0; ; attempt++ {
		rec, err := u.parseOnce(it)
		if err == nil {
			return rec, nil
		}
		if errors.Is(err, fs.ErrNotExist) && attempt < 3 {
			it2, lerr := u.r.Locate(it.ID)
			if lerr == nil {
				it = it2
				continue
			}
			if errors.Is(lerr, archive.ErrNotFound) {
				return nil, nil
			}
		}
		return nil, &archive.Problem{ID: it.ID, Path: itemPath(it), Err: err}
	}
}

func itemPath(it archive.Item) string {
	if it.Dir == "" {
		return it.ID + ".eml"
	}
	return it.Dir + "/" + it.ID + ".eml"
}

func (u *updater) parseOnce(it archive.Item) (*Record, error) {
	env, envErr := it.Envelope()
	if envErr != nil && errors.Is(envErr, fs.ErrNotExist) {
		return nil, envErr
	}
	f, err := u.opt.open(it)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cr := &countReader{r: f}
	doc := mimetext.Extract(cr, mimetext.Options{})
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return nil, fmt.Errorf("archive: read %s.eml: %w", it.ID, err)
	}
	if cr.err != nil {
		return nil, fmt.Errorf("archive: read %s.eml: %w", it.ID, cr.err)
	}
	rec := View(it, env, doc)
	if envErr != nil {
		rec.Problem = "envelope: " + envErr.Error()
		rec.Size = cr.n
	} else if doc.Problem != "" {
		rec.Problem = "message: " + doc.Problem
	}
	return &rec, nil
}

// countReader counts bytes and keeps the first read error, which
// mimetext (which never fails) would otherwise hide.
type countReader struct {
	r   io.Reader
	n   int64
	err error
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return n, err
}

// write applies ops in batches of transactions.
func (u *updater) write(ctx context.Context, ops <-chan op) error {
	var tx *sql.Tx
	var st *stmts
	n, done := 0, 0
	commit := func() error {
		if tx == nil {
			return nil
		}
		st.close()
		err := tx.Commit()
		tx, st = nil, nil
		if err != nil {
			return fmt.Errorf("catalog: commit: %w", err)
		}
		if u.opt.Progress != nil {
			u.opt.Progress(done)
		}
		return nil
	}
	defer func() {
		if tx != nil {
			tx.Rollback()
		}
	}()
	for o := range ops {
		if o.prob != nil {
			u.res.Problems = append(u.res.Problems, *o.prob)
			u.failed[dayOf(o.prob.Path)] = true
			continue
		}
		if tx == nil {
			var err error
			if tx, err = u.c.db.BeginTx(ctx, nil); err != nil {
				return fmt.Errorf("catalog: %w", err)
			}
			if st, err = prepare(ctx, tx); err != nil {
				return err
			}
		}
		switch {
		case o.rec != nil:
			if err := st.add(ctx, o.rec); err != nil {
				return err
			}
			u.res.Added++
			if o.rec.Problem != "" {
				u.res.Unparsed++
			}
		default:
			if _, err := st.move.ExecContext(ctx, o.dir, o.loc, o.rowid); err != nil {
				return fmt.Errorf("catalog: %w", err)
			}
			u.res.Moved++
		}
		n++
		done++
		if n >= batchSize {
			if err := commit(); err != nil {
				return err
			}
			n = 0
		}
	}
	return commit()
}

// dayOf is the dated directory of a problem's path ("" for the root).
func dayOf(p string) string {
	if len(p) > 10 && p[4] == '/' && p[7] == '/' && p[10] == '/' {
		return p[:10]
	}
	return ""
}

// finish drops items no longer in the archive and records the days read.
// An indexed item not seen in a directory that was read is located: it
// may have moved meanwhile (the filer between our listing of the root and
// of its day); only an item that is nowhere is dropped.
func (u *updater) finish(ctx context.Context) error {
	tx, err := u.c.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	defer tx.Rollback()
	st, err := prepare(ctx, tx)
	if err != nil {
		return err
	}
	defer st.close()
	for id, k := range u.known {
		if k.seen {
			continue
		}
		if _, read := u.read[k.dir]; k.dir != "" && u.listed[k.dir] && !read {
			continue // its day was not read: unchanged
		}
		it, err := u.r.Locate(id)
		switch {
		case err == nil:
			if loc := Location(it); it.Dir != k.dir || loc != k.loc {
				if _, err := st.move.ExecContext(ctx, it.Dir, loc, k.rowid); err != nil {
					return fmt.Errorf("catalog: %w", err)
				}
				u.res.Moved++
			}
		case errors.Is(err, archive.ErrNotFound):
			if err := st.remove(ctx, k.rowid); err != nil {
				return err
			}
			u.res.Removed++
		default:
			// ErrMissingMessage and the like: keep the row, report it.
			u.res.Problems = append(u.res.Problems, archive.Problem{ID: id, Path: id, Err: err})
		}
	}
	// A day is recorded as read only when nothing went wrong in it and its
	// time is safely in the past: a change in the same clock tick as our
	// read would not change the time we saw.
	for day, m := range u.read {
		if u.failed[day] || time.Unix(0, m).After(u.start.Add(-2*time.Second)) {
			if _, err := tx.ExecContext(ctx, `DELETE FROM days WHERE day = ?`, day); err != nil {
				return fmt.Errorf("catalog: %w", err)
			}
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO days(day, mtime) VALUES(?, ?)`, day, m); err != nil {
			return fmt.Errorf("catalog: %w", err)
		}
	}
	for day := range u.days {
		if !u.listed[day] {
			if _, err := tx.ExecContext(ctx, `DELETE FROM days WHERE day = ?`, day); err != nil {
				return fmt.Errorf("catalog: %w", err)
			}
		}
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO meta(key, value) VALUES('last_update', ?)`, now); err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("catalog: commit: %w", err)
	}
	return nil
}

type stmts struct {
	item, attr, fts, move, delItem, delAttr, delFTS *sql.Stmt
}

func prepare(ctx context.Context, tx *sql.Tx) (*stmts, error) {
	var s stmts
	for _, p := range []struct {
		st **sql.Stmt
		q  string
	}{
		{&s.item, `INSERT INTO items(id, dir, stamp, archived_at, source, outcome, sender, rcpts, from_hdr, to_hdr,
			subject, msgid, queueids, size, attachments, problem, location) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`},
		{&s.attr, `INSERT INTO attrs(item, key, value) VALUES(?,?,?)`},
		{&s.fts, `INSERT INTO fts(rowid, sender, from_hdr, rcpt, to_hdr, cc_hdr, subject, body, attachment, headers)
			VALUES(?,?,?,?,?,?,?,?,?,?)`},
		{&s.move, `UPDATE items SET dir = ?, location = ? WHERE rowid = ?`},
		{&s.delItem, `DELETE FROM items WHERE rowid = ?`},
		{&s.delAttr, `DELETE FROM attrs WHERE item = ?`},
		{&s.delFTS, `DELETE FROM fts WHERE rowid = ?`},
	} {
		st, err := tx.PrepareContext(ctx, p.q)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("catalog: prepare: %w", err)
		}
		*p.st = st
	}
	return &s, nil
}

func (s *stmts) close() {
	for _, st := range []*sql.Stmt{s.item, s.attr, s.fts, s.move, s.delItem, s.delAttr, s.delFTS} {
		if st != nil {
			st.Close()
		}
	}
}

func (s *stmts) add(ctx context.Context, r *Record) error {
	d := r.Doc
	archivedAt := ""
	if !r.ArchivedAt.IsZero() {
		archivedAt = r.ArchivedAt.UTC().Format(time.RFC3339Nano)
	}
	res, err := s.item.ExecContext(ctx, r.ID, r.Dir, r.Stamp.Unix(), archivedAt, r.Source, r.Outcome, r.Sender,
		jsonList(r.Rcpts), d.From, d.To, d.Subject, r.MessageID, jsonList(r.QueueIDs), r.Size, len(d.Attachments), r.Problem, r.Location)
	if err != nil {
		return fmt.Errorf("catalog: add %s: %w", r.ID, err)
	}
	rowid, err := res.LastInsertId()
	if err != nil {
		return fmt.Errorf("catalog: add %s: %w", r.ID, err)
	}
	attr := func(key string, vs ...string) error {
		for _, v := range vs {
			if v == "" {
				continue
			}
			if _, err := s.attr.ExecContext(ctx, rowid, key, v); err != nil {
				return fmt.Errorf("catalog: add %s: %w", r.ID, err)
			}
		}
		return nil
	}
	for _, a := range []struct {
		key string
		vs  []string
	}{{"msgid", []string{r.MessageID}}, {"queueid", r.QueueIDs}, {"source", []string{r.Source}},
		{"outcome", []string{r.Outcome}}, {"tag", r.Tags},
		// Whole addresses, for from:/to:/cc:/rcpt: with an address: an
		// index lookup instead of a phrase ("example" is in every item).
		{query.FieldFrom, addresses(append([]string{r.Sender}, d.From))},
		{query.FieldTo, addresses(append([]string{d.To}, r.Rcpts...))},
		{query.FieldCc, addresses(append([]string{d.Cc}, r.Rcpts...))},
		{query.FieldRcpt, addresses(r.Rcpts)}} {
		if err := attr(a.key, a.vs...); err != nil {
			return err
		}
	}
	var names []string
	for _, a := range d.Attachments {
		names = append(names, a.Name)
	}
	if _, err := s.fts.ExecContext(ctx, rowid, r.Sender, splitCJK(d.From), joinWords(r.Rcpts), splitCJK(d.To), splitCJK(d.Cc),
		splitCJK(d.Subject), splitCJK(d.Text), splitCJK(joinWords(names)), splitCJK(d.Headers)); err != nil {
		return fmt.Errorf("catalog: add %s: %w", r.ID, err)
	}
	return nil
}

func (s *stmts) remove(ctx context.Context, rowid int64) error {
	for _, st := range []*sql.Stmt{s.delFTS, s.delAttr, s.delItem} {
		if _, err := st.ExecContext(ctx, rowid); err != nil {
			return fmt.Errorf("catalog: remove: %w", err)
		}
	}
	return nil
}

// addrSpec finds addresses in header text ("Jörg <j@example.org>, b@x").
var addrSpec = regexp.MustCompile("[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+[A-Za-z0-9]")

// addresses returns the distinct addresses in vs, in lower case.
func addresses(vs []string) []string {
	var out []string
	for _, v := range vs {
		for _, a := range addrSpec.FindAllString(v, -1) {
			a = strings.ToLower(a)
			if !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}

func jsonList(xs []string) string {
	if xs == nil {
		xs = []string{}
	}
	b, _ := json.Marshal(xs)
	return string(b)
}
