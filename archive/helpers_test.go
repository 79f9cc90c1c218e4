package archive

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// newTestStore opens a store in a fresh directory, with a fixed host name,
// a logger that says nothing, and small journal segments.
func newTestStore(t *testing.T) *Store {
	t.Helper()
	return newTestStoreOpt(t, Options{})
}

// newFileStore is newTestStore whose writers stream into tmp/ID.eml as the
// wrapper's do (after Reopen) and big messages do: the tests of the file
// protocol's steps use it.
func newFileStore(t *testing.T) *Store {
	t.Helper()
	return newTestStore(t)
}

// testSegment is the journal segment size of the tests' stores.
const testSegment = 1 << 20

// newTestStoreOpt is newTestStore with other options.
func newTestStoreOpt(t *testing.T, opt Options) *Store {
	t.Helper()
	opt.Host = "archive.test"
	opt.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if opt.JournalSegmentSize == 0 {
		opt.JournalSegmentSize = testSegment
	}
	s, err := Open(t.TempDir(), opt)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// names lists a directory, sorted.
func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ns []string
	for _, e := range ents {
		ns = append(ns, e.Name())
	}
	slices.Sort(ns)
	return ns
}

// rootNames lists the root without its tmp/.
func rootNames(t *testing.T, s *Store) []string {
	t.Helper()
	return slices.DeleteFunc(names(t, s.root), func(n string) bool { return n == "tmp" || n == journalDirName })
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func mustWrite(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, FileMode); err != nil {
		t.Fatal(err)
	}
}

// item is a committed item as a reader sees it.
type item struct {
	eml []byte
	env *Envelope
	raw map[string]any // the JSON as written, to check names and types
}

// readItem reads ROOT/ID.eml and ROOT/ID.json and checks what holds for
// every item: both files 0640, version 1, id equal to the stem, and size and
// sha256 matching the .eml.
func readItem(t *testing.T, s *Store, id string) item {
	t.Helper()
	var it item
	var err error
	if it.eml, err = os.ReadFile(s.Path(id, ".eml")); err != nil {
		t.Fatalf("item %s: %v", id, err)
	}
	b, err := os.ReadFile(s.Path(id, ".json"))
	if err != nil {
		t.Fatalf("item %s: %v", id, err)
	}
	if err := json.Unmarshal(b, &it.raw); err != nil {
		t.Fatalf("item %s: %s is not JSON: %v\n%s", id, id+".json", err, b)
	}
	if it.env, err = ReadEnvelope(s.Path(id, ".json")); err != nil {
		t.Fatal(err)
	}
	for _, ext := range []string{".eml", ".json"} {
		fi, err := os.Stat(s.Path(id, ext))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != FileMode {
			t.Errorf("%s%s has mode %v, want %v", id, ext, fi.Mode(), os.FileMode(FileMode))
		}
	}
	if v, ok := it.raw["version"].(float64); !ok || v != 1 {
		t.Errorf("%s.json: version = %v, want 1", id, it.raw["version"])
	}
	if it.env.ID != id {
		t.Errorf("%s.json: id = %q, want the stem %q", id, it.env.ID, id)
	}
	sum := sha256.Sum256(it.eml)
	if it.env.Message.Size != int64(len(it.eml)) {
		t.Errorf("%s.json: message.size = %d, the .eml has %d bytes", id, it.env.Message.Size, len(it.eml))
	}
	if it.env.Message.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("%s.json: message.sha256 = %s, the .eml hashes to %x", id, it.env.Message.SHA256, sum)
	}
	return it
}

// fault injection ---------------------------------------------------------

// faultFS wraps the real filesystem operations and fails the ones it is
// told to, by file extension (".eml", ".json") or, for directory fsyncs, by
// "tmp" or "root". Errors come wrapped the way the os package wraps them.
type faultFS struct {
	s           *Store
	createErr   map[string]error
	writeErr    map[string]error
	writeOK     map[string]int64 // bytes written before writeErr strikes
	syncErr     map[string]error
	closeErr    map[string]error
	renameErr   map[string]error // by the extension of the source
	syncDirErr  map[string]error
	afterCreate func(name string) // runs after a successful create

	// The journal's syscalls (set before the store writes).
	journalWriteErr, datasyncErr error

	mu      sync.Mutex
	created []string
	files   map[string]*faultFile
}

func newFaultFS(s *Store) *faultFS {
	ff := &faultFS{
		s:          s,
		createErr:  map[string]error{},
		writeErr:   map[string]error{},
		writeOK:    map[string]int64{},
		syncErr:    map[string]error{},
		closeErr:   map[string]error{},
		renameErr:  map[string]error{},
		syncDirErr: map[string]error{},
		files:      map[string]*faultFile{},
	}
	s.fs = fsys{create: ff.create, rename: ff.rename, remove: osFS.remove, syncDir: ff.syncDir}
	if j := s.journal; j != nil {
		realWrite, realSync := j.pwritev, j.datasync
		j.pwritev = func(f *os.File, bufs [][]byte, off int64) error {
			ff.mu.Lock()
			err := ff.journalWriteErr
			ff.mu.Unlock()
			if err != nil {
				return err
			}
			return realWrite(f, bufs, off)
		}
		j.datasync = func(f *os.File) error {
			ff.mu.Lock()
			err := ff.datasyncErr
			ff.mu.Unlock()
			if err != nil {
				return err
			}
			return realSync(f)
		}
	}
	return ff
}

// clear ends every fault.
func (ff *faultFS) clear() {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	for _, m := range []map[string]error{ff.createErr, ff.writeErr, ff.syncErr, ff.closeErr, ff.renameErr, ff.syncDirErr} {
		clear(m)
	}
	clear(ff.writeOK)
	ff.journalWriteErr, ff.datasyncErr = nil, nil
}

// faultExt is the extension a fault is keyed by: the scratch .json.new that
// replaces an ID.json counts as a .json.
func faultExt(name string) string {
	if strings.HasSuffix(name, scratchSuffix) {
		return ".json"
	}
	return filepath.Ext(name)
}

func (ff *faultFS) create(name string) (file, error) {
	ext := faultExt(name)
	ff.mu.Lock()
	ff.created = append(ff.created, name)
	ff.mu.Unlock()
	if err := ff.createErr[ext]; err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	f, err := osFS.create(name)
	if err != nil {
		return nil, err
	}
	if ff.afterCreate != nil {
		ff.afterCreate(name)
	}
	fault := &faultFile{File: f.(*os.File), writeErr: ff.writeErr[ext], budget: ff.writeOK[ext], syncErr: ff.syncErr[ext], closeErr: ff.closeErr[ext]}
	ff.mu.Lock()
	ff.files[name] = fault
	ff.mu.Unlock()
	return fault, nil
}

// lastCreated is the name of the last file the store tried to create.
func (ff *faultFS) lastCreated() string {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	if len(ff.created) == 0 {
		return ""
	}
	return ff.created[len(ff.created)-1]
}

func (ff *faultFS) file(name string) *faultFile {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	return ff.files[name]
}

func (ff *faultFS) rename(oldpath, newpath string) error {
	if err := ff.renameErr[faultExt(oldpath)]; err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	return osFS.rename(oldpath, newpath)
}

func (ff *faultFS) syncDir(dir string) error {
	key := "root"
	if dir == ff.s.tmp {
		key = "tmp"
	}
	if err := ff.syncDirErr[key]; err != nil {
		return &os.PathError{Op: "sync", Path: dir, Err: err}
	}
	return osFS.syncDir(dir)
}

// faultFile is a real file whose writes and fsyncs can fail, and which
// remembers whether bytes were written since its last successful fsync.
type faultFile struct {
	*os.File
	writeErr error
	budget   int64
	syncErr  error
	closeErr error

	mu     sync.Mutex
	dirty  bool // written since the last successful Sync
	syncs  int
	writes int
}

func (f *faultFile) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	if f.writeErr != nil && int64(len(p)) > f.budget {
		n, _ := f.File.Write(p[:f.budget])
		f.budget -= int64(n)
		f.dirty = f.dirty || n > 0
		return n, &os.PathError{Op: "write", Path: f.Name(), Err: f.writeErr}
	}
	n, err := f.File.Write(p)
	f.budget -= int64(n)
	f.dirty = f.dirty || n > 0
	return n, err
}

func (f *faultFile) Sync() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.syncErr != nil {
		return &os.PathError{Op: "sync", Path: f.Name(), Err: f.syncErr}
	}
	if err := f.File.Sync(); err != nil {
		return err
	}
	f.syncs++
	f.dirty = false
	return nil
}

func (f *faultFile) Close() error {
	err := f.File.Close()
	if f.closeErr != nil {
		return &os.PathError{Op: "close", Path: f.Name(), Err: f.closeErr}
	}
	return err
}

// setUmask sets the process umask for the rest of the test.
func setUmask(t *testing.T, mask int) {
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

// sha256Hex is the hex SHA-256 of b.
func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
