// Command demo is `make demo`: it starts proxy_archiver in front of the
// project's SMTP sink, sends a few varied messages through it, and shows
// the archive. Then it runs a compliance officer's session on that archive
// with the real filer and mailarchive (workflow.go): index, search, show,
// seal, verify (and catch a tampered copy), prove one message, export. It
// needs no Postfix: only the binaries in bin/. It exits non-zero as soon
// as a step's exit status or output is not what it must be.
//
// However it ends, it leaves nothing running: on SIGINT, SIGTERM, SIGHUP
// or SIGPIPE (its output piped into head) it stops the sink, the proxy and
// the step running before it exits, and if it is killed outright the
// kernel stops them (Pdeathsig).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Pdeathsig is delivered when the thread that started the child ends, not
// the process: start the children from the main thread, which lives as
// long as the process.
func init() { runtime.LockOSThread() }

var keep = flag.Bool("keep", false, "leave the proxy and the sink running after the demo, until ^C, to send your own mail through them")

func main() {
	flag.Parse()
	sigs := make(chan os.Signal, 1)
	// SIGPIPE: with it caught, a write to a closed pipe fails (EPIPE) and
	// the signal arrives here, instead of killing the demo on the spot.
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	go func() {
		sig := <-sigs
		stopAll()
		fmt.Fprintf(os.Stderr, "demo: %v: stopped\n", sig)
		os.Exit(128 + int(sig.(syscall.Signal)))
	}()
	err := run()
	stopAll()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// child is a started program.
type child struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

var (
	childMu  sync.Mutex
	children []*child
)

// start runs bin/NAME with its log going to LOGDIR/NAME.log.
func start(logDir, name string, args ...string) (*child, error) {
	cmd := exec.Command(filepath.Join("bin", name), args...)
	log, err := os.Create(filepath.Join(logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = log, log
	return launch(cmd)
}

// launch starts cmd as a child that stopAll stops and that the kernel
// stops if the demo dies.
func launch(cmd *exec.Cmd) (*child, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	childMu.Lock()
	defer childMu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(c.exited) }()
	children = append(children, c)
	return c, nil
}

// stop ends the child with SIGTERM, or SIGKILL if it takes too long.
func (c *child) stop() {
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(5 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
}

// stopAll stops every child started.
func stopAll() {
	childMu.Lock()
	defer childMu.Unlock()
	for _, c := range children {
		c.stop()
	}
}

// startListening starts bin/NAME listening on a free port (the flag -l
// ADDR, then args) and waits until it accepts connections. A port that was
// free a moment ago may have been taken meanwhile (by a test running beside
// the demo): then the child exits, and it is started again on another port.
// It returns the child and its address.
func startListening(logDir, name string, args ...string) (*child, string, error) {
	var last error
	for try := 0; try < 3; try++ {
		addr := freeAddr()
		c, err := start(logDir, name, append([]string{"-l", addr}, args...)...)
		if err != nil {
			return nil, "", err
		}
		if last = waitListening(c, addr); last == nil {
			return c, addr, nil
		}
	}
	return nil, "", fmt.Errorf("%s: %w (see %s)", name, last, filepath.Join(logDir, name+".log"))
}

// waitListening waits until addr accepts connections and c, which should
// be listening there, still runs (else something else answered).
func waitListening(c *child, addr string) error {
	for i := 0; i < 100; i++ {
		select {
		case <-c.exited:
			return fmt.Errorf("exited instead of listening on %s", addr)
		default:
		}
		if conn, err := net.Dial("tcp", addr); err == nil {
			conn.Close()
			// A child that cannot bind exits at once: give it that moment.
			select {
			case <-c.exited:
				return fmt.Errorf("exited instead of listening on %s", addr)
			case <-time.After(50 * time.Millisecond):
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on %s", addr)
}

// compare checks that every message the sink received is in the archive,
// byte for byte.
func compare(sinkDir, archiveDir string) error {
	archived := map[string]bool{}
	emls, _ := filepath.Glob(filepath.Join(archiveDir, "*.eml"))
	for _, e := range emls {
		b, err := os.ReadFile(e)
		if err != nil {
			return err
		}
		archived[string(b)] = true
	}
	delivered, _ := filepath.Glob(filepath.Join(sinkDir, "*.eml"))
	for _, d := range delivered {
		b, err := os.ReadFile(d)
		if err != nil {
			return err
		}
		if !archived[string(b)] {
			return fmt.Errorf("%s was delivered but is not in the archive", d)
		}
	}
	if len(delivered) != len(samples) || len(emls) != len(samples) {
		return fmt.Errorf("sent %d messages, sink has %d, archive has %d", len(samples), len(delivered), len(emls))
	}
	fmt.Printf("== check: all %d delivered messages are in the archive, byte for byte\n\n", len(delivered))
	return nil
}

type sample struct {
	what     string
	from     string
	rcpts    []string
	data     string
	pipeline bool
}

var samples = []sample{
	{"plain message, two recipients and a Bcc (dave)", "alice@example.org", []string{"bob@example.net", "carol@example.net", "dave@example.net"},
		"From: Alice <alice@example.org>\r\nTo: bob@example.net, carol@example.net\r\nSubject: Quarterly report\r\nMessage-ID: <demo-1@example.org>\r\n\r\nHello Bob and Carol,\r\nthe report is attached.\r\n", false},
	{"lines starting with a dot (dot-stuffed on the wire)", "alice@example.org", []string{"bob@example.net"},
		"From: alice@example.org\r\nSubject: dots\r\nMessage-ID: <demo-2@example.org>\r\n\r\n.hidden line\r\n..two dots\r\n.\r\nend\r\n", true},
	{"8-bit text and an encoded subject", "bob@example.net", []string{"alice@example.org"},
		"From: =?utf-8?q?Bj=C3=B6rn?= <bob@example.net>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?=\r\nMessage-ID: <demo-3@example.net>\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nSchöne Grüße, 東京からこんにちは\r\n", false},
	{"one recipient rejected by the server", "alice@example.org", []string{"bob@example.net", "reject-me@example.net"},
		"From: alice@example.org\r\nSubject: partly rejected\r\nMessage-ID: <demo-4@example.org>\r\n\r\nOnly Bob gets this.\r\n", true},
	{"null sender (a bounce)", "", []string{"alice@example.org"},
		"From: MAILER-DAEMON@example.net\r\nSubject: Undelivered Mail Returned to Sender\r\nMessage-ID: <demo-5@example.net>\r\n\r\nThis is a bounce.\r\n", true},
}

// send speaks SMTP to addr the way Postfix's smtp client does: EHLO, then
// (with pipeline) MAIL, RCPT... and DATA in one write.
func send(addr string, s sample) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	reply := func() (string, error) {
		var all string
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return all, err
			}
			all += l
			if len(l) < 4 || l[3] != '-' {
				return all, nil
			}
		}
	}
	expect := func(prefix string) error {
		rep, err := reply()
		if err != nil {
			return err
		}
		if !strings.HasPrefix(rep, prefix) {
			return fmt.Errorf("unexpected reply %q", rep)
		}
		return nil
	}
	if err := expect("220"); err != nil {
		return err
	}
	fmt.Fprintf(c, "EHLO demo.example\r\n")
	if err := expect("250"); err != nil {
		return err
	}
	cmds := []string{fmt.Sprintf("MAIL FROM:<%s>\r\n", s.from)}
	for _, r := range s.rcpts {
		cmds = append(cmds, fmt.Sprintf("RCPT TO:<%s>\r\n", r))
	}
	cmds = append(cmds, "DATA\r\n")
	if s.pipeline {
		fmt.Fprint(c, strings.Join(cmds, ""))
	}
	for _, cmd := range cmds {
		if !s.pipeline {
			fmt.Fprint(c, cmd)
		}
		rep, err := reply()
		if err != nil {
			return err
		}
		fmt.Printf("    > %s    < %s", cmd, rep)
	}
	var stuffed strings.Builder
	for _, line := range strings.SplitAfter(s.data, "\n") {
		if strings.HasPrefix(line, ".") {
			stuffed.WriteString(".")
		}
		stuffed.WriteString(line)
	}
	fmt.Fprint(c, stuffed.String()+".\r\n")
	rep, err := reply()
	fmt.Printf("    > (message, %d bytes)\r\n    < %s", len(s.data), rep)
	fmt.Fprint(c, "QUIT\r\n")
	return err
}

func run() error {
	// Relative, as the reader types the commands the steps show.
	const out = "demo-out"
	os.RemoveAll(out)
	archiveDir, sinkDir := filepath.Join(out, "archive"), filepath.Join(out, "sink")
	os.MkdirAll(sinkDir, 0o755)
	_, sinkAddr, err := startListening(out, "smtpsink", "-d", sinkDir, "--reject-rcpt", "reject")
	if err != nil {
		return err
	}
	px, proxyAddr, err := startListening(out, "proxy_archiver", "-s", sinkAddr, "-d", archiveDir)
	if err != nil {
		return err
	}
	fmt.Printf("\n== proxy_archiver on %s relaying to smtpsink on %s\n\n", proxyAddr, sinkAddr)
	for _, s := range samples {
		fmt.Printf("-- %s\n", s.what)
		if err := send(proxyAddr, s); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
	}
	if !*keep {
		px.stop() // its log is complete
	}

	fmt.Printf("\n== the archive: %s\n\n", archiveDir)
	ents, _ := os.ReadDir(archiveDir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	var firstJSON string
	for _, n := range names {
		fi, _ := os.Stat(filepath.Join(archiveDir, n))
		fmt.Printf("  %-58s %7d bytes\n", n, fi.Size())
		if strings.HasSuffix(n, ".json") && firstJSON == "" {
			firstJSON = n
		}
	}
	// Show the envelope of the partly rejected message: it records both
	// recipients and which one the server refused.
	for _, n := range names {
		if b, _ := os.ReadFile(filepath.Join(archiveDir, n)); strings.HasSuffix(n, ".json") && strings.Contains(string(b), "partly rejected") {
			firstJSON = n
		}
	}
	if firstJSON == "" {
		return fmt.Errorf("no item was archived")
	}
	b, _ := os.ReadFile(filepath.Join(archiveDir, firstJSON))
	fmt.Printf("\n== one envelope: %s\n\n%s\n", firstJSON, b)
	eml := strings.TrimSuffix(firstJSON, ".json") + ".eml"
	m, _ := os.ReadFile(filepath.Join(archiveDir, eml))
	fmt.Printf("== its message: %s\n\n%s\n", eml, m)
	if err := compare(sinkDir, archiveDir); err != nil {
		return err
	}
	ids, err := itemIDs(archiveDir)
	if err != nil {
		return err
	}
	if err := workflow(out, archiveDir, ids); err != nil {
		return err
	}
	abs, _ := filepath.Abs(out)
	fmt.Printf("\nEverything is under %s: archive/, what the sink received in sink/, the logs,\n"+
		"keys/, the proof bundle, the mbox and the tampered copy. Every step did what it should.\n", abs)
	if *keep {
		fmt.Printf("\nproxy_archiver still listens on %s (archive %s), the sink on %s: try\n"+
			"    swaks --server %s --from you@example.org --to bob@example.net\n"+
			"Press ^C to stop them.\n", proxyAddr, archiveDir, sinkAddr, proxyAddr)
		select {} // until a signal
	}
	return nil
}
