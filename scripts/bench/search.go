package main

import (
	"bytes"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/postfix-archive/mailarchive/internal/archivetest"
	"github.com/postfix-archive/mailarchive/internal/mailgen"
)

// searchN is how many messages the search section indexes (scaled by
// -scale like every count).
var searchN = flag.Int("search-n", 100000, "messages the search section indexes (then multiplied by -scale)")

// measured runs a command to completion and returns its wall time, its
// peak RSS and its standard output.
func measured(env []string, prog string, args ...string) (time.Duration, int64, []byte, error) {
	c := exec.Command(prog, args...)
	if env != nil {
		c.Env = env
	}
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	t0 := time.Now()
	err := c.Run()
	d := time.Since(t0)
	var rss int64
	if c.ProcessState != nil {
		if ru, ok := c.ProcessState.SysUsage().(*syscall.Rusage); ok {
			rss = ru.Maxrss << 10 // KiB on Linux
		}
	}
	if err != nil {
		// search exits 1 when it finds nothing; notmuch does not: both fine.
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			return d, rss, out.Bytes(), fmt.Errorf("%s %s: %v\n%s", prog, strings.Join(args, " "), err, tailStr(errb.String(), 2000))
		}
	}
	return d, rss, out.Bytes(), nil
}

// searchCost: mailarchive index and search against notmuch new and
// notmuch search over the same messages (the archive's .eml files, hard
// linked into a Maildir), and against grep -rl for a body word.
func (b *bench) searchCost() error {
	mbin := filepath.Join(b.bin, "mailarchive")
	if _, err := os.Stat(mbin); err != nil {
		b.add(row{what: "search", setup: "not measured yet: bin/mailarchive missing", target: "≥ 1.0 × notmuch"})
		return nil
	}
	nm, err := exec.LookPath("notmuch")
	if err != nil {
		b.add(row{what: "search", setup: "not measured: notmuch missing (apt-get install notmuch)", target: "≥ 1.0 × notmuch"})
		return nil
	}
	n := b.n(*searchN, 500)
	root := filepath.Join(b.work, "search-archive")
	maildir := filepath.Join(b.work, "search-maildir")
	for _, d := range []string{filepath.Join(root, "tmp"), filepath.Join(maildir, "cur"), filepath.Join(maildir, "new"), filepath.Join(maildir, "tmp")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return err
		}
	}
	defer os.RemoveAll(root)
	defer os.RemoveAll(maildir)

	log.Printf("search: writing %d messages", n)
	g := mailgen.New(1, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), 30*24*time.Hour/time.Duration(n))
	var sample []mailgen.Msg
	var bytesTotal int64
	var withAtt mailgen.Msg
	for i := 0; i < n; i++ {
		m := g.Next()
		id, err := archivetest.PutItem(root, m.Stamp, m.Env, m.Bytes)
		if err != nil {
			return err
		}
		if err := os.Link(filepath.Join(root, id+".eml"), filepath.Join(maildir, "cur", id+":2,")); err != nil {
			return err
		}
		bytesTotal += int64(len(m.Bytes))
		if i%(n/20+1) == 7 {
			sample = append(sample, m)
		}
		if withAtt.Attachment == "" && m.Attachment != "" && i > n/2 {
			withAtt = m
		}
	}
	// File them as the filer does (the hard links in the Maildir follow).
	if _, err := timed(filepath.Join(b.bin, "filer"), "-q", root); err != nil {
		return err
	}
	cfg := filepath.Join(b.work, "notmuch-config")
	os.WriteFile(cfg, []byte("[database]\npath="+maildir+"\n[user]\nname=Bench\nprimary_email=bench@example.org\n"+
		"[new]\ntags=\nignore=\n[search]\nexclude_tags=\n[maildir]\nsynchronize_flags=false\n"), 0o644)
	nmEnv := append(os.Environ(), "NOTMUCH_CONFIG="+cfg, "TZ=UTC")
	maEnv := append(os.Environ(), "TZ=UTC")

	// Indexing: the whole corpus from nothing, alternately. notmuch new
	// takes most of an hour for 100,000 messages here: one round then.
	var tOurs, tTheirs []time.Duration
	var rssOurs, rssTheirs int64
	indexRounds := b.rounds
	if n >= 50000 {
		indexRounds = 1
	}
	for round := 0; round < indexRounds; round++ {
		os.RemoveAll(filepath.Join(root, "index"))
		os.RemoveAll(filepath.Join(maildir, ".notmuch"))
		exec.Command("sync").Run()
		runs := []func() error{
			func() error {
				d, rss, _, err := measured(maEnv, mbin, "index", "-q", "-d", root)
				tOurs, rssOurs = append(tOurs, d), max(rssOurs, rss)
				log.Printf("search round %d: mailarchive index %v, %s", round, d.Round(time.Millisecond), mib(rss))
				return err
			},
			func() error {
				d, rss, _, err := measured(nmEnv, nm, "new", "--quiet")
				tTheirs, rssTheirs = append(tTheirs, d), max(rssTheirs, rss)
				log.Printf("search round %d: notmuch new %v, %s", round, d.Round(time.Millisecond), mib(rss))
				return err
			},
		}
		for k := range runs {
			if err := runs[(k+round)%2](); err != nil {
				return err
			}
		}
	}
	what := fmt.Sprintf("indexing %d messages (%s, 2–50 KiB, multipart, attachments, encoded headers)", n, mib(bytesTotal))
	rO, rT := float64(n)/medianDur(tOurs).Seconds(), float64(n)/medianDur(tTheirs).Seconds()
	b.add(row{what: what, setup: "notmuch new", figure: fmt.Sprintf("%.0f msg/s, peak RSS %s", rT, mib(rssTheirs))})
	b.add(row{what: what, setup: "mailarchive index", figure: fmt.Sprintf("%.0f msg/s, peak RSS %s", rO, mib(rssOurs)),
		ratio: fmt.Sprintf("%.2f × notmuch", rO/rT), target: "≥ 1.0 × notmuch, RSS < 256 MiB",
		verdict: verdict(rO/rT >= 1 && rssOurs < 256<<20)})

	// Queries: ten kinds, each the same question to both (for the Bcc
	// recipient notmuch, which cannot see the envelope, gets the nearest
	// one it can answer: a header recipient).
	m, m2 := sample[1], sample[len(sample)-2]
	rare := g.Rarest(m.Body)
	day := m.Stamp.Format("2006-01-02")
	kinds := []struct{ name, ours, theirs string }{
		{"sender", "from:" + m.From, "from:" + m.From},
		{"Bcc recipient", "rcpt:" + mailgen.BccAddr(3), "to:" + m.To[0]},
		{"subject word", "subject:" + m.Subject[0], "subject:" + m.Subject[0]},
		{"body word (rare)", "body:" + rare, "body:" + rare},
		{"free word (common)", g.Words[5], g.Words[5]},
		{"phrase", `"` + m2.Body[2] + " " + m2.Body[3] + `"`, `"` + m2.Body[2] + " " + m2.Body[3] + `"`},
		{"date range (1 day)", "date:" + day, "date:" + day},
		{"attachment name", "attachment:" + withAtt.Attachment, "attachment:" + withAtt.Attachment},
		{"prefix", m.Subject[1][:3] + "*", m.Subject[1][:3] + "*"},
		{"combined", "from:" + m.From + " AND (subject:" + m.Subject[0] + " OR " + rare + ") AND NOT has:attachment",
			"from:" + m.From + " AND (subject:" + m.Subject[0] + " OR " + rare + ") AND NOT tag:attachment"},
	}
	const reps = 5
	for _, k := range kinds {
		var qo, qt []time.Duration
		var hitsO, hitsT int
		for round := 0; round < b.rounds*reps; round++ {
			do := func() error {
				d, _, out, err := measured(maEnv, mbin, "search", "--ids", "-d", root, k.ours)
				qo, hitsO = append(qo, d), bytes.Count(out, []byte("\n"))
				return err
			}
			dt := func() error {
				d, _, out, err := measured(nmEnv, nm, "search", "--output=files", k.theirs)
				qt, hitsT = append(qt, d), bytes.Count(out, []byte("\n"))
				return err
			}
			first, second := do, dt
			if round%2 == 1 {
				first, second = dt, do
			}
			if err := first(); err != nil {
				return err
			}
			if err := second(); err != nil {
				return err
			}
		}
		mo, mt := medianDur(qo), medianDur(qt)
		what := fmt.Sprintf("query: %s (`%s`)", k.name, k.ours)
		b.add(row{what: what, setup: fmt.Sprintf("notmuch search (%d found)", hitsT), figure: ms(mt)})
		b.add(row{what: what, setup: fmt.Sprintf("mailarchive search (%d found)", hitsO), figure: ms(mo),
			ratio:  fmt.Sprintf("%.2f × notmuch's speed", mt.Seconds()/mo.Seconds()),
			target: "≥ 1.0 × notmuch, < 50 ms", verdict: verdict(mo <= mt && mo < 50*time.Millisecond)})
	}

	// A plain scan for the rare body word, against the catalog.
	var tg, tq []time.Duration
	for round := 0; round < b.rounds; round++ {
		d, _, _, err := measured(nil, "grep", "-rl", "--include=*.eml", rare, root)
		if err != nil {
			return err
		}
		tg = append(tg, d)
		d, _, _, err = measured(maEnv, mbin, "search", "--ids", "-d", root, "body:"+rare)
		if err != nil {
			return err
		}
		tq = append(tq, d)
	}
	what = fmt.Sprintf("body word over %d messages: plain scan vs catalog", n)
	b.add(row{what: what, setup: "grep -rl over the .eml files", figure: ms(medianDur(tg))})
	b.add(row{what: what, setup: "mailarchive search body:WORD", figure: ms(medianDur(tq)),
		ratio: fmt.Sprintf("%.0f × faster than grep", medianDur(tg).Seconds()/medianDur(tq).Seconds())})
	b.note("search rows: each query is a whole command run (process start, catalog or database open, all IDs or file names printed), %d times alternately, median; indexing from nothing, %d rounds alternately; the Bcc row asks notmuch for a header recipient, since it cannot see envelopes; free words and prefixes also match header words (e.g. Mon in Date:), so they can find more than notmuch.", b.rounds*reps, indexRounds)
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
