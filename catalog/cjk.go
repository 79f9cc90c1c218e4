package catalog

import (
	"strings"
	"unicode"
)

// SQLite's unicode61 tokenizer splits words at spaces and punctuation only,
// so a run of Chinese or Japanese text (written without spaces) becomes one
// token, and a search for a word inside it finds nothing. Both the indexed
// text and the search terms therefore go through splitCJK, which makes every
// Han, Hiragana, Katakana and Hangul character a token of its own; a term
// of several such characters then matches as a phrase of consecutive
// tokens, that is as a substring (notmuch/Xapian does much the same with
// n-grams).
func splitCJK(s string) string {
	if !hasCJK(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + len(s)/2)
	prevCJK, prevSpace := false, false
	for _, r := range s {
		c, sp := isCJK(r), unicode.IsSpace(r)
		if (c || prevCJK) && !sp && !prevSpace {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
		prevCJK, prevSpace = c, sp
	}
	return b.String()
}

func hasCJK(s string) bool {
	for _, r := range s {
		if r >= 0x1100 && isCJK(r) {
			return true
		}
	}
	return false
}

func isCJK(r rune) bool {
	return r >= 0x1100 && (unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana, unicode.Hangul))
}
