package sealog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(ManifestHeader + "\nday 2026/11/24\nprev -\nitems 1\n20261124T090000Z.aaaaaaaaaaaaaaaa 3\n"))
	f.Add([]byte(ManifestHeader + "\nday 2026/11/25\nprev 2026/11/24 " + strings.Repeat("a", 64) + "\nitems 0\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseManifest(data)
		if err != nil {
			return
		}
		if !strings.HasPrefix(string(data), ManifestHeader+"\nday "+m.day+"\nprev "+m.prev+"\n") {
			t.Fatalf("parsed %q as day %q prev %q", data, m.day, m.prev)
		}
	})
}

// FuzzReadCache: whatever the cache file holds, reading it either yields
// a state no larger than the log or gives up (and the state is rebuilt).
func FuzzReadCache(f *testing.F) {
	f.Add([]byte(idsHeader+"i 0 20261124T090000Z.aaaaaaaaaaaaaaaa\nd 1 2026/11/24 "+strings.Repeat("b", 64)+"\nsize 2\n"), int64(5))
	f.Add([]byte(idsHeader+"i 0 x\nsize 1\ni 1 y\n"), int64(2))
	f.Fuzz(func(t *testing.T, data []byte, logSize int64) {
		if logSize < 0 {
			logSize = -(logSize + 1)
		}
		p := filepath.Join(t.TempDir(), idsFile)
		os.WriteFile(p, data, 0o640)
		s := readCache(p, logSize)
		if s == nil {
			return
		}
		if s.size > logSize || s.size < 0 {
			t.Fatalf("cache covers %d entries of a log of %d", s.size, logSize)
		}
		for id, idx := range s.items {
			if idx >= s.size {
				t.Fatalf("item %s at %d beyond the covered %d", id, idx, s.size)
			}
		}
	})
}
