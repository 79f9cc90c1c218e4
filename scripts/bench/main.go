// Command bench is "make bench": it measures proxy_archiver against
// haproxy and a direct connection, the milter and the wrapper against
// Postfix alone, filer against a minimal Perl rename loop, and mailarchive
// index/search against notmuch and grep, side by side in one run, and
// prints a table of figures and ratios.
//
// Ratios, not absolute times, are the claim: the compared setups run
// alternately, round after round, and the table gives the median of the
// rounds, so noise from other load on the machine hits every setup alike.
//
//	go run ./scripts/bench                 # everything, full counts
//	go run ./scripts/bench -scale 0.25     # quarter counts (say so when quoting)
//	go run ./scripts/bench -only proxy     # sections: proxy,memory,latency,milter,chain,wrapper,filer,search,log,objstore
//	go run ./scripts/bench -only search -search-n 20000   # the read side, fewer messages
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

type row struct {
	what, setup, figure string
	ratio               string
	target, verdict     string
}

type bench struct {
	scale  float64
	rounds int
	bin    string
	work   string
	rows   []row
	notes  []string
	procs  []*exec.Cmd
	mounts []string
}

func main() {
	var b bench
	only := flag.String("only", "", "comma-separated sections to run (default: all): proxy,memory,latency,milter,chain,wrapper,filer,search,log,objstore")
	doc := flag.String("doc", "docs/bench.md,README.md", "comma-separated Markdown files whose bench section (between the bench markers) gets the table (empty: don't write)")
	flag.Float64Var(&b.scale, "scale", 1, "multiply every message/item count by this (e.g. 0.25 for a quick run)")
	flag.IntVar(&b.rounds, "rounds", 3, "rounds of each comparison; the table reports medians")
	flag.StringVar(&b.bin, "bin", "bin", "directory holding the built commands")
	flag.Parse()
	log.SetFlags(log.Ltime)
	var err error
	if b.bin, err = filepath.Abs(b.bin); err != nil {
		log.Fatal(err)
	}
	if err := ensurePeers(); err != nil {
		log.Fatal(err)
	}
	b.work, err = os.MkdirTemp("/var/tmp", "mailarchive-bench-")
	if err != nil {
		log.Fatal(err)
	}
	os.Chmod(b.work, 0o755) // Postfix's daemons chdir below it
	defer b.cleanup()

	start := time.Now()
	sections := []struct {
		name string
		run  func() error
	}{
		{"proxy", b.proxyThroughput},
		{"memory", b.proxyMemory},
		{"latency", b.proxyLatency},
		{"milter", b.milterCost},
		{"chain", b.chainCost},
		{"wrapper", b.wrapperCost},
		{"filer", b.filerCost},
		{"search", b.searchCost},
		{"log", b.logCost},
		{"objstore", b.objstoreUpload},
	}
	for _, s := range sections {
		if *only != "" && !strings.Contains(","+*only+",", ","+s.name+",") {
			continue
		}
		log.Printf("== %s", s.name)
		if err := s.run(); err != nil {
			log.Printf("%s: %v", s.name, err)
			b.add(row{what: s.name, setup: "FAILED", figure: err.Error()})
		}
	}
	table := b.table(time.Since(start), strings.Join(os.Args[1:], " "))
	fmt.Print(table)
	for _, path := range strings.Split(*doc, ",") {
		if path == "" {
			continue
		}
		if err := writeDoc(path, table); err != nil {
			log.Printf("writing %s: %v", path, err)
		}
	}
}

func (b *bench) add(r row) { b.rows = append(b.rows, r) }

func (b *bench) note(format string, args ...any) {
	b.notes = append(b.notes, fmt.Sprintf(format, args...))
}

// n scales a count, never below min.
func (b *bench) n(count, min int) int {
	return max(int(float64(count)*b.scale), min)
}

func (b *bench) cleanup() {
	for _, c := range b.procs {
		stopProc(c)
	}
	for _, m := range b.mounts {
		exec.Command("umount", m).Run()
	}
	os.RemoveAll(b.work)
}

func (b *bench) table(took time.Duration, args string) string {
	var sb strings.Builder
	cmd := "make bench"
	if args != "" {
		cmd = "go run ./scripts/bench " + args
	}
	fmt.Fprintf(&sb, "Command: `%s` — %s, %d rounds alternating, medians; run took %s.\n\n",
		cmd, time.Now().UTC().Format("2006-01-02 15:04 UTC"), b.rounds, took.Round(time.Second))
	fmt.Fprintf(&sb, "Machine: %d cores (%s), kernel %s, archive on %s.\n", runtime.NumCPU(), cpuModel(), kernel(), fsOf(b.work))
	if b.scale != 1 {
		fmt.Fprintf(&sb, "Counts scaled by %.2f.\n", b.scale)
	}
	sb.WriteString("\n| measurement | setup | median | ratio | target | met |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, r := range b.rows {
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s | %s |\n", r.what, r.setup, r.figure, r.ratio, r.target, r.verdict)
	}
	if len(b.notes) > 0 {
		sb.WriteString("\n")
		for _, n := range b.notes {
			fmt.Fprintf(&sb, "- %s\n", n)
		}
	}
	return sb.String()
}

// writeDoc replaces the text between the bench markers in path.
func writeDoc(path, table string) error {
	const begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(old)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		s = "# Benchmarks\n\n" + begin + "\n" + end + "\n" + s
		i, j = strings.Index(s, begin), strings.Index(s, end)
	}
	s = s[:i+len(begin)] + "\n" + table + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}

func verdict(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianDur(ds []time.Duration) time.Duration {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	return time.Duration(median(xs))
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "model name") {
			if _, v, ok := strings.Cut(l, ":"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return "unknown CPU"
}

func kernel() string {
	out, err := exec.Command("uname", "-sr").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func fsOf(dir string) string {
	out, err := exec.Command("df", "--output=source,fstype", dir).Output()
	if err != nil {
		return "unknown"
	}
	l := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.Join(strings.Fields(l[len(l)-1]), " ")
}

// ensurePeers installs smtp-source/smtp-sink (Debian postfix), haproxy and
// perl when missing, the way scripts/install-peers.sh does.
func ensurePeers() error {
	want := map[string]string{"/usr/sbin/smtp-source": "postfix", "/usr/sbin/smtp-sink": "postfix",
		"/usr/sbin/postfix": "postfix", "/usr/sbin/haproxy": "haproxy", "/usr/bin/perl": "perl",
		"/usr/bin/notmuch": "notmuch"}
	var missing []string
	for prog, pkg := range want {
		if _, err := os.Stat(prog); err != nil && !contains(missing, pkg) {
			missing = append(missing, pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	log.Printf("installing %v", missing)
	if contains(missing, "postfix") {
		c := exec.Command("debconf-set-selections")
		c.Stdin = strings.NewReader("postfix postfix/main_mailer_type select No configuration\n")
		if out, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("debconf-set-selections: %v\n%s", err, out)
		}
	}
	for _, args := range [][]string{{"update", "-q"}, append([]string{"install", "-y", "-q", "--no-install-recommends"}, missing...)} {
		c := exec.Command("apt-get", args...)
		c.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		c.Stdout, c.Stderr = os.Stderr, os.Stderr
		if err := c.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %v (install %v by hand)", args[0], err, missing)
		}
	}
	return nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
