// Package archivetest has what tests of every hook point need to compare an
// archive with what Postfix delivered.
package archivetest

import (
	"bytes"
	"io"
	"sync"
	"testing"

	"github.com/postfix-archive/mailarchive/archive"
)

// Item is a complete archive item.
type Item struct {
	Env *archive.Envelope
	EML []byte
}

// ReadItems returns the complete items of an archive root, in the root and
// in the dated tree, through the archive's read API. Damage (an envelope
// without its message, a filed message without its envelope) fails the test.
func ReadItems(t testing.TB, dir string) []Item {
	t.Helper()
	r, err := archive.OpenReader(dir, archive.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []Item
	err = r.Walk(func(it archive.Item) error {
		env, err := it.Envelope()
		if err != nil {
			return err
		}
		f, err := it.Open()
		if err != nil {
			return err
		}
		defer f.Close()
		eml, err := io.ReadAll(f)
		if err != nil {
			return err
		}
		out = append(out, Item{env, eml})
		return nil
	}, func(p archive.Problem) { t.Errorf("archive damaged: %v", p) })
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// StripTopReceived removes a delivered message's first header field, the
// Received: that Postfix's smtpd prepends, with its continuation lines.
func StripTopReceived(t testing.TB, msg []byte) []byte {
	t.Helper()
	if !bytes.HasPrefix(msg, []byte("Received: ")) {
		t.Fatalf("delivered message does not start with Received:\n%.300s", msg)
	}
	i := bytes.Index(msg, []byte("\r\n")) + 2
	for i < len(msg) && (msg[i] == ' ' || msg[i] == '\t') {
		i += bytes.Index(msg[i:], []byte("\r\n")) + 2
	}
	return msg[i:]
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers: a test's log
// sink.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
