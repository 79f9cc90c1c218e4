package wrapper

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/postfix-archive/mailarchive/archive"
)

// copyBufSize is the one buffer a message streams through: memory stays
// bounded whatever the message size.
const copyBufSize = 256 << 10

// envNames are the delivery variables local(8) sets that go into the
// envelope's env, when present; CLIENT_* and SASL_* are taken by prefix.
var envNames = []string{
	"SENDER", "RECIPIENT", "ORIGINAL_RECIPIENT", "USER", "EXTENSION",
	"DOMAIN", "LOCAL", "ENVID",
}

var envPrefixes = []string{"CLIENT_", "SASL_"}

// deliveryEnv picks the delivery variables out of a process environment.
// A variable present with an empty value is kept: it is what Postfix said.
func deliveryEnv(environ []string) map[string]string {
	env := map[string]string{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if slices.Contains(envNames, k) || hasAnyPrefix(k, envPrefixes) {
			env[k] = v
		}
	}
	if len(env) == 0 {
		return nil
	}
	return env
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) && len(s) > len(p) {
			return true
		}
	}
	return false
}

// envelope builds the wrapper's envelope. mail_from and rcpt_to stay
// empty: at mailbox_command time Postfix gives the sender after its address
// rewriting and one recipient after alias expansion, not the MAIL FROM and
// the transaction's RCPT TO list the format defines, so both are recorded
// as they are, in env (SENDER, RECIPIENT, ORIGINAL_RECIPIENT), and not
// invented as SMTP fields. The outcome is not known when the item is
// committed (the delivery runs after it), so it is omitted too. queue_id
// is read from the message (msg: its bytes so far) by localQueueID.
func envelope(environ []string, msg io.ReaderAt) *archive.Envelope {
	env := deliveryEnv(environ)
	c := &archive.Client{
		Addr:  env["CLIENT_ADDRESS"],
		Name:  env["CLIENT_HOSTNAME"],
		Helo:  env["CLIENT_HELO"],
		Proto: env["CLIENT_PROTOCOL"],
		Auth:  env["SASL_USERNAME"],
	}
	if c.IsZero() {
		c = nil
	}
	return &archive.Envelope{
		Source:  archive.SourceWrapper,
		Client:  c,
		QueueID: localQueueID(msg),
		Env:     env,
	}
}

// onlyReader hides the source's WriterTo, so io.CopyBuffer uses our buffer.
type onlyReader struct{ io.Reader }

// archiveMessage streams stdin into a new item and commits it. It returns a
// read-only descriptor on the committed message, positioned at its first
// byte, for COMMAND's standard input. The descriptor is opened on the file
// this process created, before the commit renames it, so nothing (a filer
// moving the item, say) can come between the archived bytes and the bytes
// delivered.
func archiveMessage(c config, p IO) (*os.File, string, error) {
	log := slog.New(slog.NewTextHandler(p.Stderr, &slog.HandlerOptions{
		Level:       slog.LevelWarn,
		ReplaceAttr: dropTime,
	}))
	st, err := archive.Open(c.archiveDir, archive.Options{Logger: log})
	if err != nil {
		return nil, "", err
	}
	w, err := st.Create(c.tags...)
	if err != nil {
		return nil, "", err
	}
	id := w.ID()
	msg, err := w.Reopen()
	if err != nil {
		w.Abort()
		return nil, "", err
	}
	fail := func(err error) (*os.File, string, error) {
		msg.Close()
		w.Abort()
		return nil, "", err
	}
	buf := make([]byte, copyBufSize)
	if _, err := io.CopyBuffer(w, onlyReader{p.Stdin}, buf); err != nil {
		if w.Err() == nil {
			err = fmt.Errorf("read standard input: %w", err)
		}
		return fail(err)
	}
	if err := w.Commit(envelope(p.Environ, msg)); err != nil {
		return fail(err)
	}
	// The descriptor must show exactly the bytes committed.
	fi, err := msg.Stat()
	if err != nil {
		return fail(fmt.Errorf("archive: stat %s.eml: %w", id, err))
	}
	if fi.Size() != w.Size() {
		msg.Close()
		return nil, "", fmt.Errorf("archive: %s.eml is %d bytes, wrote %d", id, fi.Size(), w.Size())
	}
	return msg, id, nil
}

// dropTime removes the time from log lines: Postfix stamps the command's
// output itself, and formatting local time would read the caller's TZ.
func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}
