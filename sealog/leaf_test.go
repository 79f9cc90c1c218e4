package sealog_test

import (
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/sealog"
)

const sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func TestLeafEncoding(t *testing.T) {
	id := "20261124T130501Z.k3v7q2m4x5a6b7cd.inbox"
	cases := []struct {
		leaf sealog.Leaf
		want string
	}{
		{sealog.Leaf{Kind: "item", ID: id, EMLSHA256: sha, EMLSize: 1234, JSONSHA256: sha},
			"mailarchive-leaf/1 item " + id + " " + sha + " 1234 " + sha + "\n"},
		{sealog.Leaf{Kind: "day", Day: "2026/11/24", ManifestSHA256: sha, Count: 7},
			"mailarchive-leaf/1 day 2026/11/24 " + sha + " 7\n"},
		{sealog.Leaf{Kind: "tombstone", ID: id, EMLSHA256: sha, JSONSHA256: sha, At: time.Date(2033, 1, 2, 3, 4, 5, 0, time.UTC), Reason: "retention 7y"},
			"mailarchive-leaf/1 tombstone " + id + " " + sha + " " + sha + " 2033-01-02T03:04:05Z retention%207y\n"},
	}
	for _, c := range cases {
		got, err := c.leaf.Encode()
		if err != nil || string(got) != c.want {
			t.Fatalf("Encode(%+v) = %q, %v; want %q", c.leaf, got, err, c.want)
		}
		back, err := sealog.ParseLeaf(got)
		if err != nil {
			t.Fatalf("ParseLeaf(%q): %v", got, err)
		}
		again, _ := back.Encode()
		if string(again) != c.want {
			t.Fatalf("round trip of %q gave %q", c.want, again)
		}
	}
	for _, bad := range []string{
		"", "mailarchive-leaf/1 item\n",
		"mailarchive-leaf/2 item " + id + " " + sha + " 1 " + sha + "\n",
		"mailarchive-leaf/1 item " + id + " " + sha + " 01 " + sha + "\n",                 // not canonical
		"mailarchive-leaf/1 item " + id + " " + strings.ToUpper(sha) + " 1 " + sha + "\n", // upper-case hex
		"mailarchive-leaf/1 item " + id + " " + sha + " 1 " + sha,                         // no newline
		"mailarchive-leaf/1 item " + id + "  " + sha + " 1 " + sha + "\n",                 // two spaces
		"mailarchive-leaf/1 item not-an-id " + sha + " 1 " + sha + "\n",
		"mailarchive-leaf/1 day 2026-11-24 " + sha + " 1\n",
	} {
		if _, err := sealog.ParseLeaf([]byte(bad)); err == nil {
			t.Errorf("ParseLeaf(%q) accepted", bad)
		}
	}
}

func FuzzParseLeaf(f *testing.F) {
	f.Add([]byte("mailarchive-leaf/1 item 20261124T130501Z.k3v7q2m4x5a6b7cd " + sha + " 12 " + sha + "\n"))
	f.Add([]byte("mailarchive-leaf/1 day 2026/11/24 " + sha + " 7\n"))
	f.Add([]byte("mailarchive-leaf/1 tombstone 20261124T130501Z.k3v7q2m4x5a6b7cd " + sha + " " + sha + " 2033-01-02T03:04:05Z x%20y\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := sealog.ParseLeaf(data)
		if err != nil {
			return
		}
		enc, err := l.Encode()
		if err != nil || string(enc) != string(data) {
			t.Fatalf("accepted %q but encodes it as %q (%v)", data, enc, err)
		}
	})
}

func FuzzParseCheckpoint(f *testing.F) {
	f.Add("archive.example/mail\n12\nn4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=\n")
	f.Add("o\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\next\n")
	f.Fuzz(func(t *testing.T, text string) {
		c, err := sealog.ParseCheckpoint(text)
		if err != nil {
			return
		}
		if !strings.HasPrefix(text, string(c.Body())) {
			t.Fatalf("parsed %q as %+v, which writes %q", text, c, c.Body())
		}
	})
}

func FuzzParseAuditEntry(f *testing.F) {
	e := sealog.AuditEntry{Name: "20261124T130501.000000000Z.abc", At: time.Unix(1, 5).UTC(), User: "alice via root",
		Action: "search", Query: "from:bob subject:\"x y\"", IDs: []string{"a", "b"}}
	f.Add([]byte(e.Encode()))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := sealog.ParseAuditEntry(data)
		if err != nil {
			return
		}
		if e.Encode() != string(data) {
			t.Fatalf("accepted %q but encodes it as %q", data, e.Encode())
		}
	})
}
