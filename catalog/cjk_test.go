package catalog

import (
	"strings"
	"testing"

	"github.com/postfix-archive/mailarchive/archive"
)

func TestSplitCJK(t *testing.T) {
	for in, want := range map[string]string{
		"plain words":   "plain words",
		"東京からこんにちは":     " 東 京 か ら こ ん に ち は",
		"Tokyo東京office": "Tokyo 東 京 office",
		"서울 meeting":    " 서 울 meeting",
		"résumé":        "résumé",
		"":              "",
		"カタカナ and ひらがな": " カ タ カ ナ and ひ ら が な",
	} {
		if got := splitCJK(in); got != want {
			t.Errorf("splitCJK(%q) = %q, want %q", in, got, want)
		}
	}
}

// A word inside a run of Chinese or Japanese text (written without spaces)
// is found, as notmuch finds it; the characters must be consecutive.
func TestSearchCJK(t *testing.T) {
	f := newFixture(t)
	f.put("jp", day(3), archive.Envelope{Source: "proxy", Outcome: "accepted", MailFrom: &archive.MailFrom{Addr: "a@example.jp"}},
		"From: a@example.jp\r\nSubject: =?UTF-8?B?5p2x5Lqs44Gu5Lya6K2w?=\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n東京からこんにちは。来週の会議について\r\n")
	f.put("ko", day(4), archive.Envelope{Source: "proxy", Outcome: "accepted", MailFrom: &archive.MailFrom{Addr: "b@example.kr"}},
		"From: b@example.kr\r\nSubject: hello\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n서울에서 회의\r\n")
	f.update(UpdateOptions{})
	for q, want := range map[string]string{
		"東京":         "jp",
		"こんにちは":      "jp",
		"会議":         "jp",
		"subject:会議": "jp",
		"京東":         "",
		`"東京から"`:     "jp",
		"서울":         "ko",
		"회의":         "ko",
		"東京 OR 서울":   "jp ko",
	} {
		if got := strings.Join(f.search(q), " "); got != want {
			t.Errorf("search %q = [%s], want [%s]", q, got, want)
		}
	}
}
