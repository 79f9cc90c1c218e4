package postfixtest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// mainCF is the base main.cf. %[1]s is the instance's base directory.
//
// Why each non-obvious line is there:
//   - maillog_file: no syslog in containers or CI; Postfix 3.4+ writes its
//     log through the postlog service (postlogd) to this file. A path outside
//     maillog_file_prefixes is fatal at start.
//   - local_header_rewrite_clients empty: the tests' clients all connect from
//     127.0.0.1, which the default (permit_inet_interfaces) treats as local
//     submission: Postfix would then add missing Date:, Message-Id: (and
//     From:/To:) headers at the end of the header section and qualify bare
//     addresses in headers, so the delivered bytes would no longer end with
//     the bytes sent. Empty makes them "remote", like mail arriving at an MX:
//     only Received: is prepended. Mail from sendmail/pickup is always local
//     and still gets those headers.
//   - smtpd_error_sleep_time, in_flow_delay 0: Postfix otherwise sleeps 1s
//     after each rejected command and throttles fast local senders.
//   - queue_run_delay/minimal_backoff_time/maximal_backoff_time: a deferred
//     message is retried within seconds instead of 5 to 67 minutes.
//   - biff = no: local(8) would send a UDP packet to comsat for every
//     delivery.
const mainCF = `# Written by internal/postfixtest for one test's private instance.
compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.test.example
mydomain = test.example
myorigin = $myhostname
mydestination = %[2]s
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
smtpd_banner = $myhostname ESMTP Postfix (postfixtest)
smtpd_relay_restrictions = permit_mynetworks, reject
local_header_rewrite_clients =
smtpd_error_sleep_time = 0
in_flow_delay = 0
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 4s
delay_warning_time = 0
smtp_connect_timeout = 2s
lmtp_connect_timeout = 2s
smtp_host_lookup = native
lmtp_host_lookup = native
biff = no
`

// defaultMyDestination is mydestination when Options.MyDestination is empty:
// Postfix's own default minus $mydomain lookups.
const defaultMyDestination = "$myhostname, localhost"

// masterServices are the services every instance runs, all with chroot "n"
// (a chroot would need copies of /etc files inside the queue directory).
// The columns are those of Debian's master.cf.proto.
var masterServices = []string{
	"pickup    unix  n       -       n       60      1       pickup",
	"cleanup   unix  n       -       n       -       0       cleanup",
	"qmgr      unix  n       -       n       300     1       qmgr",
	"tlsmgr    unix  -       -       n       1000?   1       tlsmgr",
	"rewrite   unix  -       -       n       -       -       trivial-rewrite",
	"bounce    unix  -       -       n       -       0       bounce",
	"defer     unix  -       -       n       -       0       bounce",
	"trace     unix  -       -       n       -       0       bounce",
	"verify    unix  -       -       n       -       1       verify",
	"flush     unix  n       -       n       1000?   0       flush",
	"proxymap  unix  -       -       n       -       -       proxymap",
	"proxywrite unix -       -       n       -       1       proxymap",
	"smtp      unix  -       -       n       -       -       smtp",
	"relay     unix  -       -       n       -       -       smtp",
	"showq     unix  n       -       n       -       -       showq",
	"error     unix  -       -       n       -       -       error",
	"retry     unix  -       -       n       -       -       error",
	"discard   unix  -       -       n       -       -       discard",
	"local     unix  -       n       n       -       -       local",
	"virtual   unix  -       n       n       -       -       virtual",
	"lmtp      unix  -       -       n       -       -       lmtp",
	"anvil     unix  -       -       n       -       1       anvil",
	"scache    unix  -       -       n       -       1       scache",
	"postlog   unix-dgram n  -       n       -       1       postlogd",
}

// buildMainCF returns the main.cf text for an instance in base.
func buildMainCF(base string, opts Options) string {
	var b strings.Builder
	dest := opts.MyDestination
	if dest == "" {
		dest = defaultMyDestination
	}
	fmt.Fprintf(&b, mainCF, base, dest)
	if opts.RelayTo != "" {
		host, port := splitHostPort(opts.RelayTo)
		next := "[" + host + "]"
		if port != "" {
			next += ":" + port
		}
		// The explicit next hop in default_transport wins over relayhost;
		// relayhost is set too so that "relay"-style lookups agree.
		fmt.Fprintf(&b, "default_transport = smtp:%s\nrelayhost = %s\n", next, next)
	}
	if len(opts.MainCF) > 0 {
		b.WriteString("# Options.MainCF\n")
		for _, l := range opts.MainCF {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return dedupeMainCF(b.String())
}

var paramName = regexp.MustCompile(`^([A-Za-z0-9_.-]+)[ \t]*=`)

// dedupeMainCF keeps only the last setting of each parameter. Postfix would
// use the last one anyway, but every Postfix program then warns "overriding
// earlier entry", on stderr (breaking "postqueue -j" output read together
// with stderr) and in the maillog.
func dedupeMainCF(text string) string {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	// Logical lines: a line starting with whitespace continues the one
	// before (postconf(5)).
	type logical struct {
		name  string
		lines []string
	}
	var ls []logical
	for _, l := range lines {
		if l != "" && (l[0] == ' ' || l[0] == '\t') && len(ls) > 0 && ls[len(ls)-1].name != "" {
			ls[len(ls)-1].lines = append(ls[len(ls)-1].lines, l)
			continue
		}
		var name string
		if m := paramName.FindStringSubmatch(l); m != nil {
			name = m[1]
		}
		ls = append(ls, logical{name, []string{l}})
	}
	last := map[string]int{}
	for i, l := range ls {
		if l.name != "" {
			last[l.name] = i
		}
	}
	var b strings.Builder
	for i, l := range ls {
		if l.name != "" && last[l.name] != i {
			fmt.Fprintf(&b, "# %s: set again below\n", l.name)
			continue
		}
		for _, x := range l.lines {
			b.WriteString(x)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// splitHostPort is net.SplitHostPort that tolerates a missing port and
// brackets already present.
func splitHostPort(addr string) (host, port string) {
	addr = strings.TrimSpace(addr)
	if i := strings.LastIndexByte(addr, ':'); i >= 0 && !strings.HasSuffix(addr, "]") {
		if _, err := strconv.Atoi(addr[i+1:]); err == nil {
			host, port = addr[:i], addr[i+1:]
		}
	}
	if host == "" {
		host = addr
	}
	return strings.Trim(host, "[]"), port
}

// masterEntry is one logical master.cf line: the first physical line and its
// continuation lines.
type masterEntry struct {
	lines []string
}

// key is "service type", the pair that must be unique in master.cf.
func (e masterEntry) key() string {
	f := strings.Fields(e.lines[0])
	if len(f) < 2 {
		return e.lines[0]
	}
	return f[0] + " " + f[1]
}

// splitMasterEntries groups lines into entries: a line that starts with
// whitespace continues the previous entry (master(5)).
func splitMasterEntries(lines []string) []masterEntry {
	var es []masterEntry
	for _, l := range lines {
		if strings.TrimSpace(l) == "" || strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		if (l[0] == ' ' || l[0] == '\t') && len(es) > 0 {
			es[len(es)-1].lines = append(es[len(es)-1].lines, l)
			continue
		}
		es = append(es, masterEntry{lines: []string{l}})
	}
	return es
}

// buildMasterCF returns master.cf: the SMTP listener, the default services,
// then opts.MasterCF. An extra entry with the same service name and type as
// a default one replaces the default (master(8) refuses duplicates).
func buildMasterCF(smtpPort int, opts Options) string {
	listener := fmt.Sprintf("127.0.0.1:%d inet n - n - - smtpd", smtpPort)
	defaults := splitMasterEntries(append([]string{listener}, masterServices...))
	extras := splitMasterEntries(opts.MasterCF)
	override := make(map[string]bool, len(extras))
	for _, e := range extras {
		override[e.key()] = true
	}
	var b strings.Builder
	b.WriteString("# Written by internal/postfixtest for one test's private instance.\n")
	for _, e := range defaults {
		if override[e.key()] {
			fmt.Fprintf(&b, "# %s: replaced by Options.MasterCF\n", e.key())
			continue
		}
		for _, l := range e.lines {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	if len(extras) > 0 {
		b.WriteString("# Options.MasterCF\n")
		for _, e := range extras {
			for _, l := range e.lines {
				b.WriteString(l)
				b.WriteByte('\n')
			}
		}
	}
	return b.String()
}

// LoadSnippet reads a file of main.cf or master.cf lines, as kept under
// postfix-examples/, for Options.MainCF or Options.MasterCF. Blank lines and
// lines whose first non-blank character is "#" are dropped (Postfix ignores
// them too); continuation lines (leading whitespace) are kept as they are.
// Each key of replace is replaced by its value everywhere in the file, longest
// keys first, so the documented configuration can be pointed at the test's
// ports and paths, e.g. {"127.0.0.1:10025": filterAddr}.
func LoadSnippet(path string, replace map[string]string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("postfixtest: load snippet: %w", err)
	}
	if len(replace) > 0 {
		keys := make([]string, 0, len(replace))
		for k := range replace {
			if k == "" {
				return nil, fmt.Errorf("postfixtest: load snippet %s: empty replacement key", path)
			}
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			if len(keys[i]) != len(keys[j]) {
				return len(keys[i]) > len(keys[j])
			}
			return keys[i] < keys[j]
		})
		pairs := make([]string, 0, 2*len(keys))
		for _, k := range keys {
			pairs = append(pairs, k, replace[k])
		}
		data = []byte(strings.NewReplacer(pairs...).Replace(string(data)))
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := strings.TrimRight(sc.Text(), " \t\r")
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		lines = append(lines, l)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("postfixtest: load snippet %s: %w", path, err)
	}
	return lines, nil
}
