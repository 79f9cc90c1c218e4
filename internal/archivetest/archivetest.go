// Package archivetest has what tests of every hook point need to compare an
// archive with what Postfix delivered.
package archivetest

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/postfix-archive/mailarchive/archive"
)

// Item is a complete archive item.
type Item struct {
	Env *archive.Envelope
	EML []byte
}

// ReadItems returns the complete items (those with an ID.json) in an
// archive root.
func ReadItems(t testing.TB, dir string) []Item {
	t.Helper()
	js, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var out []Item
	for _, j := range js {
		env, err := archive.ReadEnvelope(j)
		if err != nil {
			t.Fatal(err)
		}
		eml, err := os.ReadFile(strings.TrimSuffix(j, ".json") + ".eml")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, Item{env, eml})
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
