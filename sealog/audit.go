package sealog

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
)

// AuditPrefix starts every entry of the audit trail.
const AuditPrefix = "mailarchive-audit/1"

// AuditEntry is one access recorded in the audit trail: who did what, and
// the IDs it concerned.
type AuditEntry struct {
	Name   string    // unique name of the record (a record with many IDs spans entries with one name)
	At     time.Time // UTC
	User   string
	Action string // search, show, export, proof, hold, dispose, ...
	Query  string
	IDs    []string
}

// Encode writes the entry as one canonical line.
func (e AuditEntry) Encode() string {
	ids := "-"
	if len(e.IDs) > 0 {
		ids = strings.Join(e.IDs, ",")
	}
	q := "-"
	if e.Query != "" {
		q = archive.EncodeTag(e.Query)
	}
	return fmt.Sprintf("%s %s %s %s %s %s %s\n", AuditPrefix, e.Name, e.At.UTC().Format(time.RFC3339Nano),
		archive.EncodeTag(e.User), archive.EncodeTag(e.Action), q, ids)
}

// ParseAuditEntry decodes an entry.
func ParseAuditEntry(data []byte) (AuditEntry, error) {
	f := strings.Split(strings.TrimSuffix(string(data), "\n"), " ")
	if len(f) != 7 || f[0] != AuditPrefix || !strings.HasSuffix(string(data), "\n") {
		return AuditEntry{}, errors.New("sealog: not an audit entry")
	}
	var e AuditEntry
	var err error
	e.Name = f[1]
	if e.At, err = time.Parse(time.RFC3339Nano, f[2]); err != nil {
		return e, fmt.Errorf("sealog: audit entry: %w", err)
	}
	if e.User, err = archive.DecodeTag(f[3]); err != nil {
		return e, fmt.Errorf("sealog: audit entry: %w", err)
	}
	if e.Action, err = archive.DecodeTag(f[4]); err != nil {
		return e, fmt.Errorf("sealog: audit entry: %w", err)
	}
	if f[5] != "-" {
		if e.Query, err = archive.DecodeTag(f[5]); err != nil {
			return e, fmt.Errorf("sealog: audit entry: %w", err)
		}
	}
	if f[6] != "-" {
		e.IDs = strings.Split(f[6], ",")
	}
	if e.Encode() != string(data) {
		return e, fmt.Errorf("sealog: audit entry: %w", ErrNotCanonical)
	}
	return e, nil
}

var lowerB32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// maxAuditEntry keeps an entry well under the 65535 bytes an entry bundle
// allows; a record with more IDs spans several entries.
const maxAuditEntry = 60000

// maxAuditQuery bounds the query kept (it is %-encoded, up to 3 bytes a byte).
const maxAuditQuery = 4096

// RecordAudit writes an access record to ROOT/audit/pending/, durably;
// the next seal appends it to the signed audit trail. It needs no key, so
// any command that reads the archive can record; callers should refuse to
// show results they could not record.
func RecordAudit(root, user, action, query string, ids []string, now time.Time) error {
	dir, err := ensurePending(root)
	if err != nil {
		return err
	}
	var r [10]byte
	if _, err = rand.Read(r[:]); err != nil {
		return fmt.Errorf("sealog: audit: %w", err)
	}
	name := now.UTC().Format("20060102T150405.000000000Z") + "." + lowerB32.EncodeToString(r[:])
	if len(query) > maxAuditQuery {
		query = query[:maxAuditQuery] + "...(truncated)"
	}
	e := AuditEntry{Name: name, At: now, User: user, Action: action, Query: query}
	var text strings.Builder
	base := len(e.Encode())
	var chunk []string
	size := base
	for _, id := range ids {
		if len(chunk) > 0 && size+len(id)+1 > maxAuditEntry {
			e.IDs = chunk
			text.WriteString(e.Encode())
			chunk, size = nil, base
		}
		chunk = append(chunk, id)
		size += len(id) + 1
	}
	e.IDs = chunk
	text.WriteString(e.Encode())
	return writeAtomic(filepath.Join(dir, name+".entry"), []byte(text.String()), 0o640, true)
}

// ensurePending creates ROOT/audit/pending/ if it is missing. Readers in
// the archive group record their accesses there too: it is group-writable,
// setgid (records get the archive's group, so seal can read them) and
// sticky (nobody but the owner of the directory, the archive user when
// seal made it, removes another's records).
func ensurePending(root string) (string, error) {
	dir := filepath.Join(AuditDir(root), pendingDir)
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("sealog: audit: %w", err)
	}
	if err := os.Chmod(dir, 0o770|os.ModeSetgid|os.ModeSticky); err != nil {
		return "", fmt.Errorf("sealog: audit: %w", err)
	}
	return dir, nil
}

// sealingFile names the pending records being appended, so a seal that
// crashed after its commit does not append them twice.
const sealingFile = "sealing"

// sealAudit appends the pending audit records to the audit trail.
func sealAudit(o SealOptions) (int, error) {
	adir := AuditDir(o.Root)
	pdir := filepath.Join(adir, pendingDir)
	ents, err := os.ReadDir(pdir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("sealog: audit: %w", err)
	}
	lg, err := OpenLog(adir, AuditOrigin(o.Signer.Name()), o.Signer)
	if err != nil {
		return 0, err
	}
	defer lg.Close()
	if err := finishSealing(lg, pdir); err != nil {
		return 0, err
	}
	ents, _ = os.ReadDir(pdir)
	var names []string
	var entries [][]byte
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".entry") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(pdir, e.Name()))
		if err != nil {
			return 0, fmt.Errorf("sealog: audit: %w", err)
		}
		for _, ln := range strings.SplitAfter(string(data), "\n") {
			if ln == "" {
				continue
			}
			if _, err := ParseAuditEntry([]byte(ln)); err != nil {
				return 0, fmt.Errorf("sealog: audit: %s: %w", e.Name(), err)
			}
			entries = append(entries, []byte(ln))
		}
		names = append(names, e.Name())
	}
	if len(names) == 0 {
		return 0, nil
	}
	sort.Strings(names)
	mark := fmt.Sprintf("%d %d\n%s\n", lg.Size(), len(entries), strings.Join(names, "\n"))
	if err := writeAtomic(filepath.Join(adir, sealingFile), []byte(mark), 0o640, true); err != nil {
		return 0, err
	}
	if _, err := lg.Append(entries); err != nil {
		return 0, err
	}
	step("audit")
	return len(entries), finishSealing(lg, pdir)
}

// finishSealing completes or abandons a batch named in the sealing file:
// if the log grew by the batch, its pending files are removed; if not, the
// batch was not committed and is appended again.
func finishSealing(lg *Log, pdir string) error {
	p := filepath.Join(lg.dir, sealingFile)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sealog: audit: %w", err)
	}
	head, rest, _ := strings.Cut(string(data), "\n")
	var from, n int64
	if _, err := fmt.Sscanf(head, "%d %d", &from, &n); err == nil && lg.Size() >= from+n {
		for _, name := range strings.Fields(rest) {
			if err := os.Remove(filepath.Join(pdir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("sealog: audit: %w", err)
			}
		}
	}
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("sealog: audit: %w", err)
	}
	return nil
}

// ReadAudit lists the audit trail: the committed entries (at the trail's
// checkpoint) and, marked pending, those not sealed yet.
func ReadAudit(root string, since time.Time) (committed, pending []AuditEntry, err error) {
	adir := AuditDir(root)
	signed, err := os.ReadFile(filepath.Join(adir, checkpointFile))
	if err == nil {
		size, err := noteBodySize(signed)
		if err != nil {
			return nil, nil, fmt.Errorf("sealog: audit checkpoint: %w", err)
		}
		st := newStore(adir)
		for from := int64(0); from < size; from += 4096 {
			es, err := st.entries(size, from, min(from+4096, size))
			if err != nil {
				return nil, nil, err
			}
			for _, e := range es {
				ae, err := ParseAuditEntry(e)
				if err != nil {
					return nil, nil, err
				}
				if !ae.At.Before(since) {
					committed = append(committed, ae)
				}
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("sealog: %w", err)
	}
	ents, _ := os.ReadDir(filepath.Join(adir, pendingDir))
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".entry") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(adir, pendingDir, e.Name()))
		if err != nil {
			continue // sealed meanwhile
		}
		for _, ln := range strings.SplitAfter(string(data), "\n") {
			if ae, err := ParseAuditEntry([]byte(ln)); err == nil && !ae.At.Before(since) {
				pending = append(pending, ae)
			}
		}
	}
	return committed, pending, nil
}
