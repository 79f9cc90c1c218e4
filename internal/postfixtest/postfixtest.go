// Package postfixtest starts private, throw-away Postfix instances from Go
// tests: the end-to-end tests of the proxy, the milter and the wrapper run
// real Postfix, not a model of it.
//
// Each instance lives in its own t.TempDir() (config, queue, data
// directories and maillog), listens for SMTP on its own loopback port and is
// stopped, with every process it started, when the test ends. Instances in
// different tests and different test binaries run side by side.
//
// How an instance is started and stopped, and why:
//
//   - Start runs "postfix -c DIR start" and waits for it. That runs
//     postfix-script, which checks and creates the queue directories and then
//     runs "master -w": the master daemonizes (setsid, so it leads its own
//     session) and the foreground process exits only after the master has
//     read its configuration and opened its listeners, with the master's
//     status. So when Start returns, the SMTP port accepts connections.
//     No tty is needed (seen on Debian 12 with Postfix 3.7): what needs one is
//     seeing Postfix's errors, which go to stderr only when stderr is a tty
//     and otherwise only to the maillog; so a failed start reports the
//     maillog. "start-fg" was not used: it keeps "master -s" attached to our
//     process and, when not PID 1, gives nothing that "start" does not.
//   - Stop runs "postfix -c DIR abort", which sends the master the same
//     SIGTERM as "postfix stop" (the master then signals its whole process
//     group and exits) but without "stop"'s polling in whole seconds; then it
//     waits until no process of the master's session is left (children that
//     changed process group, e.g. under local(8), are in the same session),
//     and SIGKILLs what is still there after a grace period. It only ever
//     signals processes whose session ID is the master's PID.
//
// Things about Postfix the end-to-end tests need to know:
//
//   - The smtp(8) client folds lines longer than smtp_line_length_limit (998
//     in 3.7) by inserting CRLF SPACE: a message with a long line reaches a
//     content_filter or a relay changed. Set smtp_line_length_limit = 0 (in
//     main.cf or as -o on the transport) when bytes must pass unchanged.
//   - A client on 127.0.0.1 counts as local for header rewriting with the
//     default local_header_rewrite_clients (permit_inet_interfaces): Postfix
//     adds Date:, Message-Id:, From: at the end of the headers. The base
//     main.cf here empties it (see mainCF). Mail from sendmail is local
//     whatever that setting says.
//   - smtpd prepends exactly one "Received: from ... by mx.test.example
//     (Postfix) with ESMTP id QUEUEID for <rcpt>; DATE" header (folded over
//     several lines) before the message as received; pickup (sendmail) adds
//     "Received: by mx.test.example (Postfix, from userid 0) id QUEUEID; DATE".
//   - Every directory above the queue directory must be searchable by user
//     postfix (Go's t.TempDir() is 0700); data_directory must belong to
//     postfix (master.lock is there); the maillog file must be under
//     maillog_file_prefixes or the start is fatal.
//   - Postfix daemons use paths relative to the queue directory for their
//     sockets, so long t.TempDir() paths are fine for them; a milter's
//     unix:/path socket must still fit in 107 bytes.
//   - "postfix reload" returns at once; the master rereads its configuration
//     when it handles SIGHUP. Reload waits for the master's "reload" log line.
//   - postqueue/postsuper/sendmail with -c/-C DIR work as root on a
//     configuration directory that is not the default one; the set-gid
//     programs would refuse it for other users unless it is listed in the
//     default main.cf's alternate_config_directories.
package postfixtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Programs used from the Postfix package (Debian paths).
const (
	PostfixCmd   = "/usr/sbin/postfix"
	PostconfCmd  = "/usr/sbin/postconf"
	PostqueueCmd = "/usr/sbin/postqueue"
	SendmailCmd  = "/usr/sbin/sendmail"
)

// cmdTimeout bounds each Postfix command run by the harness.
const cmdTimeout = 60 * time.Second

// onCI reports whether the tests run under CI, where a missing peer is a
// failure, never a skip.
func onCI() bool { return os.Getenv("CI") == "true" }

// SkipOrFatal skips the test, or fails it under CI (CI=true), where a missing
// peer or privilege must never pass as a skip.
func SkipOrFatal(t testing.TB, format string, args ...any) {
	t.Helper()
	if onCI() {
		t.Fatalf(format+" (CI=true: not skipping)", args...)
	}
	t.Skipf(format, args...)
}

// Require skips the test unless a private Postfix can run here: Postfix
// installed and the test running as root. Under CI (env CI=true) it fails
// the test instead of skipping it.
func Require(t testing.TB) {
	t.Helper()
	for _, p := range []string{PostfixCmd, PostconfCmd, PostqueueCmd, SendmailCmd} {
		if _, err := os.Stat(p); err != nil {
			SkipOrFatal(t, "postfixtest: Postfix not installed (%v); run scripts/install-peers.sh", err)
		}
	}
	if os.Geteuid() != 0 {
		SkipOrFatal(t, "postfixtest: a private Postfix instance needs root")
	}
}

// RequireCommand skips the test (fails it under CI) unless the named program
// (e.g. "swaks", "miltertest", "python3") is in PATH, and returns its path.
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		SkipOrFatal(t, "postfixtest: %s not found (%v); run scripts/install-peers.sh", name, err)
	}
	return p
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("postfixtest: free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// FreeAddr returns "127.0.0.1:PORT" with a port from FreePort.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(FreePort(t))
}

// Options configure an instance. The zero value gives a working instance
// that accepts mail from 127.0.0.0/8 on a free port.
type Options struct {
	// MainCF lines are appended to the generated main.cf; in Postfix a
	// later setting of a parameter overrides an earlier one.
	MainCF []string
	// MasterCF entries are appended to master.cf; continuation lines start
	// with whitespace. An entry with the same service name and type as a
	// built-in one (e.g. "cleanup unix") replaces it.
	MasterCF []string
	// SMTPPort is the port of the smtpd listener on 127.0.0.1 (0: a free
	// one).
	SMTPPort int
	// RelayTo, "host:port", sends all non-local mail there:
	// default_transport = smtp:[host]:port, with smtp_host_lookup = native.
	RelayTo string
	// MyDestination is mydestination (default "$myhostname, localhost").
	MyDestination string
}

// Instance is a running private Postfix.
type Instance struct {
	base     string
	confDir  string
	queueDir string
	dataDir  string
	logFile  string
	smtpPort int

	stopOnce sync.Once
	stopErr  error
	mu       sync.Mutex
}

// Start creates and starts an instance for t, and stops it when t ends. It
// calls Require first. On failure it fails t with the maillog contents.
func Start(t testing.TB, opts Options) *Instance {
	t.Helper()
	Require(t)
	base := t.TempDir()
	if err := makeSearchable(base); err != nil {
		t.Fatalf("postfixtest: %v", err)
	}
	inst := &Instance{
		base:     base,
		confDir:  filepath.Join(base, "conf"),
		queueDir: filepath.Join(base, "queue"),
		dataDir:  filepath.Join(base, "data"),
		logFile:  filepath.Join(base, "maillog"),
		smtpPort: opts.SMTPPort,
	}
	if inst.smtpPort == 0 {
		inst.smtpPort = FreePort(t)
	}
	if err := inst.writeConfig(opts); err != nil {
		t.Fatalf("postfixtest: %v", err)
	}
	// Registered before the start so a half-started instance is cleaned up
	// too; cleanups run before t.TempDir's removal (last in, first out).
	t.Cleanup(func() {
		if err := inst.Stop(); err != nil {
			t.Errorf("postfixtest: %v", err)
		}
		if t.Failed() {
			t.Logf("postfixtest: maillog of %s:\n%s", inst.confDir, tail(inst.Log(), 300))
		}
	})
	if _, err := inst.postfix("start"); err != nil {
		// Without a tty, Postfix writes why only to the maillog.
		t.Fatalf("postfixtest: %v\nmaillog:\n%s", err, inst.Log())
	}
	if err := waitListening(inst.SMTPAddr(), 10*time.Second); err != nil {
		t.Fatalf("postfixtest: %v\nmaillog:\n%s", err, inst.Log())
	}
	return inst
}

// makeSearchable chmods dir and its parents created for the test (up to the
// system temp directory) to 0755, and checks that every other ancestor is
// searchable by others: Postfix's daemons run as user postfix and chdir into
// the queue directory.
func makeSearchable(dir string) error {
	tmp := filepath.Clean(os.TempDir())
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if d != tmp && strings.HasPrefix(d, tmp+string(filepath.Separator)) {
			if err := os.Chmod(d, 0o755); err != nil {
				return err
			}
		} else {
			fi, err := os.Stat(d)
			if err != nil {
				return err
			}
			if fi.Mode().Perm()&0o001 == 0 {
				return fmt.Errorf("%s is not searchable by user postfix (mode %v): set TMPDIR to a world-searchable directory", d, fi.Mode().Perm())
			}
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

func (i *Instance) writeConfig(opts Options) error {
	for _, d := range []string{i.confDir, i.queueDir, i.dataDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	pf, err := user.Lookup("postfix")
	if err != nil {
		return fmt.Errorf("user postfix: %w", err)
	}
	uid, _ := strconv.Atoi(pf.Uid)
	gid, _ := strconv.Atoi(pf.Gid)
	if err := os.Chown(i.dataDir, uid, gid); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(i.confDir, "main.cf"), []byte(buildMainCF(i.base, opts)), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(i.confDir, "master.cf"), []byte(buildMasterCF(i.smtpPort, opts)), 0o644)
}

func waitListening(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("smtpd not listening on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ConfigDir is the instance's configuration directory (main.cf, master.cf).
func (i *Instance) ConfigDir() string { return i.confDir }

// BaseDir is the directory holding everything of the instance.
func (i *Instance) BaseDir() string { return i.base }

// QueueDir is the instance's queue_directory.
func (i *Instance) QueueDir() string { return i.queueDir }

// LogFile is the path of the instance's maillog.
func (i *Instance) LogFile() string { return i.logFile }

// SMTPPort is the port of the instance's smtpd on 127.0.0.1.
func (i *Instance) SMTPPort() int { return i.smtpPort }

// SMTPAddr is "127.0.0.1:PORT" of the instance's smtpd.
func (i *Instance) SMTPAddr() string { return "127.0.0.1:" + strconv.Itoa(i.smtpPort) }

// run runs a Postfix command with a timeout and returns its output.
func (i *Instance) run(stdin []byte, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = strings.NewReader(string(stdin))
	}
	// Stdout alone is the result: Postfix programs print warnings on
	// stderr, which must not end up in e.g. "postqueue -j" output.
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err,
			strings.TrimSpace(stdout.String()+"\n"+stderr.String()))
	}
	return stdout.String(), nil
}

func (i *Instance) postfix(args ...string) (string, error) {
	return i.run(nil, PostfixCmd, append([]string{"-c", i.confDir}, args...)...)
}

// Postconf runs "postconf -c DIR ARGS..." and returns its output without the
// trailing newline, e.g. Postconf("-h", "myhostname"), or
// Postconf("-e", "smtpd_milters = inet:127.0.0.1:9999") followed by Reload.
func (i *Instance) Postconf(args ...string) (string, error) {
	out, err := i.run(nil, PostconfCmd, append([]string{"-c", i.confDir}, args...)...)
	return strings.TrimRight(out, "\n"), err
}

// Flush asks Postfix to retry every deferred message now (postqueue -f).
func (i *Instance) Flush() error {
	_, err := i.run(nil, PostqueueCmd, "-c", i.confDir, "-f")
	return err
}

// Log returns the maillog contents ("" if there is none yet).
func (i *Instance) Log() string {
	b, _ := os.ReadFile(i.logFile)
	return string(b)
}

// WaitLog waits until the maillog contains substr.
func (i *Instance) WaitLog(ctx context.Context, substr string) error {
	for {
		if strings.Contains(i.Log(), substr) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("postfixtest: %q not in maillog: %w", substr, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Sendmail submits msg with Postfix's sendmail -C DIR ARGS... (e.g.
// {"-f", "alice@example.org", "-i", "bob@example.net"}) and fails t if it
// exits non-zero.
func (i *Instance) Sendmail(t testing.TB, args []string, msg []byte) {
	t.Helper()
	if msg == nil {
		msg = []byte{}
	}
	if _, err := i.run(msg, SendmailCmd, append([]string{"-C", i.confDir}, args...)...); err != nil {
		t.Fatalf("postfixtest: %v\nmaillog:\n%s", err, tail(i.Log(), 50))
	}
}

// Reload makes the master reread main.cf and master.cf (postfix reload) and
// waits until it has done so.
func (i *Instance) Reload() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	before := strings.Count(i.Log(), reloadMark)
	if _, err := i.postfix("reload"); err != nil {
		return fmt.Errorf("postfixtest: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for strings.Count(i.Log(), reloadMark) <= before {
		select {
		case <-ctx.Done():
			return fmt.Errorf("postfixtest: master did not log a reload: %w\n%s", ctx.Err(), tail(i.Log(), 20))
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// reloadMark is what master(8) logs when it has reread its configuration:
// "postfix/master[PID]: reload -- version 3.7.11, configuration DIR".
const reloadMark = "]: reload -- version "

// Stop stops the instance and every process it started; Start registers it
// with t.Cleanup, so tests call it only to stop an instance early. It is
// safe to call more than once.
func (i *Instance) Stop() error {
	i.stopOnce.Do(func() { i.stopErr = i.stop() })
	return i.stopErr
}

func (i *Instance) stop() error {
	pid := i.masterPID()
	if pid <= 0 {
		return nil // never started
	}
	if masterAlive(pid) {
		// Same SIGTERM as "postfix stop", without its one-second polling.
		if out, err := i.postfix("abort"); err != nil && masterAlive(pid) {
			return fmt.Errorf("postfix -c %s abort: %v: %s", i.confDir, err, out)
		}
	}
	return reapSession(pid, 3*time.Second, 10*time.Second)
}

// masterPID reads the master's PID from queue/pid/master.pid; 0 if none.
func (i *Instance) masterPID() int {
	b, err := os.ReadFile(filepath.Join(i.queueDir, "pid", "master.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}

func tail(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) <= n {
		return s
	}
	return "...\n" + strings.Join(lines[len(lines)-n:], "")
}
