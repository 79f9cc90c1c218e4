package mimetext

import (
	"html"
	"strings"
)

// HTMLText reduces HTML to its text: tags dropped, the content of script,
// style and head elements dropped, block elements and <br> made line
// breaks, entities decoded. It is for searching and reading, not
// rendering, and never fails: broken markup yields the text around it.
func HTMLText(s string) string {
	var sb strings.Builder
	i := 0
	for i < len(s) {
		lt := strings.IndexByte(s[i:], '<')
		if lt < 0 {
			sb.WriteString(html.UnescapeString(s[i:]))
			break
		}
		sb.WriteString(html.UnescapeString(s[i : i+lt]))
		i += lt
		if strings.HasPrefix(s[i:], "<!--") {
			end := strings.Index(s[i+4:], "-->")
			if end < 0 {
				break
			}
			i += 4 + end + 3
			continue
		}
		gt := strings.IndexByte(s[i:], '>')
		if gt < 0 {
			break // an unterminated tag: nothing after it is text
		}
		tag := s[i+1 : i+gt]
		i += gt + 1
		name := strings.ToLower(tagName(tag))
		switch name {
		case "script", "style", "head", "title":
			// Skip to the matching end tag; <title> duplicates the subject.
			end := strings.Index(strings.ToLower(s[i:]), "</"+name)
			if end < 0 {
				i = len(s)
				continue
			}
			i += end
		case "br", "p", "/p", "div", "/div", "tr", "/tr", "li", "h1", "h2", "h3", "h4", "h5", "h6",
			"/h1", "/h2", "/h3", "/h4", "/h5", "/h6", "table", "/table", "blockquote", "/blockquote", "hr":
			sb.WriteByte('\n')
		case "td", "th":
			sb.WriteByte(' ')
		}
	}
	return collapse(sb.String())
}

func tagName(tag string) string {
	end := strings.IndexAny(tag, " \t\r\n/>")
	if strings.HasPrefix(tag, "/") {
		if e := strings.IndexAny(tag[1:], " \t\r\n>"); e >= 0 {
			return tag[:e+1]
		}
		return tag
	}
	if end < 0 {
		return tag
	}
	return tag[:end]
}

// collapse trims each line's spaces and drops runs of empty lines.
func collapse(s string) string {
	lines := strings.Split(s, "\n")
	out := lines[:0]
	blank := true
	for _, l := range lines {
		l = strings.Join(strings.Fields(strings.ReplaceAll(l, "\u00a0", " ")), " ")
		if l == "" {
			if !blank {
				out = append(out, "")
			}
			blank = true
			continue
		}
		out = append(out, l)
		blank = false
	}
	return strings.TrimSpace(strings.Join(out, "\n"))
}
