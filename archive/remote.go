package archive

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Items in object storage. The filer (filer --to s3://...) moves items into a
// bucket and leaves in the root two things a reader needs:
//
//	ROOT/.destination                where items go: the bucket's URL, endpoint, region
//	ROOT/remote/YYYY/MM/DD/ID.json   one record per item moved there: its keys,
//	                                 version IDs, checksum, lock, and its envelope
//
// The bucket holds the record of the item (ID.eml, ID.json); the remote/
// records are a cache of what the filer confirmed, so that listing and
// searching the archive needs no request to the server. Opening a message
// fetches it. The S3 client is not in this package (every archiver links
// it): package objstore registers it with RegisterRemote.

// DestinationFile is the root file that remembers the filer's destination.
const DestinationFile = ".destination"

// RemoteDir is the root directory of the remote records.
const RemoteDir = "remote"

// Destination is the content of ROOT/.destination.
type Destination struct {
	Version   int    `json:"version"`
	URL       string `json:"url"`                  // s3://BUCKET/PREFIX
	Endpoint  string `json:"endpoint,omitempty"`   // a self-hosted server's URL
	Region    string `json:"region,omitempty"`     // when not from the environment
	PathStyle bool   `json:"path_style,omitempty"` // path-style addressing
}

// ReadDestination reads ROOT/.destination; it returns nil, nil when the root
// has none (every item is local).
func ReadDestination(root string) (*Destination, error) {
	b, err := os.ReadFile(filepath.Join(root, DestinationFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	var d Destination
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("archive: decode %s: %w", DestinationFile, err)
	}
	if d.URL == "" {
		return nil, fmt.Errorf("archive: %s names no url", DestinationFile)
	}
	return &d, nil
}

// WriteDestination writes ROOT/.destination durably and atomically.
func WriteDestination(root string, d Destination) error {
	d.Version = Version
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(root, DestinationFile, append(b, '\n'))
}

// RemoteRecord is ROOT/remote/YYYY/MM/DD/ID.json: an item the filer moved
// into object storage and confirmed there (HeadObject: checksum, lock mode,
// retain-until).
type RemoteRecord struct {
	Version     int       `json:"version"`
	ID          string    `json:"id"`
	URL         string    `json:"url"` // s3://BUCKET/PREFIX it went to
	EMLKey      string    `json:"eml_key"`
	EMLVersion  string    `json:"eml_version,omitempty"`
	JSONKey     string    `json:"json_key"`
	JSONVersion string    `json:"json_version,omitempty"`
	Size        int64     `json:"size"`   // of the .eml
	SHA256      string    `json:"sha256"` // hex, of the .eml
	LockMode    string    `json:"lock_mode,omitempty"`
	RetainUntil time.Time `json:"retain_until,omitempty"`
	UploadedAt  time.Time `json:"uploaded_at"`
	// Envelope is the item's ID.json byte for byte (a JSON string, so the
	// bytes survive), JSONSHA256 their hex SHA-256.
	Envelope   string `json:"envelope"`
	JSONSHA256 string `json:"json_sha256"`
}

// RemoteRecordPath is the record's path relative to the root.
func RemoteRecordPath(id string, stamp time.Time) string {
	return filepath.Join(RemoteDir, DatedDir(stamp, false), id+".json")
}

// WriteRemoteRecord writes an item's record durably (file and directory
// fsynced) and atomically: a reader sees the whole record or none.
func WriteRemoteRecord(root string, rec *RemoteRecord) error {
	return WriteRemoteRecords(root, []*RemoteRecord{rec})
}

// WriteRemoteRecords writes a batch of records durably and atomically, with
// a few fsyncs for the whole batch instead of two per record: every record
// is written under a temporary name and fsynced (after the first, the
// filesystem's journal has most of the others' data already), then all are
// renamed into place, then each directory is fsynced once. On error, some
// records may be in place, each of them whole.
func WriteRemoteRecords(root string, recs []*RemoteRecord) error {
	type pending struct{ tmp, dst string }
	var todo []pending
	defer func() {
		for _, p := range todo {
			os.Remove(p.tmp)
		}
	}()
	dirs := map[string]bool{}
	for _, rec := range recs {
		pid, err := ParseID(rec.ID)
		if err != nil {
			return fmt.Errorf("archive: remote record: %w", err)
		}
		rec.Version = Version
		b, err := json.MarshalIndent(rec, "", "  ")
		if err != nil {
			return err
		}
		rel := RemoteRecordPath(rec.ID, pid.Stamp)
		dir := filepath.Join(root, filepath.Dir(rel))
		if !dirs[dir] {
			if err := mkdirSynced(root, filepath.Dir(rel)); err != nil {
				return fmt.Errorf("archive: remote record %s: %w", rec.ID, err)
			}
			dirs[dir] = true
		}
		tmp, err := writeTemp(dir, filepath.Base(rel), append(b, '\n'))
		if err != nil {
			return err
		}
		todo = append(todo, pending{tmp, filepath.Join(dir, filepath.Base(rel))})
	}
	for len(todo) > 0 {
		if err := os.Rename(todo[0].tmp, todo[0].dst); err != nil {
			return fmt.Errorf("archive: write %s: %w", filepath.Base(todo[0].dst), err)
		}
		todo = todo[1:]
	}
	for dir := range dirs {
		if err := SyncDir(dir); err != nil {
			return fmt.Errorf("archive: fsync %s: %w", dir, err)
		}
	}
	return nil
}

// ReadRemoteRecord reads the record of an item; fs.ErrNotExist (wrapped)
// when the item is not in object storage.
func ReadRemoteRecord(root, id string) (*RemoteRecord, error) {
	pid, err := ParseID(id)
	if err != nil {
		return nil, err
	}
	return readRemoteRecord(filepath.Join(root, RemoteRecordPath(id, pid.Stamp)))
}

func readRemoteRecord(path string) (*RemoteRecord, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	var rec RemoteRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("archive: decode %s: %w", path, err)
	}
	return &rec, nil
}

// RemoveRemoteRecord removes an item's record (its objects were disposed of).
func RemoveRemoteRecord(root, id string) error {
	pid, err := ParseID(id)
	if err != nil {
		return err
	}
	rel := RemoteRecordPath(id, pid.Stamp)
	if err := os.Remove(filepath.Join(root, rel)); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	return SyncDir(filepath.Join(root, filepath.Dir(rel)))
}

// ObjectReader reads objects of the bucket a root's items went to.
type ObjectReader interface {
	// GetObject opens one version of an object (versionID "" for the
	// latest).
	GetObject(ctx context.Context, key, versionID string) (io.ReadCloser, error)
}

var (
	remoteMu      sync.Mutex
	remoteOpeners = map[string]func(*Destination) (ObjectReader, error){}
)

// RegisterRemote makes a client for destination URLs of this scheme ("s3")
// available to readers. Package objstore registers "s3" when linked in.
func RegisterRemote(scheme string, open func(*Destination) (ObjectReader, error)) {
	remoteMu.Lock()
	defer remoteMu.Unlock()
	remoteOpeners[scheme] = open
}

// ErrNoRemoteClient says an item is in object storage but this program has
// no client for it linked in.
var ErrNoRemoteClient = errors.New("no client for the archive's object storage")

// objects returns the reader's object client, opening it on first use.
func (r *Reader) objects() (ObjectReader, error) {
	r.remoteOnce.Do(func() {
		if r.remote != nil {
			return
		}
		d, err := ReadDestination(r.root)
		if err != nil || d == nil {
			r.remoteErr = err
			if d == nil && err == nil {
				r.remoteErr = fmt.Errorf("archive: the root has remote records but no %s", DestinationFile)
			}
			return
		}
		scheme, _, _ := strings.Cut(d.URL, "://")
		remoteMu.Lock()
		open := remoteOpeners[scheme]
		remoteMu.Unlock()
		if open == nil {
			r.remoteErr = fmt.Errorf("archive: %s: %w", d.URL, ErrNoRemoteClient)
			return
		}
		r.remote, r.remoteErr = open(d)
	})
	return r.remote, r.remoteErr
}

// remoteItem makes an Item of a record.
func (r *Reader) remoteItem(rec *RemoteRecord, stamp time.Time, rel string) Item {
	return Item{ID: rec.ID, Stamp: stamp, Dir: filepath.Dir(rel), Remote: rec, r: r,
		JSONPath: rec.URL + "/" + strings.TrimPrefix(rec.JSONKey, keyPrefix(rec.URL)),
		EMLPath:  rec.URL + "/" + strings.TrimPrefix(rec.EMLKey, keyPrefix(rec.URL))}
}

// keyPrefix is the PREFIX/ of s3://BUCKET/PREFIX.
func keyPrefix(url string) string {
	_, rest, _ := strings.Cut(url, "://")
	_, prefix, ok := strings.Cut(rest, "/")
	if !ok || prefix == "" {
		return ""
	}
	return strings.TrimSuffix(prefix, "/") + "/"
}

// openRemote fetches a remote item's message into an unlinked temporary
// file (bounded memory, and callers get the *os.File they get for local
// items), checking size and SHA-256 against the record on the way.
func (it Item) openRemote() (*os.File, error) {
	objs, err := it.r.objects()
	if err != nil {
		return nil, err
	}
	body, err := objs.GetObject(context.Background(), it.Remote.EMLKey, it.Remote.EMLVersion)
	if err != nil {
		return nil, fmt.Errorf("archive: fetch %s.eml: %w", it.ID, err)
	}
	defer body.Close()
	f, err := os.CreateTemp("", "mailarchive-"+it.ID+"-*.eml")
	if err != nil {
		return nil, fmt.Errorf("archive: fetch %s.eml: %w", it.ID, err)
	}
	os.Remove(f.Name())
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), body)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err == nil && (n != it.Remote.Size || hex.EncodeToString(h.Sum(nil)) != it.Remote.SHA256) {
		err = fmt.Errorf("object %s has %d bytes with sha256 %x, the filer confirmed %d bytes with %s",
			it.Remote.EMLKey, n, h.Sum(nil), it.Remote.Size, it.Remote.SHA256)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("archive: fetch %s.eml: %w", it.ID, err)
	}
	return f, nil
}

// maxEnvelope bounds a fetched ID.json (envelopes are a few KiB; a milter
// item's macros can make them larger, never this large).
const maxEnvelope = 16 << 20

// ReadJSON returns the bytes of the item's ID.json as stored: read from the
// file, or, for an item in object storage, fetched (the record keeps the
// envelope decoded, not its bytes). The sealed log commits to these bytes.
func (it Item) ReadJSON() ([]byte, error) {
	if it.Remote == nil {
		b, err := os.ReadFile(it.JSONPath)
		if err != nil {
			return nil, fmt.Errorf("archive: read %s.json: %w", it.ID, unwrapPath(err))
		}
		return b, nil
	}
	objs, err := it.r.objects()
	if err != nil {
		return nil, err
	}
	body, err := objs.GetObject(context.Background(), it.Remote.JSONKey, it.Remote.JSONVersion)
	if err != nil {
		return nil, fmt.Errorf("archive: fetch %s.json: %w", it.ID, err)
	}
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, maxEnvelope))
	if err != nil {
		return nil, fmt.Errorf("archive: fetch %s.json: %w", it.ID, err)
	}
	return b, nil
}

// walkRemoteDay visits the remote records of one day not in seen.
func (r *Reader) walkRemoteDay(day string, seen map[string]bool, fn WalkFunc, problem func(Problem)) error {
	dir := filepath.Join(r.root, RemoteDir, day)
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("archive: %w", err)
	}
	for _, e := range ents {
		stem, ext := strings.TrimSuffix(e.Name(), ".json"), filepath.Ext(e.Name())
		pid, err := ParseID(stem)
		if err != nil || ext != ".json" || !e.Type().IsRegular() || seen[stem] {
			continue // temporary names of records being written
		}
		rel := filepath.Join(RemoteDir, day, e.Name())
		rec, err := readRemoteRecord(filepath.Join(r.root, rel))
		if err != nil {
			problem(Problem{ID: stem, Path: rel, Err: err})
			continue
		}
		if rec.ID != stem {
			problem(Problem{ID: stem, Path: rel, Err: fmt.Errorf("record names the item %q", rec.ID)})
			continue
		}
		if err := fn(r.remoteItem(rec, pid.Stamp, filepath.Join(day, e.Name()))); err != nil {
			return err
		}
	}
	return nil
}

// remoteDays lists the days of remote/, oldest first.
func (r *Reader) remoteDays() ([]string, error) {
	dir := filepath.Join(r.root, RemoteDir)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return listDays(dir)
}

// locateRemote finds the record of an item in object storage.
func (r *Reader) locateRemote(id string, stamp time.Time) (Item, bool) {
	rel := RemoteRecordPath(id, stamp)
	rec, err := readRemoteRecord(filepath.Join(r.root, rel))
	if err != nil || rec.ID != id {
		return Item{}, false
	}
	return r.remoteItem(rec, stamp, strings.TrimPrefix(rel, RemoteDir+string(filepath.Separator))), true
}

// mkdirSynced creates root/rel level by level (mode 0750), fsyncing the
// parent of every level it creates.
func mkdirSynced(root, rel string) error {
	p := root
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		parent := p
		p = filepath.Join(p, part)
		switch err := os.Mkdir(p, 0o750); {
		case err == nil:
			if err := SyncDir(parent); err != nil {
				return err
			}
		case errors.Is(err, fs.ErrExist):
		default:
			return err
		}
	}
	return nil
}

// WriteFileAtomic writes dir/name through a hidden temporary name
// (.NAME.*.part): write, fsync, rename, fsync dir. Mode 0640 like items.
// For the small files tools keep in the root (.destination, records, holds).
func WriteFileAtomic(dir, name string, b []byte) error {
	tmp, err := writeTemp(dir, name, b)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("archive: write %s: %w", name, err)
	}
	if err := SyncDir(dir); err != nil {
		return fmt.Errorf("archive: fsync after writing %s: %w", name, err)
	}
	return nil
}

// writeTemp writes b to a new hidden temporary file for dir/name, mode
// 0640, fsynced, and returns its path.
func writeTemp(dir, name string, b []byte) (string, error) {
	tmp, err := os.CreateTemp(dir, "."+name+".*.part")
	if err != nil {
		return "", fmt.Errorf("archive: write %s: %w", name, err)
	}
	fail := func(err error) (string, error) {
		tmp.Close()
		os.Remove(tmp.Name())
		return "", fmt.Errorf("archive: write %s: %w", name, err)
	}
	if err := tmp.Chmod(0o640); err != nil {
		return fail(err)
	}
	if _, err := tmp.Write(b); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("archive: write %s: %w", name, err)
	}
	return tmp.Name(), nil
}

// ToolLock is the lock file in the root that the tools changing the tree
// (filer, mailarchive retention apply) take, so they never run at once.
const ToolLock = ".filer.lock"

// TryLock takes an exclusive flock on ROOT/name without waiting; ok false
// when another process holds it. Tools that change the archive's tree
// (the filer, retention apply) share ROOT/.filer.lock.
func TryLock(root, name string) (unlock func(), ok bool, err error) {
	p := filepath.Join(root, name)
	l, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, false, fmt.Errorf("archive: lock: %w", err)
	}
	if err := syscall.Flock(int(l.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		l.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("archive: lock %s: %w", p, err)
	}
	return func() { l.Close() }, true, nil
}

// EnvelopeBytes is the item's ID.json byte for byte, wherever the item is.
// (Readers that hash or copy the envelope use it, not JSONPath, which is a
// URL for an item in object storage.)
// For an item in object storage it is the copy kept in the local record
// (checked against the recorded SHA-256, no request); ReadJSON fetches
// the object itself.
func (it Item) EnvelopeBytes() ([]byte, error) {
	if it.Remote == nil {
		return it.ReadJSON()
	}
	b := []byte(it.Remote.Envelope)
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != it.Remote.JSONSHA256 {
		return nil, fmt.Errorf("archive: the envelope in the remote record of %s does not have the SHA-256 recorded for it", it.ID)
	}
	return b, nil
}
