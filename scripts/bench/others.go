package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/postfixtest"
)

// benchTB lets the bench use internal/postfixtest's private Postfix
// instances outside a test: a failure panics (caught per section) and
// cleanups run when the section ends.
type benchTB struct {
	testing.TB // nil: any method not defined here is a bug in the bench
	work       string
	cleanups   []func()
}

func (t *benchTB) Helper()                   {}
func (t *benchTB) Name() string              { return "bench" }
func (t *benchTB) Logf(string, ...any)       {}
func (t *benchTB) Log(...any)                {}
func (t *benchTB) Failed() bool              { return false }
func (t *benchTB) Cleanup(f func())          { t.cleanups = append(t.cleanups, f) }
func (t *benchTB) Errorf(f string, a ...any) { log.Printf("postfixtest: "+f, a...) }
func (t *benchTB) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
func (t *benchTB) Fatal(a ...any)            { panic(fmt.Sprint(a...)) }
func (t *benchTB) Skipf(f string, a ...any)  { panic(fmt.Sprintf(f, a...)) }
func (t *benchTB) Skip(a ...any)             { panic(fmt.Sprint(a...)) }
func (t *benchTB) Setenv(k, v string)        { os.Setenv(k, v) }
func (t *benchTB) Context() context.Context  { return context.Background() }
func (t *benchTB) Chdir(string)              { panic("Chdir") }
func (t *benchTB) Attr(string, string)       {}
func (t *benchTB) Output() io.Writer         { return os.Stderr }
func (t *benchTB) TempDir() string {
	d, err := os.MkdirTemp(t.work, "pf-")
	if err != nil {
		panic(err)
	}
	os.Chmod(d, 0o755) // Postfix's daemons chdir below it
	return d
}
func (t *benchTB) done() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}

// catch turns a benchTB panic into an error.
func catch(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%v", r)
	}
}

// milterCost compares a real Postfix relaying smtp-source's mail to
// smtp-sink with and without milter_archiver, alternately.
func (b *bench) milterCost() (err error) {
	mbin := filepath.Join(b.bin, "milter_archiver")
	if _, err := os.Stat(mbin); err != nil {
		b.add(row{what: "milter cost", setup: "not measured yet: bin/milter_archiver missing", target: "≥ 0.9 × Postfix alone"})
		return nil
	}
	t := &benchTB{work: b.work}
	defer t.done()
	defer catch(&err)
	sink, err := b.sink()
	if err != nil {
		return err
	}
	maddr := freeAddr()
	if _, err := b.start("milter", maddr, mbin, "-l", "inet:"+maddr, "-d", filepath.Join(b.work, "archive-milter")); err != nil {
		return err
	}
	plain := postfixtest.Start(t, postfixtest.Options{RelayTo: sink})
	milterCF := func(addr string) []string {
		return []string{"smtpd_milters = inet:" + addr, "milter_default_action = tempfail", "milter_protocol = 6"}
	}
	withMilter := postfixtest.Start(t, postfixtest.Options{RelayTo: sink, MainCF: milterCF(maddr)})
	pfs := []*postfixtest.Instance{plain, withMilter}
	archives := []string{filepath.Join(b.work, "archive-milter")}
	// The same with the milter's archive on a tmpfs: tells the milter's own
	// cost from the archive's fsyncs.
	if dir, err := b.tmpfs("tmpfs-milter", "1g"); err == nil {
		m2 := freeAddr()
		archives = append(archives, filepath.Join(dir, "archive"))
		if _, err := b.start("milter-tmpfs", m2, mbin, "-l", "inet:"+m2, "-d", archives[1]); err != nil {
			return err
		}
		pfs = append(pfs, postfixtest.Start(t, postfixtest.Options{RelayTo: sink, MainCF: milterCF(m2)}))
	}
	n := b.n(2000, 100)
	times := make([][]time.Duration, len(pfs))
	for round := 0; round < b.rounds; round++ {
		for k := range pfs {
			i := (k + round) % len(pfs)
			pf := pfs[i]
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			t0 := time.Now()
			_, err := timed("/usr/sbin/smtp-source", "-d", "-s", "10", "-m", strconv.Itoa(n), "-l", "10240",
				"-f", "bench@example.org", "-t", "sink@example.net", pf.SMTPAddr())
			if err == nil {
				err = pf.WaitQueueEmpty(ctx)
			}
			cancel()
			if err != nil {
				return err
			}
			d := time.Since(t0)
			log.Printf("milter round %d setup %d: %v", round, i, d.Round(time.Millisecond))
			times[i] = append(times[i], d)
		}
		for _, a := range archives {
			clearItems(a)
		}
	}
	what := fmt.Sprintf("milter cost, %d × 10 KiB, 10 sessions, received and relayed", n)
	r0 := float64(n) / medianDur(times[0]).Seconds()
	r1 := float64(n) / medianDur(times[1]).Seconds()
	b.add(row{what: what, setup: "Postfix alone", figure: fmt.Sprintf("%.0f msg/s", r0)})
	b.add(row{what: what, setup: "Postfix + milter_archiver", figure: fmt.Sprintf("%.0f msg/s", r1),
		ratio: fmt.Sprintf("%.2f × Postfix alone", r1/r0), target: "≥ 0.9 × Postfix alone", verdict: verdict(r1/r0 >= 0.9)})
	if len(pfs) > 2 {
		r2 := float64(n) / medianDur(times[2]).Seconds()
		b.add(row{what: what, setup: "Postfix + milter_archiver, archive on tmpfs (diagnostic)", figure: fmt.Sprintf("%.0f msg/s", r2),
			ratio: fmt.Sprintf("%.2f × Postfix alone", r2/r0)})
	}
	return nil
}

// wrapperCost times "archiver x y cat" against "cat", delivery by delivery
// alternately, each with 10 KiB on standard input.
func (b *bench) wrapperCost() error {
	abin := filepath.Join(b.bin, "archiver")
	if _, err := os.Stat(abin); err != nil {
		b.add(row{what: "wrapper cost", setup: "not measured yet: bin/archiver missing", target: "added median < 3 ms"})
		return nil
	}
	dir := filepath.Join(b.work, "archive-wrapper")
	msg := append([]byte("From bench@example.org  Thu Jan  1 00:00:00 2026\n"), message(10<<10)...)
	n := b.n(1000, 50)
	var tc, ta, tt []time.Duration
	tmpDir, tmpErr := b.tmpfs("tmpfs-wrapper", "512m")
	run := func(prog string, args ...string) (time.Duration, error) {
		c := exec.Command(prog, args...)
		c.Stdin = bytes.NewReader(msg)
		c.Env = append(os.Environ(), "SENDER=bench@example.org", "RECIPIENT=sink@example.net")
		t0 := time.Now()
		out, err := c.CombinedOutput()
		d := time.Since(t0)
		if err != nil {
			return 0, fmt.Errorf("%s: %v: %s", prog, err, tailStr(string(out), 500))
		}
		return d, nil
	}
	for i := 0; i < n; i++ {
		d1, err := run("/bin/cat")
		if err != nil {
			return err
		}
		d2, err := run(abin, "-d", dir, "x", "y", "/bin/cat")
		if err != nil {
			return err
		}
		tc, ta = append(tc, d1), append(ta, d2)
		if tmpErr == nil {
			d3, err := run(abin, "-d", filepath.Join(tmpDir, "archive"), "x", "y", "/bin/cat")
			if err != nil {
				return err
			}
			tt = append(tt, d3)
			if i%200 == 199 {
				clearItems(filepath.Join(tmpDir, "archive"))
			}
		}
	}
	mc, ma := medianDur(tc), medianDur(ta)
	what := fmt.Sprintf("wrapper cost, %d deliveries of 10 KiB", n)
	b.add(row{what: what, setup: "cat", figure: us(mc)})
	b.add(row{what: what, setup: "archiver x y cat", figure: us(ma)})
	b.add(row{what: what, setup: "added by archiver", figure: us(ma - mc), target: "added median < 3 ms", verdict: verdict(ma-mc < 3*time.Millisecond)})
	if len(tt) > 0 {
		b.add(row{what: what, setup: "added by archiver, archive on tmpfs (diagnostic)", figure: us(medianDur(tt) - mc)})
	}
	return nil
}

// makeItems writes n complete pending items with stamps spread over 30 days.
func makeItems(root string, n int) error {
	if err := os.MkdirAll(filepath.Join(root, "tmp"), 0o755); err != nil {
		return err
	}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < n; i++ {
		id, err := archive.NewID(base.Add(time.Duration(i%30)*24*time.Hour + time.Duration(i)*time.Second))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(root, id+".eml"), []byte("Subject: x\r\n\r\nx\r\n"), 0o640); err != nil {
			return err
		}
		env := fmt.Sprintf(`{"version":1,"id":%q,"source":"proxy","outcome":"accepted"}`+"\n", id)
		if err := os.WriteFile(filepath.Join(root, id+".json"), []byte(env), 0o640); err != nil {
			return err
		}
	}
	return nil
}

// unfile moves filed items from ROOT/YYYY/MM/DD back into ROOT and removes
// the dated directories, so the next run files the same n items again.
func unfile(root string, n int) error {
	days, _ := filepath.Glob(filepath.Join(root, "[0-9][0-9][0-9][0-9]", "[0-9][0-9]", "[0-9][0-9]"))
	moved := 0
	for _, d := range days {
		ents, err := os.ReadDir(d)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := os.Rename(filepath.Join(d, e.Name()), filepath.Join(root, e.Name())); err != nil {
				return err
			}
			moved++
		}
	}
	years, _ := filepath.Glob(filepath.Join(root, "[0-9][0-9][0-9][0-9]"))
	for _, y := range years {
		os.RemoveAll(y)
	}
	if moved != 2*n {
		return fmt.Errorf("unfile: %d files in dated directories, want %d", moved, 2*n)
	}
	return nil
}

// perlFiler is the minimal Perl rename loop filer is measured against: the
// same moves into ROOT/YYYY/MM/DD, .eml first, no fsync, no checks.
const perlFiler = `
my $root = shift; opendir(my $d, $root) or die "$root: $!"; my %made;
for my $f (readdir $d) {
  next unless $f =~ /^((\d{4})(\d\d)(\d\d)T\d{6}Z\.[a-z2-7]{16}(?:\.\S*)?)\.eml$/;
  my ($id, $y, $m, $dd) = ($1, $2, $3, $4);
  next unless -e "$root/$id.json";
  my $dir = "$root/$y/$m/$dd";
  unless ($made{$dir}++) { mkdir "$root/$y"; mkdir "$root/$y/$m"; mkdir $dir; }
  rename("$root/$id.eml", "$dir/$id.eml") or die "$id: $!";
  rename("$root/$id.json", "$dir/$id.json") or die "$id: $!";
}`

func (b *bench) filerCost() error {
	fbin := filepath.Join(b.bin, "filer")
	if _, err := os.Stat(fbin); err != nil {
		b.add(row{what: "filer", setup: "not measured yet: bin/filer missing", target: "≥ 1.0 × Perl"})
		return nil
	}
	n := b.n(100000, 1000)
	cmds := [][]string{{fbin, "-q"}, {"/usr/bin/perl", "-e", perlFiler}}
	times := make([][]time.Duration, 2)
	// One set of items per contender, made once; after each run the filed
	// items are moved back (renames are much cheaper than making 200,000
	// files again).
	for i := range cmds {
		root := filepath.Join(b.work, "filer-"+strconv.Itoa(i))
		if err := makeItems(root, n); err != nil {
			return err
		}
	}
	defer func() {
		for i := range cmds {
			os.RemoveAll(filepath.Join(b.work, "filer-"+strconv.Itoa(i)))
		}
	}()
	for round := 0; round < b.rounds; round++ {
		for k := range cmds {
			i := (k + round) % 2
			root := filepath.Join(b.work, "filer-"+strconv.Itoa(i))
			exec.Command("sync").Run()
			d, err := timed(cmds[i][0], append(cmds[i][1:], root)...)
			if err != nil {
				return err
			}
			left, _ := filepath.Glob(filepath.Join(root, "*.eml"))
			if len(left) != 0 {
				return fmt.Errorf("%s left %d items unfiled", cmds[i][0], len(left))
			}
			log.Printf("filer round %d %s: %v", round, filepath.Base(cmds[i][0]), d.Round(time.Millisecond))
			times[i] = append(times[i], d)
			if err := unfile(root, n); err != nil {
				return err
			}
		}
	}
	rf := float64(n) / medianDur(times[0]).Seconds()
	rp := float64(n) / medianDur(times[1]).Seconds()
	what := fmt.Sprintf("filer, %d pending items into dated dirs", n)
	b.add(row{what: what, setup: "Perl rename loop (no fsync)", figure: fmt.Sprintf("%.0f items/s", rp)})
	b.add(row{what: what, setup: "bin/filer", figure: fmt.Sprintf("%.0f items/s", rf),
		ratio: fmt.Sprintf("%.2f × Perl", rf/rp), target: "≥ 1.0 × Perl", verdict: verdict(rf/rp >= 1)})
	return nil
}
