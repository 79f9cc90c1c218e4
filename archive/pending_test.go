package archive

import (
	"testing"
)

// After a power loss a reader can tell that the journal still holds the
// last moments' records (so damage may be the power loss's, not
// tampering); after the replay it cannot.
func TestPendingReplay(t *testing.T) {
	s := newTestStore(t)
	quietJournal(s)
	r, err := OpenReader(s.root, ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := r.PendingReplay(); err != nil || n != 0 {
		t.Fatalf("fresh archive: %d pending, %v", n, err)
	}
	for i := range 3 {
		w, _ := s.Create()
		w.Write(msgN(i))
		if err := w.Commit(&Envelope{Source: SourceMilter}); err != nil {
			t.Fatal(err)
		}
	}
	// This boot's records are the writers' and sweeps' business.
	if n, err := r.PendingReplay(); err != nil || n != 0 {
		t.Fatalf("this boot's records: %d pending, %v", n, err)
	}
	abandon(s)
	powerLoss(t, s.root)
	n, err := r.PendingReplay()
	if err != nil || n != 3 {
		t.Fatalf("after the power loss: %d pending, %v; want 3", n, err)
	}
	s2 := newTestStoreAt(t, s.root) // Open replays
	s2.Recover()
	if n, err := r.PendingReplay(); err != nil || n != 0 {
		t.Errorf("after the replay: %d pending, %v", n, err)
	}
}
