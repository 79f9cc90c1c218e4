package main

import (
	"bufio"
	"bytes"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
)

// relays is the set of setups the proxy is compared in: each is an address
// that ends at the same smtp-sink.
type relays struct {
	sink, haproxy, proxy, proxyTmpfs string
	archive, archiveTmpfs            string
	proxyCmd                         *exec.Cmd
}

// sink starts smtp-sink, which accepts and discards every message.
func (b *bench) sink() (string, error) {
	addr := freeAddr()
	_, err := b.start("smtp-sink-"+addr, addr, "/usr/sbin/smtp-sink", "-u", "nobody", "-m", "2000", addr, "1024")
	return addr, err
}

func (b *bench) haproxy(to string) (string, *exec.Cmd, error) {
	addr := freeAddr()
	cfg := fmt.Sprintf(`global
	maxconn 8192
defaults
	mode tcp
	timeout connect 5s
	timeout client 300s
	timeout server 300s
frontend f
	bind %s
	default_backend b
backend b
	server s %s
`, addr, to)
	path := filepath.Join(b.work, "haproxy-"+addr+".cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return "", nil, err
	}
	c, err := b.start("haproxy-"+addr, addr, "/usr/sbin/haproxy", "-db", "-f", path)
	return addr, c, err
}

// proxyArchiver starts bin/proxy_archiver archiving into dir.
func (b *bench) proxyArchiver(to, dir string) (string, *exec.Cmd, error) {
	addr := freeAddr()
	c, err := b.start("proxy-"+addr, addr, filepath.Join(b.bin, "proxy_archiver"),
		"-l", addr, "-s", to, "-d", dir, "--max-conns", "2000", "--log-level", "warn")
	return addr, c, err
}

// tmpfs mounts a tmpfs of size under the work directory (root only).
func (b *bench) tmpfs(name, size string) (string, error) {
	dir := filepath.Join(b.work, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		return "", fmt.Errorf("mount tmpfs: %v %s", err, out)
	}
	b.mounts = append(b.mounts, dir)
	return dir, nil
}

func (b *bench) relays() (*relays, error) {
	r := &relays{archive: filepath.Join(b.work, "archive")}
	var err error
	if r.sink, err = b.sink(); err != nil {
		return nil, err
	}
	if r.haproxy, _, err = b.haproxy(r.sink); err != nil {
		return nil, err
	}
	if r.proxy, r.proxyCmd, err = b.proxyArchiver(r.sink, r.archive); err != nil {
		return nil, err
	}
	if dir, err := b.tmpfs("tmpfs", "2g"); err != nil {
		b.note("proxy with the archive on tmpfs not measured: %v", err)
	} else {
		r.archiveTmpfs = filepath.Join(dir, "archive")
		if r.proxyTmpfs, _, err = b.proxyArchiver(r.sink, r.archiveTmpfs); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// clearItems removes committed items so every round starts alike.
func clearItems(root string) int {
	n := 0
	for _, pat := range []string{"*.eml", "*.json"} {
		ms, _ := filepath.Glob(filepath.Join(root, pat))
		for _, m := range ms {
			if os.Remove(m) == nil && strings.HasSuffix(m, ".eml") {
				n++
			}
		}
	}
	return n
}

func (b *bench) proxyThroughput() error {
	r, err := b.relays()
	if err != nil {
		return err
	}
	type setup struct{ name, addr, archive string }
	setups := []setup{{"direct to smtp-sink", r.sink, ""}, {"haproxy mode tcp", r.haproxy, ""},
		{"proxy_archiver, durable archive (disk)", r.proxy, r.archive}}
	if r.proxyTmpfs != "" {
		setups = append(setups, setup{"proxy_archiver, archive on tmpfs", r.proxyTmpfs, r.archiveTmpfs})
	}
	for _, load := range []struct {
		what       string
		msgs, size int
		sessions   int
		mbps       bool
	}{
		{"throughput, 10 KiB messages", b.n(20000, 200), 10 << 10, 20, false},
		{"throughput, 1 MiB messages", b.n(500, 20), 1 << 20, 20, true},
	} {
		times := make([][]time.Duration, len(setups))
		for round := 0; round < b.rounds; round++ {
			for k := range setups {
				s := setups[(k+round)%len(setups)]
				i := (k + round) % len(setups)
				d, err := timed("/usr/sbin/smtp-source", "-d", "-s", strconv.Itoa(load.sessions),
					"-m", strconv.Itoa(load.msgs), "-l", strconv.Itoa(load.size),
					"-f", "bench@example.org", "-t", "sink@example.net", s.addr)
				if err != nil {
					return fmt.Errorf("%s: %w", s.name, err)
				}
				if s.archive != "" {
					if n := clearItems(s.archive); n != load.msgs {
						return fmt.Errorf("%s: %d items archived for %d messages", s.name, n, load.msgs)
					}
				}
				log.Printf("%s round %d %s: %v", load.what, round, s.name, d.Round(time.Millisecond))
				times[i] = append(times[i], d)
			}
		}
		rate := func(d time.Duration) float64 {
			if load.mbps {
				return float64(load.msgs*load.size) / d.Seconds() / 1e6
			}
			return float64(load.msgs) / d.Seconds()
		}
		unit := "msg/s"
		if load.mbps {
			unit = "MB/s"
		}
		hap := rate(medianDur(times[1]))
		for i, s := range setups {
			v := rate(medianDur(times[i]))
			rw := row{what: fmt.Sprintf("%s (%d × %d sessions)", load.what, load.msgs, load.sessions), setup: s.name,
				figure: fmt.Sprintf("%.0f %s", v, unit), ratio: fmt.Sprintf("%.2f × haproxy", v/hap)}
			if i == 2 {
				want := 1.0
				if load.mbps {
					want = 0.8
				}
				rw.target = fmt.Sprintf("≥ %.1f × haproxy", want)
				rw.verdict = verdict(v/hap >= want)
			}
			b.add(rw)
		}
	}
	return nil
}

// proxyMemory measures the proxy's peak RSS for one 100 MiB message and its
// RSS per idle connection, each in a fresh process.
func (b *bench) proxyMemory() error {
	sink, err := b.sink()
	if err != nil {
		return err
	}
	dir := filepath.Join(b.work, "archive-mem")
	addr, pc, err := b.proxyArchiver(sink, dir)
	if err != nil {
		return err
	}
	size := b.n(100<<20, 1<<20)
	if _, err := timed("/usr/sbin/smtp-source", "-s", "1", "-m", "1", "-l", strconv.Itoa(size),
		"-f", "bench@example.org", "-t", "sink@example.net", addr); err != nil {
		return err
	}
	peak := procStatus(pc.Process.Pid, "VmHWM")
	b.stop(pc)
	b.add(row{what: fmt.Sprintf("memory, one %d MiB message", size>>20), setup: "proxy_archiver peak RSS",
		figure: mib(peak), target: "< 64 MiB", verdict: verdict(peak < 64<<20)})
	os.RemoveAll(dir)

	idle := 500
	hap, hc, err := b.haproxy(sink)
	if err != nil {
		return err
	}
	addr, pc, err = b.proxyArchiver(sink, dir)
	if err != nil {
		return err
	}
	for _, s := range []struct {
		name, addr string
		pid        int
		target     bool
	}{{"proxy_archiver", addr, pc.Process.Pid, true}, {"haproxy (for comparison)", hap, hc.Process.Pid, false}} {
		per, err := idleCost(s.addr, s.pid, idle)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		rw := row{what: fmt.Sprintf("memory, %d idle connections", idle), setup: s.name + " RSS per connection",
			figure: fmt.Sprintf("%.1f KiB", per/1024)}
		if s.target {
			rw.target, rw.verdict = "< 20 KiB", verdict(per < 20<<10)
		}
		b.add(rw)
	}
	b.stop(pc)
	b.stop(hc)
	return nil
}

// idleCost opens n connections that read the greeting and say nothing
// more, and returns the growth of the server's RSS per connection. One full
// message goes through first so the code paths are paged in.
func idleCost(addr string, pid, n int) (float64, error) {
	c, err := dialSMTP(addr)
	if err != nil {
		return 0, err
	}
	if _, err := c.send(message(10 << 10)); err != nil {
		return 0, err
	}
	c.Close()
	time.Sleep(500 * time.Millisecond)
	before := procStatus(pid, "VmRSS")
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return 0, err
		}
		conns = append(conns, c)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			return 0, fmt.Errorf("greeting on connection %d: %w", i, err)
		}
	}
	time.Sleep(time.Second)
	after := procStatus(pid, "VmRSS")
	return float64(after-before) / float64(n), nil
}

// smtpConn is a minimal pipelining SMTP client for timing single messages.
type smtpConn struct {
	net.Conn
	r *bufio.Reader
}

func dialSMTP(addr string) (*smtpConn, error) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &smtpConn{Conn: nc, r: bufio.NewReader(nc)}
	if _, err := c.reply(); err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte("EHLO bench.example\r\n")); err != nil {
		return nil, err
	}
	if code, err := c.reply(); err != nil || code != 250 {
		return nil, fmt.Errorf("EHLO: %d %v", code, err)
	}
	return c, nil
}

func (c *smtpConn) reply() (int, error) {
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			return 0, err
		}
		if len(l) < 4 {
			return 0, fmt.Errorf("bad reply %q", l)
		}
		if l[3] != '-' {
			return strconv.Atoi(l[:3])
		}
	}
}

// send sends one message (body must be dot-safe) the way Postfix's smtp
// client does, pipelining up to DATA, and returns the time to the final
// reply.
func (c *smtpConn) send(body []byte) (time.Duration, error) {
	t0 := time.Now()
	if _, err := c.Write([]byte("MAIL FROM:<bench@example.org>\r\nRCPT TO:<sink@example.net>\r\nDATA\r\n")); err != nil {
		return 0, err
	}
	for _, want := range []int{250, 250, 354} {
		if code, err := c.reply(); err != nil || code != want {
			return 0, fmt.Errorf("reply %d (want %d): %v", code, want, err)
		}
	}
	if _, err := c.Write(append(body, ".\r\n"...)); err != nil {
		return 0, err
	}
	if code, err := c.reply(); err != nil || code != 250 {
		return 0, fmt.Errorf("end of data: %d %v", code, err)
	}
	return time.Since(t0), nil
}

func message(size int) []byte {
	var m bytes.Buffer
	m.WriteString("From: bench@example.org\r\nTo: sink@example.net\r\nSubject: latency\r\n\r\n")
	line := strings.Repeat("0123456789", 7) + "\r\n"
	for m.Len() < size {
		m.WriteString(line)
	}
	return m.Bytes()
}

// proxyLatency times single messages, one session each, through the proxy
// and directly, interleaved message by message, and the fsync cost on the
// archive's disk.
func (b *bench) proxyLatency() error {
	sink, err := b.sink()
	if err != nil {
		return err
	}
	dir := filepath.Join(b.work, "archive-latency")
	addr, _, err := b.proxyArchiver(sink, dir)
	if err != nil {
		return err
	}
	direct, err := dialSMTP(sink)
	if err != nil {
		return err
	}
	defer direct.Close()
	px, err := dialSMTP(addr)
	if err != nil {
		return err
	}
	defer px.Close()
	n := b.n(2000, 100)
	body := message(10 << 10)
	sampler, err := newFsyncSampler(filepath.Join(b.work, "fsync"))
	if err != nil {
		return err
	}
	var td, tp []time.Duration
	for i := 0; i < n; i++ {
		if err := sampler.sample(); err != nil {
			return err
		}
		order := []*smtpConn{direct, px}
		if i%2 == 1 {
			order = []*smtpConn{px, direct}
		}
		for _, c := range order {
			d, err := c.send(body)
			if err != nil {
				return err
			}
			if c == direct {
				td = append(td, d)
			} else {
				tp = append(tp, d)
			}
		}
	}
	clearItems(dir)
	fsync, commit := medianDur(sampler.fs), medianDur(sampler.cs)
	md, mp := medianDur(td), medianDur(tp)
	added := mp - md
	what := fmt.Sprintf("latency, 1 session, %d × 10 KiB", n)
	b.add(row{what: what, setup: "direct to smtp-sink", figure: us(md)})
	b.add(row{what: what, setup: "proxy_archiver, durable archive", figure: us(mp)})
	b.add(row{what: what, setup: "added by the proxy", figure: us(added),
		ratio:  fmt.Sprintf("%.1f × one fsync", float64(added)/float64(fsync)),
		target: "< 1 ms + one fsync (" + us(fsync+time.Millisecond) + ")", verdict: verdict(added < fsync+time.Millisecond)})
	b.add(row{what: what, setup: "added, minus one archive item's cost (the proxy's own)", figure: us(added - commit)})
	b.add(row{what: "fsync on the archive's disk", setup: "write 10 KiB + fsync, median", figure: us(fsync)})
	if mbps, err := diskBandwidth(filepath.Join(b.work, "fsync"), b.n(200, 20)); err == nil {
		b.add(row{what: "fsync on the archive's disk", setup: "write 1 MiB + fsync, one writer", figure: fmt.Sprintf("%.0f MB/s", mbps)})
	}
	b.add(row{what: "fsync on the archive's disk", setup: "archive Create+Write+Sync+Commit of 10 KiB (4 fsyncs), median", figure: us(commit),
		ratio: fmt.Sprintf("%.1f × one fsync", float64(commit)/float64(fsync))})
	return nil
}

func us(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

// fsyncSampler measures one write+fsync of a new 10 KiB file, and one
// archive item written the way the proxy writes it, in dir. The latency
// loop takes a sample after every message pair, so the disk is measured in
// the same moments as the messages (other load on the machine changes the
// cost of an fsync several times over).
type fsyncSampler struct {
	dir    string
	st     *archive.Store
	body   []byte
	n      int
	fs, cs []time.Duration
}

func newFsyncSampler(dir string) (*fsyncSampler, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	st, err := archive.Open(filepath.Join(dir, "archive"), archive.Options{})
	if err != nil {
		return nil, err
	}
	return &fsyncSampler{dir: dir, st: st, body: message(10 << 10)}, nil
}

func (s *fsyncSampler) sample() error {
	s.n++
	name := filepath.Join(s.dir, fmt.Sprintf("f%d", s.n))
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	f.Write(s.body)
	t0 := time.Now()
	err = f.Sync()
	s.fs = append(s.fs, time.Since(t0))
	f.Close()
	os.Remove(name)
	if err != nil {
		return err
	}
	t0 = time.Now()
	w, err := s.st.Create()
	if err != nil {
		return err
	}
	w.Write(s.body)
	if err := w.Sync(); err != nil {
		return err
	}
	if err := w.Commit(&archive.Envelope{Source: archive.SourceProxy, Outcome: archive.OutcomeAccepted}); err != nil {
		return err
	}
	s.cs = append(s.cs, time.Since(t0))
	return nil
}

// diskBandwidth writes n new 1 MiB files, each fsynced, and returns MB/s.
func diskBandwidth(dir string, n int) (float64, error) {
	buf := bytes.Repeat([]byte("0123456789abcde\n"), 1<<16)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		name := filepath.Join(dir, fmt.Sprintf("big%d", i))
		f, err := os.Create(name)
		if err != nil {
			return 0, err
		}
		_, err = f.Write(buf)
		if err == nil {
			err = f.Sync()
		}
		f.Close()
		os.Remove(name)
		if err != nil {
			return 0, err
		}
	}
	return float64(n*len(buf)) / time.Since(t0).Seconds() / 1e6, nil
}
