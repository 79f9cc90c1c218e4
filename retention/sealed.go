package retention

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/audit"
	"github.com/postfix-archive/mailarchive/sealog"
)

// Sealed records retention events where verify looks: a disposal appends
// a tombstone leaf to the sealed log (so that the item's absence is
// accounted for; Apply records before it removes anything), and every
// event an entry in the audit trail. Next, if set, records it too (the
// JSON Lines file).
type Sealed struct {
	Root   string
	Signer *sealog.Signer // needed for disposals once the archive has a log
	Next   Recorder
}

var _ Recorder = Sealed{}

// ErrNeedSigner says a disposal cannot be tombstoned without the key.
var ErrNeedSigner = errors.New("the archive has a sealed log: disposals need --signer so they are tombstoned (else verify reports them removed)")

// HasLog reports whether root has a sealed log.
func HasLog(root string) bool {
	_, err := os.Stat(filepath.Join(sealog.LogDir(root), "checkpoint"))
	return err == nil
}

// Record records one event.
func (s Sealed) Record(ev Event) error {
	var ids []string
	query := ev.Query
	if ev.Matter != "" {
		query = "matter:" + ev.Matter + " " + query
	}
	if ev.Event == "dispose" {
		ids, query = []string{ev.ID}, "rule:"+ev.Rule
		switch {
		case s.Signer != nil:
			rd, err := archive.OpenReader(s.Root, archive.ReaderOptions{})
			if err != nil {
				return err
			}
			if _, err := sealog.AppendTombstones(s.Root, rd, s.Signer, []sealog.Tombstone{{ID: ev.ID, Reason: ev.Rule, At: ev.At}}); err != nil {
				return fmt.Errorf("retention: tombstone: %w", err)
			}
		case HasLog(s.Root):
			return ErrNeedSigner
		}
	}
	if s.Next != nil {
		if err := s.Next.Record(ev); err != nil {
			return err
		}
	}
	return audit.Record(s.Root, ev.Event, query, ids)
}
