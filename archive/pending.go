package archive

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrNotReplayed says that the journal holds records written before the
// last reboot that no recovery has replayed yet: after a power loss the
// item files of those last moments may be cut short on disk, although the
// journal has their bytes. Until an archiver starts or the filer runs
// (both replay at Open/Recover), readers may see such items as damaged.
var ErrNotReplayed = errors.New("the journal holds records from before the last reboot that are not replayed yet " +
	"(start the archivers or run the filer, which repair items from it)")

// PendingReplay counts the journal records of an earlier boot that wait for
// replay (docs/archive-format.md, "The journal"). It reads the segments'
// headers and records, takes no lock and writes nothing, so a reader may
// call it to know whether damage it finds may be the aftermath of a power
// loss rather than tampering. A segment a live writer has just taken may be
// counted for a moment; that errs on the side of saying so.
func (r *Reader) PendingReplay() (int, error) {
	dir := filepath.Join(r.root, journalDirName)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("archive: read the journal: %w", unwrapPath(err))
	}
	boot := bootID()
	n := 0
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), segExt) || !e.Type().IsRegular() {
			continue
		}
		c, err := pendingIn(filepath.Join(dir, e.Name()), boot)
		if err != nil {
			return n, err
		}
		n += c
	}
	return n, nil
}

// pendingIn counts the current-generation records of one segment last
// written in another boot.
func pendingIn(path string, boot [16]byte) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil // checkpointed and removed meanwhile
		}
		return 0, fmt.Errorf("archive: read the journal: %w", unwrapPath(err))
	}
	defer f.Close()
	hdr, ok := readSegHeader(f)
	if !ok || hdr.boot == boot {
		return 0, nil // not a segment yet, or this boot's: its writer or a sweep handles it
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("archive: read the journal: %w", err)
	}
	recs, err := scanRecords(f, hdr, fi.Size()&^(recAlign-1), segHeaderSize)
	if err != nil {
		return 0, fmt.Errorf("archive: read the journal %s: %w", filepath.Base(path), err)
	}
	return len(recs), nil
}
