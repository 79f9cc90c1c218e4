package filer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
)

func TestDatedDir(t *testing.T) {
	defer func(l *time.Location) { time.Local = l }(time.Local)
	time.Local = time.FixedZone("UTC+2", 2*3600)
	for _, tc := range []struct {
		stamp time.Time
		local bool
		want  string
	}{
		{time.Date(2026, 11, 24, 13, 5, 1, 0, time.UTC), false, "2026/11/24"},
		{time.Date(2026, 11, 24, 23, 30, 0, 0, time.UTC), false, "2026/11/24"},
		{time.Date(2026, 11, 24, 23, 30, 0, 0, time.UTC), true, "2026/11/25"},
		{time.Date(2026, 12, 31, 22, 0, 0, 0, time.UTC), true, "2027/01/01"},
		{time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), false, "2027/01/01"},
		{time.Date(2028, 2, 29, 12, 0, 0, 0, time.UTC), false, "2028/02/29"},
	} {
		id, _ := archive.NewID(tc.stamp, "a/b", "..")
		got, err := DatedDir(id, tc.local)
		if err != nil || got != tc.want {
			t.Errorf("%s local=%v: %q %v, want %q", id, tc.local, got, err, tc.want)
		}
	}
	if _, err := DatedDir("nope", false); err == nil {
		t.Error("DatedDir accepted a bad ID")
	}
}

func TestFileAll(t *testing.T) {
	root := t.TempDir()
	st, err := archive.Open(root, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i, day := range []int{1, 1, 2, 30} {
		st2 := *st
		_ = st2
		id := writeItem(t, root, time.Date(2026, 11, day, 12, 0, i, 0, time.UTC), "x", fmt.Sprint(i))
		want[id] = ""
	}
	for i := range 3 {
		msg := fmt.Sprintf("Subject: %d\r\n\r\nstored\r\n", i)
		want[storeItem(t, st, msg, "x", "../../etc")] = msg
	}
	// Left alone: an incomplete item, foreign files and directories, a
	// writer's tmp/ file.
	incomplete, _ := archive.NewID(t0)
	os.WriteFile(filepath.Join(root, incomplete+".eml"), []byte("half"), 0o640)
	os.WriteFile(filepath.Join(root, "README"), nil, 0o644)
	os.WriteFile(filepath.Join(root, "20261124T130501Z.short.json"), nil, 0o644)
	os.Mkdir(filepath.Join(root, "other"), 0o755)
	os.Symlink("/etc/passwd", filepath.Join(root, incomplete[:len(incomplete)-1]+"q.json"))
	w, err := st.Create("busy")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	w.Write([]byte("in progress"))

	var log strings.Builder
	rep, err := Run(Options{Root: root, Recover: true, Verbose: &log})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Filed != len(want) || rep.Incomplete != 1 || rep.Foreign != 4 || len(rep.Problems) != 0 || rep.Busy != 1 {
		t.Errorf("report %+v\n%s", rep, log.String())
	}
	checkFiled(t, root, "", want)
	for _, s := range []string{"incomplete " + incomplete, "foreign README", "foreign other/", "filed "} {
		if !strings.Contains(log.String(), s) {
			t.Errorf("verbose output lacks %q:\n%s", s, log.String())
		}
	}
	if _, err := os.Stat(filepath.Join(root, incomplete+".eml")); err != nil {
		t.Error("incomplete item touched")
	}
	// Idempotent.
	rep, err = Run(Options{Root: root, Recover: true})
	if err != nil || rep.Filed != 0 || len(rep.Problems) != 0 {
		t.Errorf("second run: %+v %v", rep, err)
	}
	checkFiled(t, root, "", want)
	// The writer finishes: its item is filed by the next run.
	want[w.ID()] = "in progress"
	if err := w.Commit(&archive.Envelope{Source: "wrapper"}); err != nil {
		t.Fatal(err)
	}
	if rep, err = Run(Options{Root: root}); err != nil || rep.Filed != 1 {
		t.Errorf("third run: %+v %v", rep, err)
	}
	checkFiled(t, root, "", want)
}

func TestOlderThan(t *testing.T) {
	root := t.TempDir()
	now := t0
	old := writeItem(t, root, now.Add(-2*time.Hour))
	young := writeItem(t, root, now.Add(-10*time.Minute))
	rep, err := Run(Options{Root: root, OlderThan: time.Hour, Now: func() time.Time { return now }})
	if err != nil || rep.Filed != 1 || rep.Recent != 1 {
		t.Fatalf("%+v %v", rep, err)
	}
	checkFiled(t, root, "", map[string]string{old: ""})
	if _, err := os.Stat(filepath.Join(root, young+".json")); err != nil {
		t.Error("young item moved")
	}
}

func TestLocalTime(t *testing.T) {
	defer func(l *time.Location) { time.Local = l }(time.Local)
	time.Local = time.FixedZone("UTC-5", -5*3600)
	root := t.TempDir()
	id := writeItem(t, root, time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC))
	if _, err := Run(Options{Root: root, LocalTime: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "2026", "11", "23", id+".json")); err != nil {
		t.Error(err)
	}
}

func TestDryRun(t *testing.T) {
	root := t.TempDir()
	writeItem(t, root, t0)
	writeItem(t, root, t0)
	before := tree(t, root)
	var log strings.Builder
	rep, err := Run(Options{Root: root, DryRun: true, Recover: true, Verbose: &log})
	if err != nil || rep.Filed != 2 {
		t.Fatalf("%+v %v", rep, err)
	}
	if after := tree(t, root); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Errorf("dry run changed %v into %v", before, after)
	}
	if !strings.Contains(log.String(), "would file") {
		t.Errorf("log %q", log.String())
	}
}

// A filer stopped between its two moves left the .eml at the destination and
// the .json at the source: the next run finishes the move.
func TestFinishAfterCrashBetweenMoves(t *testing.T) {
	root := t.TempDir()
	id := writeItem(t, root, t0)
	dir := filepath.Join(root, "2026", "11", "24")
	os.MkdirAll(dir, 0o750)
	if err := os.Rename(filepath.Join(root, id+".eml"), filepath.Join(dir, id+".eml")); err != nil {
		t.Fatal(err)
	}
	rep, err := Run(Options{Root: root})
	if err != nil || rep.Finished != 1 || len(rep.Problems) != 0 {
		t.Fatalf("%+v %v", rep, err)
	}
	checkFiled(t, root, "", map[string]string{id: ""})
}

// A .json with no .eml anywhere is a problem, left in place.
func TestOrphanJSON(t *testing.T) {
	root := t.TempDir()
	id := writeItem(t, root, t0)
	os.Remove(filepath.Join(root, id+".eml"))
	rep, err := Run(Options{Root: root})
	if err != nil || len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0].Error(), "without .eml") {
		t.Fatalf("%+v %v", rep, err)
	}
	if _, err := os.Stat(filepath.Join(root, id+".json")); err != nil {
		t.Error(err)
	}
}

func TestCollisions(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "2026", "11", "24")
	os.MkdirAll(dir, 0o750)

	// Identical item at the destination: the source copy goes.
	same := writeItem(t, root, t0)
	writeFiles(t, dir, same, "Subject: "+same+"\n\nbody\n")
	// Same .eml, no .json at the destination: the source's .json joins it.
	half := writeItem(t, root, t0)
	os.WriteFile(filepath.Join(dir, half+".eml"), []byte("Subject: "+half+"\n\nbody\n"), 0o640)
	// Different .eml: left in place, reported.
	diffEML := writeItem(t, root, t0)
	os.WriteFile(filepath.Join(dir, diffEML+".eml"), []byte("other"), 0o640)
	// Same .eml but different .json at the destination: left, reported.
	diffJSON := writeItem(t, root, t0)
	writeFiles(t, dir, diffJSON, "Subject: "+diffJSON+"\n\nbody\n")
	os.WriteFile(filepath.Join(dir, diffJSON+".json"), []byte("{}"), 0o640)
	// Only a different .json at the destination: the moved .eml comes back.
	onlyJSON := writeItem(t, root, t0)
	os.WriteFile(filepath.Join(dir, onlyJSON+".json"), []byte("{}"), 0o640)

	rep, err := Run(Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Deduplicated != 1 || rep.Finished != 1 || len(rep.Problems) != 3 {
		t.Errorf("report %+v", rep)
	}
	for _, p := range rep.Problems {
		if !strings.Contains(p.Error(), "different content") {
			t.Errorf("problem %v", p)
		}
	}
	for _, id := range []string{same, half} {
		for _, ext := range []string{".eml", ".json"} {
			if exists(filepath.Join(root, id+ext)) || !exists(filepath.Join(dir, id+ext)) {
				t.Errorf("%s%s not deduplicated", id, ext)
			}
		}
	}
	for _, id := range []string{diffEML, diffJSON, onlyJSON} {
		for _, ext := range []string{".eml", ".json"} {
			if !exists(filepath.Join(root, id+ext)) {
				t.Errorf("%s%s gone from the source", id, ext)
			}
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, diffEML+".eml")); string(b) != "other" {
		t.Error("destination overwritten")
	}
	if exists(filepath.Join(dir, onlyJSON+".eml")) {
		t.Error(".eml of a conflicting item left at the destination")
	}
}

// crossDevice makes every rename from root into dest fail with EXDEV, as
// between two filesystems.
func crossDevice(root, dest string) fsOps {
	ops := osOps
	ops.rename = func(o, n string) error {
		if strings.HasPrefix(o, root+"/") && strings.HasPrefix(n, dest+"/") {
			return &os.LinkError{Op: "rename", Old: o, New: n, Err: syscall.EXDEV}
		}
		return renameNoReplace(o, n)
	}
	return ops
}

func TestCrossDevice(t *testing.T) {
	root, dest := t.TempDir(), t.TempDir()
	want := map[string]string{}
	for i := range 5 {
		want[writeItem(t, root, t0.Add(time.Duration(i)*24*time.Hour))] = ""
	}
	private := firstKey(want)
	os.Chmod(filepath.Join(root, private+".eml"), 0o600)
	rep, err := run(Options{Root: root, Dest: dest}, crossDevice(root, dest))
	if err != nil || rep.Filed != 5 || len(rep.Problems) != 0 {
		t.Fatalf("%+v %v", rep, err)
	}
	checkFiled(t, root, dest, want)
	fi, err := os.Stat(filepath.Join(dest, datedRel(t, private), private+".eml"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("copy mode %v %v", fi, err)
	}
	for _, f := range tree(t, root) {
		if f != LockName {
			t.Errorf("left in the root: %s", f)
		}
	}
}

func firstKey(m map[string]string) string {
	for k := range m {
		return k
	}
	return ""
}

// errCrash stands for the process dying at an injected point.
var errCrash = errors.New("crash")

// crashAt wraps ops so that the n-th mutating operation (counting renames,
// removes and the copy's own steps) panics before it happens.
func crashAt(ops fsOps, n int) fsOps {
	count := 0
	tick := func() {
		count++
		if count == n {
			panic(errCrash)
		}
	}
	rename, remove := ops.rename, ops.remove
	ops.rename = func(o, nw string) error { tick(); return rename(o, nw) }
	ops.remove = func(p string) error { tick(); return remove(p) }
	return ops
}

func runCrashing(opt Options, ops fsOps) (crashed bool) {
	defer func() {
		if r := recover(); r != nil {
			if r != errCrash {
				panic(r)
			}
			crashed = true
		}
	}()
	run(opt, ops)
	return false
}

// A crash at any point loses nothing: after it, one more run leaves every
// item complete exactly once at its destination. Every crash point is tried,
// same filesystem and across filesystems, with collisions in the mix.
func TestCrashAnywhere(t *testing.T) {
	for _, cross := range []bool{false, true} {
		for n := 1; ; n++ {
			root := t.TempDir()
			dest := root
			if cross {
				dest = t.TempDir()
			}
			want := map[string]string{}
			for i := range 3 {
				want[writeItem(t, root, t0.Add(time.Duration(i)*time.Hour))] = ""
			}
			// One already at the destination, identical.
			dup := writeItem(t, root, t0)
			want[dup] = ""
			d := filepath.Join(dest, "2026", "11", "24")
			os.MkdirAll(d, 0o750)
			writeFiles(t, d, dup, "Subject: "+dup+"\n\nbody\n")

			ops := osOps
			if cross {
				ops = crossDevice(root, dest)
			}
			opt := Options{Root: root, Dest: dest}
			crashed := runCrashing(opt, crashAt(ops, n))
			rep, err := run(opt, ops)
			if err != nil || len(rep.Problems) != 0 {
				t.Fatalf("cross=%v crash at %d: after the crash: %+v %v", cross, n, rep, err)
			}
			checkFiled(t, root, dest, want)
			if t.Failed() {
				t.Fatalf("cross=%v crash at step %d", cross, n)
			}
			if !crashed {
				t.Logf("cross=%v: %d crash points tried", cross, n-1)
				break
			}
		}
	}
}

// Filers running at once, while writers write: every item ends up filed
// exactly once and complete; a filer that finds the lock taken does nothing.
func TestConcurrentFilers(t *testing.T) {
	root := t.TempDir()
	st, err := archive.Open(root, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	want := map[string]string{}
	for i := range 200 {
		want[writeItem(t, root, t0.Add(time.Duration(i)*time.Minute))] = ""
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				msg := fmt.Sprintf("writer %d message %d", w, i)
				id := storeItem(t, st, msg, "w")
				mu.Lock()
				want[id] = msg
				mu.Unlock()
			}
		}()
	}
	var fw sync.WaitGroup
	var locked, filed int
	var fmu sync.Mutex
	for range 4 {
		fw.Add(1)
		go func() {
			defer fw.Done()
			for range 5 {
				rep, err := Run(Options{Root: root, Recover: true})
				fmu.Lock()
				switch {
				case errors.Is(err, ErrLocked):
					locked++
				case err != nil || len(rep.Problems) > 0:
					t.Errorf("%+v %v", rep, err)
				default:
					filed += rep.Filed
				}
				fmu.Unlock()
			}
		}()
	}
	fw.Wait()
	close(stop)
	wg.Wait()
	rep, err := Run(Options{Root: root, Recover: true})
	if err != nil || len(rep.Problems) > 0 {
		t.Fatalf("%+v %v", rep, err)
	}
	filed += rep.Filed
	if filed != len(want) {
		t.Errorf("filed %d, want %d", filed, len(want))
	}
	checkFiled(t, root, "", want)
	t.Logf("%d items, %d runs found the lock taken", len(want), locked)
}

func TestLocked(t *testing.T) {
	root := t.TempDir()
	unlock, err := lock(root)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := Run(Options{Root: root}); !errors.Is(err, ErrLocked) {
		t.Errorf("err %v, want ErrLocked", err)
	}
}

func TestRecoverFirst(t *testing.T) {
	root := t.TempDir()
	st, _ := archive.Open(root, archive.Options{})
	w, err := st.Create("crashed")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: lost?\n\nno\n"))
	w.Sync()
	w.Close() // the writer dies: its bytes stay in tmp/

	rep, err := Run(Options{Root: root, Recover: false})
	if err != nil || rep.Recovered != 0 || rep.Filed != 0 {
		t.Fatalf("%+v %v", rep, err)
	}
	rep, err = Run(Options{Root: root, Recover: true})
	if err != nil || rep.Recovered != 1 || rep.Filed != 1 {
		t.Fatalf("%+v %v", rep, err)
	}
	checkFiled(t, root, "", map[string]string{w.ID(): "Subject: lost?\n\nno\n"})
	env, _ := archive.ReadEnvelope(filepath.Join(root, datedRel(t, w.ID()), w.ID()+".json"))
	if env == nil || !env.Recovered {
		t.Errorf("envelope %+v", env)
	}
}
