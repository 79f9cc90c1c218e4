package archive

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// The read API: the reader rules of docs/archive-format.md written once.
// Everything that reads an archive (mailarchive, the filer, tests) finds
// items through a Reader, so only this package knows the layout.

// ErrNotFound says that no complete item has the ID asked for.
var ErrNotFound = errors.New("no such item")

// Reader reads an archive root. It never writes, never looks into tmp/
// and never takes locks, so it is safe beside writers and filers.
type Reader struct {
	root  string
	filed string // root of the dated tree

	remoteOnce sync.Once // opens remote on first use (remote.go)
	remote     ObjectReader
	remoteErr  error
}

// ReaderOptions configure a Reader. The zero value reads a root whose dated
// tree is inside it, as the filer makes it by default.
type ReaderOptions struct {
	// Filed is the root of the dated tree (filer --dest), if not the root.
	Filed string
	// Objects reads items in object storage; nil: the client registered
	// for the scheme in ROOT/.destination (RegisterRemote), on first use.
	Objects ObjectReader
}

// OpenReader opens the archive root dir for reading. Unlike Open it
// creates nothing.
func OpenReader(dir string, opt ReaderOptions) (*Reader, error) {
	if dir == "" {
		return nil, errors.New("archive: no archive directory given")
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("archive: %s is not a directory", dir)
	}
	r := &Reader{root: dir, filed: opt.Filed, remote: opt.Objects}
	if r.filed == "" {
		r.filed = dir
	}
	return r, nil
}

// Root is the archive root.
func (r *Reader) Root() string { return r.root }

// Item is one complete item as a reader finds it: its .json exists.
type Item struct {
	ID    string
	Stamp time.Time // from the ID: when the writer started it (UTC)
	// Dir is the directory of the .json relative to the root or the dated
	// tree: "" for the root itself, else "YYYY/MM/DD".
	Dir      string
	JSONPath string
	EMLPath  string
	// Remote is set for an item in object storage: JSONPath and EMLPath are
	// then URLs, for messages only; Open and Envelope fetch and read it.
	// Dir is its day.
	Remote *RemoteRecord
	r      *Reader
}

// Open opens the item's message. An item the filer moves after it was found
// is not there any more: Locate it again. A message in object storage is
// fetched into an unlinked temporary file and checked against its recorded
// size and SHA-256.
func (it Item) Open() (*os.File, error) {
	if it.Remote != nil {
		return it.openRemote()
	}
	f, err := os.Open(it.EMLPath)
	if err != nil {
		return nil, fmt.Errorf("archive: open %s.eml: %w", it.ID, unwrapPath(err))
	}
	return f, nil
}

// Envelope reads and decodes the item's ID.json.
func (it Item) Envelope() (*Envelope, error) {
	var env *Envelope
	var err error
	if it.Remote != nil {
		// The envelope as uploaded, kept in the record: no request.
		var b []byte
		if b, err = it.EnvelopeBytes(); err == nil {
			env = new(Envelope)
			if err = json.Unmarshal(b, env); err != nil {
				err = fmt.Errorf("archive: decode the envelope in the remote record of %s: %w", it.ID, err)
			}
		}
	} else {
		env, err = ReadEnvelope(it.JSONPath)
	}
	if err != nil {
		return nil, err
	}
	if env.ID != it.ID {
		return nil, fmt.Errorf("archive: %s.json names the item %q", it.ID, env.ID)
	}
	return env, nil
}

// Problem is damage a walk found: a name that should be an item and is not.
type Problem struct {
	ID   string // the ID, where the name has one
	Path string // relative to the root (or the dated tree)
	Err  error
}

func (p Problem) Error() string { return fmt.Sprintf("%s: %v", p.Path, p.Err) }

// Problems a walk reports.
var (
	// ErrMissingMessage: an ID.json whose .eml is neither beside it nor
	// in the dated tree.
	ErrMissingMessage = errors.New("envelope without message (.json with no .eml)")
	// ErrOrphanMessage: an .eml in the dated tree with no .json there or in
	// the root.
	ErrOrphanMessage = errors.New("message without envelope (.eml with no .json)")
)

// DatedDir is the directory, relative to the dated tree's root, that an
// item with this stamp is filed in: YYYY/MM/DD in UTC, or in local time
// when local is set (filer --local-time).
func DatedDir(stamp time.Time, local bool) string {
	if local {
		stamp = stamp.Local()
	} else {
		stamp = stamp.UTC()
	}
	return filepath.Join(stamp.Format("2006"), stamp.Format("01"), stamp.Format("02"))
}

// RootEntry is an ID found in the root itself (not yet filed).
type RootEntry struct {
	ID           string
	Stamp        time.Time
	EML, JSON    bool
	EMLIsRegular bool
}

// RootListing is what the root holds besides tmp/ and the dated tree.
type RootListing struct {
	Entries []RootEntry // sorted by ID
	Foreign []string    // names that are neither ID.eml/ID.json nor dated years
}

// ListRoot lists the IDs in the root, for the filer and for Walk.
// skip names files that belong to a tool (lock files) and are not foreign.
func (r *Reader) ListRoot(skip ...string) (RootListing, error) {
	var l RootListing
	ents, err := os.ReadDir(r.root)
	if err != nil {
		return l, fmt.Errorf("archive: %w", err)
	}
	byID := map[string]*RootEntry{}
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() {
			if name == "tmp" || isYearDir(name) || reservedDir[name] {
				continue
			}
			l.Foreign = append(l.Foreign, name+"/")
			continue
		}
		if contains(skip, name) || strings.HasPrefix(name, ".") && reservedFile(name) {
			continue
		}
		stem, ext := strings.TrimSuffix(name, filepath.Ext(name)), filepath.Ext(name)
		pid, err := ParseID(stem)
		if err != nil || (ext != ".eml" && ext != ".json") || !e.Type().IsRegular() {
			l.Foreign = append(l.Foreign, name)
			continue
		}
		it := byID[stem]
		if it == nil {
			it = &RootEntry{ID: stem, Stamp: pid.Stamp}
			byID[stem] = it
		}
		if ext == ".eml" {
			it.EML = true
		} else {
			it.JSON = true
		}
	}
	for _, it := range byID {
		l.Entries = append(l.Entries, *it)
	}
	sort.Slice(l.Entries, func(i, j int) bool { return l.Entries[i].ID < l.Entries[j].ID })
	sort.Strings(l.Foreign)
	return l, nil
}

// reservedDir are directories of the root that belong to the read side
// (catalog, log, audit trail): not foreign, not items.
// remote/ holds the records of items in object storage (remote.go), holds/
// the legal holds (package retention), .wal/ the writers' journal
// (journal.go).
var reservedDir = map[string]bool{"index": true, "log": true, "audit": true, RemoteDir: true, "holds": true, journalDirName: true}

// reservedFile reports whether a dot file in the root is one of ours
// (including the temporary name WriteDestination writes through).
func reservedFile(name string) bool {
	return strings.HasSuffix(name, ".lock") || name == DestinationFile ||
		strings.HasPrefix(name, DestinationFile+".") && strings.HasSuffix(name, ".part") ||
		name == ".retention"
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func isYearDir(name string) bool {
	if len(name) != 4 {
		return false
	}
	for i := range 4 {
		if name[i] < '0' || name[i] > '9' {
			return false
		}
	}
	return true
}

// WalkFunc is called for each complete item; an error stops the walk and is
// returned by Walk. problem, if not nil, is called for each damaged name.
type WalkFunc func(Item) error

// Walk visits every complete item once: first those in the root (oldest
// first), then the dated tree day by day. It lists the root before the dated
// tree, and the filer only moves items from the root into the tree, so an
// item that moves during the walk is still visited (once: an ID seen in the
// root is not visited again in the tree). Damage goes to problem.
func (r *Reader) Walk(fn WalkFunc, problem func(Problem)) error {
	return r.WalkWith(WalkOptions{}, fn, problem)
}

// WalkOptions narrow a walk.
type WalkOptions struct {
	// SkipDay, if set, is asked before each dated directory is read, with
	// the directory's modification time (taken before it is read, so a
	// change made while it is read gives a later time); true skips the day.
	// An incremental reader skips the days it has seen unchanged. The root
	// is always read.
	SkipDay func(day string, mtime time.Time) bool
}

// WalkWith is Walk with options.
func (r *Reader) WalkWith(opt WalkOptions, fn WalkFunc, problem func(Problem)) error {
	if problem == nil {
		problem = func(Problem) {}
	}
	l, err := r.ListRoot()
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, e := range l.Entries {
		if !e.JSON {
			continue // a writer or the filer between its two renames
		}
		it := Item{ID: e.ID, Stamp: e.Stamp, JSONPath: filepath.Join(r.root, e.ID+".json"),
			EMLPath: filepath.Join(r.root, e.ID+".eml")}
		if !e.EML {
			p, ok := r.findFiledEML(e.ID, e.Stamp)
			if !ok {
				if rit, ok := r.locateRemote(e.ID, e.Stamp); ok {
					// The filer removes the local copy of an item it
					// moved to object storage .eml first.
					seen[e.ID] = true
					if err := fn(rit); err != nil {
						return err
					}
					continue
				}
				if _, err := os.Stat(it.JSONPath); err != nil {
					continue // filed meanwhile: the tree walk finds it
				}
				problem(Problem{ID: e.ID, Path: e.ID + ".json", Err: ErrMissingMessage})
				continue
			}
			it.EMLPath = p
		}
		seen[e.ID] = true
		if err := fn(it); err != nil {
			return err
		}
	}
	days, err := r.Days()
	if err != nil {
		return err
	}
	for _, day := range days {
		if opt.SkipDay != nil {
			fi, err := os.Stat(filepath.Join(r.filed, day))
			if err == nil && opt.SkipDay(day, fi.ModTime()) {
				continue
			}
		}
		if err := r.walkDay(day, seen, fn, problem); err != nil {
			return err
		}
	}
	return nil
}

// Days lists the dated directories (YYYY/MM/DD), oldest first: those of the
// dated tree and of the records of items in object storage.
func (r *Reader) Days() ([]string, error) {
	local, err := listDays(r.filed)
	if err != nil {
		return nil, err
	}
	remote, err := r.remoteDays()
	if err != nil || len(remote) == 0 {
		return local, err
	}
	set := map[string]bool{}
	for _, d := range append(local, remote...) {
		set[d] = true
	}
	days := make([]string, 0, len(set))
	for d := range set {
		days = append(days, d)
	}
	sort.Strings(days)
	return days, nil
}

// listDays lists the YYYY/MM/DD directories under dir, oldest first.
func listDays(dir string) ([]string, error) {
	var days []string
	years, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	for _, y := range years {
		if !y.IsDir() || !isYearDir(y.Name()) {
			continue
		}
		months, err := os.ReadDir(filepath.Join(dir, y.Name()))
		if err != nil {
			return nil, fmt.Errorf("archive: %w", err)
		}
		for _, m := range months {
			if !m.IsDir() || !isNumber(m.Name(), 2) {
				continue
			}
			ds, err := os.ReadDir(filepath.Join(dir, y.Name(), m.Name()))
			if err != nil {
				return nil, fmt.Errorf("archive: %w", err)
			}
			for _, d := range ds {
				if d.IsDir() && isNumber(d.Name(), 2) {
					days = append(days, filepath.Join(y.Name(), m.Name(), d.Name()))
				}
			}
		}
	}
	return days, nil // ReadDir sorts, and the names have fixed widths
}

func isNumber(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := range s {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// WalkDay visits the complete items of one dated directory (YYYY/MM/DD).
func (r *Reader) WalkDay(day string, fn WalkFunc, problem func(Problem)) error {
	if problem == nil {
		problem = func(Problem) {}
	}
	return r.walkDay(day, map[string]bool{}, fn, problem)
}

// walkDay visits the day's items in the dated tree, then those of the day in
// object storage; seen gets every ID visited.
func (r *Reader) walkDay(day string, seen map[string]bool, fn WalkFunc, problem func(Problem)) error {
	if err := r.walkLocalDay(day, seen, fn, problem); err != nil {
		return err
	}
	return r.walkRemoteDay(day, seen, fn, problem)
}

func (r *Reader) walkLocalDay(day string, seen map[string]bool, fn WalkFunc, problem func(Problem)) error {
	dir := filepath.Join(r.filed, day)
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("archive: %w", err)
	}
	names := map[string]bool{}
	for _, e := range ents {
		names[e.Name()] = true
	}
	for _, e := range ents {
		name := e.Name()
		stem, ext := strings.TrimSuffix(name, filepath.Ext(name)), filepath.Ext(name)
		pid, err := ParseID(stem)
		if err != nil || !e.Type().IsRegular() {
			continue // copies in progress (the filer's temporary names) and foreign files
		}
		switch ext {
		case ".json":
			if seen[stem] {
				continue
			}
			if !names[stem+".eml"] {
				problem(Problem{ID: stem, Path: filepath.Join(day, name), Err: ErrMissingMessage})
				continue
			}
			it := Item{ID: stem, Stamp: pid.Stamp, Dir: day,
				JSONPath: filepath.Join(dir, name), EMLPath: filepath.Join(dir, stem+".eml")}
			seen[stem] = true
			if err := fn(it); err != nil {
				return err
			}
		case ".eml":
			if names[stem+".json"] || seen[stem] {
				continue
			}
			// Filed .eml whose .json is still in the root (the filer
			// between its moves) is not damage.
			if _, err := os.Stat(filepath.Join(r.root, stem+".json")); err == nil {
				continue
			}
			if _, err := os.Stat(filepath.Join(dir, stem+".json")); err == nil {
				continue // the .json arrived during the walk
			}
			problem(Problem{ID: stem, Path: filepath.Join(day, name), Err: ErrOrphanMessage})
		}
	}
	return nil
}

// candidateDays are the dated directories an item with this stamp may be
// in: its UTC day, and the days before and after (filer --local-time dates
// by local time, at most a day away).
func candidateDays(stamp time.Time) []string {
	u := stamp.UTC()
	return []string{
		DatedDir(u, false),
		DatedDir(u.Add(-24*time.Hour), false),
		DatedDir(u.Add(24*time.Hour), false),
	}
}

// findFiledEML finds the .eml of an item whose .json is still in the root.
func (r *Reader) findFiledEML(id string, stamp time.Time) (string, bool) {
	for _, d := range candidateDays(stamp) {
		p := filepath.Join(r.filed, d, id+".eml")
		if _, err := os.Stat(p); err == nil {
			return p, true
		}
	}
	return "", false
}

// Locate finds the item with this ID, in the root or the dated tree. It
// returns ErrNotFound (wrapped) when there is no complete item, and
// ErrMissingMessage when its .json has no .eml.
func (r *Reader) Locate(id string) (Item, error) {
	pid, err := ParseID(id)
	if err != nil {
		return Item{}, fmt.Errorf("archive: %q is not an archive ID: %w", id, err)
	}
	it := Item{ID: id, Stamp: pid.Stamp}
	// Root first, then the tree; a filer moving the item in between makes
	// us miss it in both, so look twice.
	for range 2 {
		jp := filepath.Join(r.root, id+".json")
		if _, err := os.Stat(jp); err == nil {
			it.JSONPath = jp
			if ep := filepath.Join(r.root, id+".eml"); present(ep) {
				it.EMLPath = ep
				return it, nil
			}
			if ep, ok := r.findFiledEML(id, pid.Stamp); ok {
				it.EMLPath = ep
				return it, nil
			}
			if rit, ok := r.locateRemote(id, pid.Stamp); ok {
				return rit, nil
			}
			if present(jp) {
				return it, fmt.Errorf("archive: %s: %w", id, ErrMissingMessage)
			}
		}
		for _, d := range candidateDays(pid.Stamp) {
			jp := filepath.Join(r.filed, d, id+".json")
			if !present(jp) {
				continue
			}
			it.Dir, it.JSONPath = d, jp
			it.EMLPath = filepath.Join(r.filed, d, id+".eml")
			if !present(it.EMLPath) {
				return it, fmt.Errorf("archive: %s: %w", id, ErrMissingMessage)
			}
			return it, nil
		}
		if rit, ok := r.locateRemote(id, pid.Stamp); ok {
			return rit, nil
		}
	}
	return Item{}, fmt.Errorf("archive: %s: %w", id, ErrNotFound)
}

func present(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
