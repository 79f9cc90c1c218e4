package archive

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Writer is one item being written. Every hook point streams a message
// through it and ends it with exactly one of Commit, Abort or Close; after
// Commit the other two do nothing. A Writer is used by one goroutine.
type Writer interface {
	// ID is the item's ID, fixed when the writer was created.
	ID() string
	// Write appends message bytes. A failure is sticky: every later
	// Write, Sync, Prepare and Commit returns the same error.
	io.Writer
	// Size is the number of message bytes written so far.
	Size() int64
	// Err is the first write error, if any.
	Err() error
	// Sync makes the message bytes written so far durable.
	Sync() error
	// Prepare makes the message bytes and a provisional envelope durable,
	// so that if the commit never happens (a crash, a failed commit after
	// the MTA took the message) recovery keeps that envelope: the hook
	// point calls it once it knows everything but the MTA's final answer.
	Prepare(env *Envelope) error
	// Commit completes the item with its final envelope: afterwards it is
	// visible to readers. On error nothing is visible as an item.
	Commit(env *Envelope) error
	// Abort removes everything this writer created.
	Abort() error
	// Close ends the writer leaving what it wrote for recovery.
	Close() error
	// Reopen opens the message bytes written so far for reading, as one
	// file that stays valid after Commit (the wrapper hands it on).
	Reopen() (*os.File, error)
}

// Archive is what hook points write to: a new item, and whether one could
// be written now.
type Archive interface {
	Create(tags ...string) (Writer, error)
	// Probe reports whether an item could be written now (for /healthz):
	// it writes and removes a probe that no reader or sweep takes for an
	// item.
	Probe() error
}

var (
	_ Archive = (*Store)(nil)
	_ Writer  = (*fileWriter)(nil)
)

// Probe creates a probe file in tmp/ (O_EXCL, mode 0600), writes a byte,
// and removes it. Its name, ".probe-PID-RANDOM", is no archive ID, so a
// sweep never takes a probe left by a crash for a message; the next Recover
// removes such leftovers.
func (s *Store) Probe() error {
	var rnd [6]byte
	rand.Read(rnd[:])
	p := filepath.Join(s.tmp, fmt.Sprintf("%s%d-%s", probePrefix, os.Getpid(), hex.EncodeToString(rnd[:])))
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("archive not writable: create tmp/%s: %w", filepath.Base(p), unwrapPath(err))
	}
	_, werr := f.Write([]byte{'\n'})
	cerr := f.Close()
	rerr := os.Remove(p)
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("archive not writable: write tmp/%s: %w", filepath.Base(p), unwrapPath(err))
	}
	if rerr != nil {
		return fmt.Errorf("archive: cannot remove probe tmp/%s: %w", filepath.Base(p), unwrapPath(rerr))
	}
	return nil
}

// probePrefix starts the name of Probe's files in tmp/.
const probePrefix = ".probe-"

// Policy says what a hook point does with a message it cannot archive.
type Policy int

const (
	// PolicyTempfail refuses the message with a temporary error (SMTP
	// 451 4.3.0, exit 75): the MTA keeps it queued and retries, so nothing
	// passes unarchived.
	PolicyTempfail Policy = iota
	// PolicyPass lets the message through unarchived and logs an error.
	PolicyPass
)

// ParsePolicy parses an --on-archive-error value: "tempfail", or "pass"
// (also spelled "accept", the milter's historical name).
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "tempfail":
		return PolicyTempfail, nil
	case "pass", "accept":
		return PolicyPass, nil
	}
	return 0, fmt.Errorf("unknown policy %q (want tempfail or pass)", s)
}

func (p Policy) String() string {
	if p == PolicyPass {
		return "pass"
	}
	return "tempfail"
}
