package archive

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// freshEmpty is how long an empty tmp/ID.eml is presumed to be in the short
// window between its creation and its writer taking the lock.
const freshEmpty = 10 * time.Second

// RecoverReport says what a recovery sweep did.
type RecoverReport struct {
	Recovered []string // IDs turned into items marked recovered
	Removed   []string // tmp files removed because they held no message bytes
	Busy      int      // items skipped because a live writer holds them
	Foreign   []string // names in tmp/ that are not ours, left alone
	Errors    []error
}

// Recover turns what crashed writers left under tmp/ into items marked
// "recovered": true. Message bytes are never deleted: a .eml becomes an item
// (with the envelope the writer had written, if it got that far, or a minimal
// one); only an empty .eml or a .json whose message is gone is removed.
// Items that a live writer (in any process) still holds are skipped, so
// Recover is safe to run at any time, concurrently with writers.
func (s *Store) Recover() RecoverReport {
	var rep RecoverReport
	// The journal first: records that crashed processes or an earlier boot
	// left put items back under tmp/; the segments of processes that
	// exited are checkpointed (one syncfs makes their items durable in
	// their own files).
	_, errs := s.replayJournal(true)
	rep.Errors = append(rep.Errors, errs...)
	if s.journal != nil {
		s.journal.flushOrphans() // closed items a full disk kept in the journal
	}
	s.sweep(&rep)
	for _, id := range rep.Recovered {
		s.log.Warn("recovered an item left by a crashed writer", "id", id)
	}
	for _, err := range rep.Errors {
		s.log.Error("recovery failed", "err", err)
	}
	// A sweep that found nothing is worth a line only when debugging.
	lvl := slog.LevelDebug
	if len(rep.Recovered) > 0 || len(rep.Removed) > 0 || len(rep.Foreign) > 0 || len(rep.Errors) > 0 {
		lvl = slog.LevelInfo
	}
	s.log.Log(context.Background(), lvl, "recovery sweep",
		"recovered", len(rep.Recovered), "removed", len(rep.Removed),
		"busy", rep.Busy, "foreign", len(rep.Foreign), "errors", len(rep.Errors))
	return rep
}

// sweep makes items of what writers left under tmp/.
func (s *Store) sweep(rep *RecoverReport) {
	ents, err := os.ReadDir(s.tmp)
	if err != nil {
		rep.Errors = append(rep.Errors, fmt.Errorf("archive: recover: %w", err))
		return
	}
	stems := map[string]bool{}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, probePrefix) && e.Type().IsRegular() {
			// A probe is removed by its writer at once; one that is
			// still here after a while was left by a crash.
			if fi, err := e.Info(); err == nil && s.now().Sub(fi.ModTime()) > freshEmpty {
				if os.Remove(filepath.Join(s.tmp, name)) == nil {
					rep.Removed = append(rep.Removed, name)
				}
			}
			continue
		}
		stem, ext := strings.TrimSuffix(name, filepath.Ext(name)), filepath.Ext(name)
		if strings.HasSuffix(name, scratchSuffix) {
			stem, ext = strings.TrimSuffix(name, scratchSuffix), ".json"
		}
		if _, err := ParseID(stem); err != nil || (ext != ".eml" && ext != ".json") || !e.Type().IsRegular() {
			rep.Foreign = append(rep.Foreign, name)
			continue
		}
		stems[stem] = true
	}
	for id := range stems {
		s.recoverOne(id, rep)
	}
}

// RecoverEvery runs Recover every interval until ctx is done. Long-running
// writers call it: besides crashes, a commit that fails after the MTA took
// the message leaves its bytes under tmp/ for the sweep.
func (s *Store) RecoverEvery(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Recover()
		}
	}
}

func (s *Store) recoverOne(id string, rep *RecoverReport) {
	tmpEML := filepath.Join(s.tmp, id+".eml")
	tmpJSON := filepath.Join(s.tmp, id+".json")
	emlPath := tmpEML
	if _, err := os.Lstat(tmpEML); errors.Is(err, os.ErrNotExist) {
		// The writer died between its two renames, or its .json is all
		// that is left.
		emlPath = s.Path(id, ".eml")
	}
	f, err := os.Open(emlPath)
	if errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(s.Path(id, ".json")); err == nil || emlPath == tmpEML {
			return // committed meanwhile, or our view is stale
		}
		// A .json with no message anywhere: nothing to recover.
		if err := os.Remove(tmpJSON); err == nil {
			rep.Removed = append(rep.Removed, id+".json")
		}
		if err := os.Remove(filepath.Join(s.tmp, id+scratchSuffix)); err == nil {
			rep.Removed = append(rep.Removed, id+scratchSuffix)
		}
		return
	}
	if err != nil {
		rep.Errors = append(rep.Errors, fmt.Errorf("archive: recover %s: %w", id, err))
		return
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		rep.Busy++ // a live writer holds it
		return
	}
	fi, err := f.Stat()
	if err != nil {
		rep.Errors = append(rep.Errors, fmt.Errorf("archive: recover %s: %w", id, err))
		return
	}
	// The writer may have committed or aborted between our open and our
	// lock: only a file still in place is a leftover.
	if cur, err := os.Stat(emlPath); err != nil || !os.SameFile(fi, cur) {
		return
	}
	if fi.Size() == 0 {
		if s.now().Sub(fi.ModTime()) < freshEmpty {
			rep.Busy++ // probably created a moment ago, not yet locked
			return
		}
		os.Remove(tmpJSON)
		if err := os.Remove(emlPath); err == nil {
			rep.Removed = append(rep.Removed, id+".eml")
		}
		return
	}
	// Between our ReadDir and the lock, a writer may have finished.
	if _, err := os.Stat(s.Path(id, ".json")); err == nil {
		return
	}
	env, err := s.recoveredEnvelope(id, f, tmpJSON)
	if err != nil {
		rep.Errors = append(rep.Errors, err)
		return
	}
	// Replace whatever .json the writer left with the rebuilt one, under a
	// scratch name first: if that write fails, the writer's stays, and
	// the message is never left in the root without one.
	if err := s.replaceJSON(tmpJSON, env); err != nil {
		rep.Errors = append(rep.Errors, fmt.Errorf("archive: recover %s: %w", id, err))
		return
	}
	if emlPath == tmpEML {
		if err := s.fs.rename(tmpEML, s.Path(id, ".eml")); err != nil {
			rep.Errors = append(rep.Errors, fmt.Errorf("archive: recover %s: %w", id, err))
			return
		}
	}
	if err := s.fs.rename(tmpJSON, s.Path(id, ".json")); err != nil {
		rep.Errors = append(rep.Errors, fmt.Errorf("archive: recover %s: %w", id, err))
		return
	}
	if err := s.fs.syncDir(s.root); err != nil {
		rep.Errors = append(rep.Errors, fmt.Errorf("archive: recover %s: fsync root: %w", id, err))
		return
	}
	rep.Recovered = append(rep.Recovered, id)
}

// recoveredEnvelope builds the envelope of a recovered item: the writer's own
// if it wrote a complete one, else what the ID and the message tell.
func (s *Store) recoveredEnvelope(id string, msg *os.File, tmpJSON string) (*Envelope, error) {
	env := &Envelope{}
	if b, err := os.ReadFile(tmpJSON); err == nil {
		if json.Unmarshal(b, env) != nil || env.ID != id {
			env = &Envelope{} // torn write: start over
		}
	}
	if env.ID == "" {
		if je := s.journalEnv(id); je != nil {
			env = je // the envelope of Prepare, kept in the journal
		}
	}
	if env.ID == "" {
		env.Outcome = OutcomeUnknown
		env.ArchivedAt = s.now().UTC()
		if pid, err := ParseID(id); err == nil && len(pid.Tags) > 0 {
			env.Tags = pid.Tags
		}
	}
	env.Version = Version
	env.ID = id
	env.Recovered = true
	if env.Host == "" {
		env.Host = s.host
	}
	h := sha256.New()
	var hdr headerCapture
	n, err := io.Copy(io.MultiWriter(h, writerFunc(func(p []byte) (int, error) {
		hdr.write(p)
		return len(p), nil
	})), bufio.NewReader(msg))
	if err != nil {
		return nil, fmt.Errorf("archive: recover %s: read message: %w", id, err)
	}
	env.Message = hdr.fields()
	env.Message.Size = n
	env.Message.SHA256 = hex.EncodeToString(h.Sum(nil))
	return env, nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
