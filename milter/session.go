package milter

import (
	"bufio"
	"errors"
	"log/slog"
	"maps"
	"net"
	"net/textproto"
	"strconv"
	"sync"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/metrics"
)

// replyTempfail is the end-of-message answer when the archive cannot be
// committed. SMFIR_REPLYCODE (not SMFIR_TEMPFAIL) carries our own text, and
// go-milter counts it as Continue, so it keeps this session.
const replyTempfail = "451 4.3.0 Message archive unavailable, try again later"

// bufSize is the write buffer in front of the store writer: header fields
// arrive one small packet each.
const bufSize = 64 << 10

var errConnClosed = errors.New("milter: connection closed during the message")

// session is the Milter of one milter connection. The connection's data
// (client, HELO, connect-stage macros) lives as long as the connection; the
// transaction's from MAIL to end-of-message or abort.
type session struct {
	srv  *Server
	c    *conn
	log  *slog.Logger
	peer *archive.Peer

	mu         sync.Mutex // held by every callback; close takes it too
	closed     bool
	client     archive.Client // its Helo is the envelope's helo too
	connMacros map[string]string
	tx         *transaction
}

// transaction is one message.
type transaction struct {
	mailFrom *archive.MailFrom
	rcpts    []archive.Rcpt
	macros   map[string]string
	w        archive.Writer
	bw       *bufio.Writer
	err      error // the first archiving error; later writes are skipped
	eoh      bool  // the empty line after the header is written
	start    time.Time
}

var _ gomilter.Milter = (*session)(nil)

func newSession(s *Server, c *conn) *session {
	ss := &session{srv: s, c: c, log: s.log, connMacros: map[string]string{}}
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ss.peer = &archive.Peer{Addr: a.IP.String(), Port: a.Port}
	}
	return ss
}

// busy reports whether a message is in progress.
func (s *session) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tx != nil
}

// close aborts the message in progress: the connection is gone.
func (s *session) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.abortTx("connection closed")
}

func (s *session) abortTx(why string) {
	tx := s.tx
	s.tx = nil
	if tx == nil || tx.w == nil {
		return
	}
	if err := tx.w.Abort(); err != nil {
		s.log.Error("abort: cannot remove the partial message", "id", tx.w.ID(), "err", err)
	}
	s.srv.cfg.Metrics.MessageDone(metrics.OutcomeAborted, 0)
	s.log.Debug("message aborted", "id", tx.w.ID(), "queue_id", tx.macros["i"], "why", why)
}

// leadSpace reports whether header values come with their leading space:
// whether HDR_LEADSPC was negotiated (not merely offered, see protocolFor).
func (s *session) leadSpace() bool { return s.c.leadSpace }

// txn returns the current transaction, starting one if a client sends
// message data without MAIL.
func (s *session) txn() *transaction {
	if s.tx == nil {
		s.tx = &transaction{macros: map[string]string{}, start: time.Now()}
	}
	return s.tx
}

// writer returns the transaction's buffered writer, creating the item on
// first use, or nil once archiving has failed.
func (s *session) writer(tx *transaction) *bufio.Writer {
	if tx.err != nil {
		return nil
	}
	if tx.w == nil {
		if s.closed {
			tx.err = errConnClosed
			return nil
		}
		w, err := s.srv.cfg.Store.Create()
		if err != nil {
			tx.err = err
			return nil
		}
		tx.w = w
		tx.bw = bufio.NewWriterSize(w, bufSize)
	}
	return tx.bw
}

func (s *session) write(tx *transaction, p []byte) {
	bw := s.writer(tx)
	if bw == nil {
		return
	}
	if _, err := bw.Write(p); err != nil {
		tx.err = err
	}
}

// endHeader writes the empty line between header and body, once.
func (s *session) endHeader(tx *transaction) {
	if !tx.eoh {
		tx.eoh = true
		s.write(tx, []byte("\r\n"))
	}
}

func (s *session) Connect(host string, family string, port uint16, addr net.IP, m *gomilter.Modifier) (gomilter.Response, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.abortTx("new connect")
	s.client = archive.Client{Name: host, Port: int(port)}
	if addr != nil {
		s.client.Addr = addr.String()
	}
	s.connMacros = map[string]string{}
	maps.Copy(s.connMacros, m.Macros)
	return gomilter.RespContinue, nil
}

func (s *session) Helo(name string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.client.Helo = name
	maps.Copy(s.connMacros, m.Macros)
	return gomilter.RespContinue, nil
}

func (s *session) MailFrom(from string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.abortTx("new MAIL")
	tx := s.txn()
	tx.mailFrom = &archive.MailFrom{Addr: from, Params: s.c.tap.takeArgs()}
	maps.Copy(tx.macros, m.Macros)
	return gomilter.RespContinue, nil
}

func (s *session) RcptTo(rcptTo string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx := s.txn()
	tx.rcpts = append(tx.rcpts, archive.Rcpt{Addr: rcptTo, Params: s.c.tap.takeArgs(), Accepted: true})
	maps.Copy(tx.macros, m.Macros)
	return gomilter.RespContinue, nil
}

func (s *session) Header(name string, value string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx := s.txn()
	f := FormatHeaderField(name, value, s.leadSpace())
	s.write(tx, append(f, '\r', '\n'))
	return gomilter.RespContinue, nil
}

func (s *session) Headers(h textproto.MIMEHeader, m *gomilter.Modifier) (gomilter.Response, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx := s.txn()
	maps.Copy(tx.macros, m.Macros)
	s.endHeader(tx)
	return gomilter.RespContinue, nil
}

func (s *session) BodyChunk(chunk []byte, m *gomilter.Modifier) (gomilter.Response, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx := s.txn()
	s.endHeader(tx)
	s.write(tx, chunk)
	return gomilter.RespContinue, nil
}

// Body is end-of-message: commit the item, then answer. Continue (not
// Accept) lets Postfix accept the message and keeps go-milter's session.
func (s *session) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx := s.txn()
	s.tx = nil
	maps.Copy(tx.macros, m.Macros)
	s.endHeader(tx)
	met := s.srv.cfg.Metrics
	commitStart := time.Now()
	bw := s.writer(tx)
	if bw != nil {
		if err := bw.Flush(); err != nil {
			tx.err = err
		}
	}
	env := s.envelope(tx)
	// The proxy's keys (README, "Logs"): the milter never sees the
	// recipients smtpd refused, so it has no rcpts_refused.
	attrs := []any{
		"queue_id", env.QueueID,
		"client", s.client.Addr,
		"from", mailAddr(tx.mailFrom),
		"rcpts_accepted", len(tx.rcpts),
	}
	if tx.err == nil {
		tx.err = tx.w.Commit(env)
	}
	if tx.err == nil {
		met.CommitObserved(time.Since(commitStart))
		met.MessageDone(metrics.OutcomeAccepted, env.Message.Size)
		s.log.Info("message archived", append(attrs, "id", env.ID, "size", env.Message.Size, "outcome", archive.OutcomeAccepted,
			"duration", time.Since(tx.start).Round(time.Millisecond))...)
		if s.srv.cfg.AddHeader {
			if err := m.AddHeader("X-Archive-ID", s.headerValue(env.ID)); err != nil {
				return nil, err // the connection is broken: nothing to answer
			}
		}
		return gomilter.RespContinue, nil
	}

	if !errors.Is(tx.err, errConnClosed) {
		met.ArchiveFailed(tx.err)
	}
	policy := s.srv.cfg.OnArchiveError
	var size int64
	if tx.w != nil {
		size = tx.w.Size()
		attrs = append(attrs, "id", tx.w.ID())
		if policy == archive.PolicyPass {
			// The message goes through: keep what was written under tmp/,
			// where the recovery sweep makes it an item marked recovered.
			tx.w.Close()
			attrs = append(attrs, "kept_for_recovery", size > 0)
		} else if err := tx.w.Abort(); err != nil {
			// The client retries: the next attempt is archived afresh.
			s.log.Error("cannot remove the partial message", "id", tx.w.ID(), "err", err)
		}
	}
	attrs = append(attrs, "size", size, "duration", time.Since(tx.start).Round(time.Millisecond), "err", tx.err)
	if policy == archive.PolicyPass {
		met.MessageDone(metrics.OutcomeNotArchived, 0)
		s.log.Error("MESSAGE NOT ARCHIVED: archive failed, message accepted anyway (--on-archive-error=accept)",
			append(attrs, "outcome", metrics.OutcomeNotArchived)...)
		return gomilter.RespContinue, nil
	}
	met.MessageDone(metrics.OutcomeTempfailed, 0)
	s.log.Error("message not archived: archive failed, answered tempfail",
		append(attrs, "outcome", archive.OutcomeTempfailed)...)
	return gomilter.NewResponseStr(byte(gomilter.ActReplyCode), replyTempfail), nil
}

// headerValue is the value to send for an added header: with
// HDR_LEADSPC the MTA adds no space after the colon, so we send it.
func (s *session) headerValue(v string) string {
	if s.leadSpace() {
		return " " + v
	}
	return v
}

func (s *session) Abort(m *gomilter.Modifier) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.abortTx("aborted by the MTA")
	return nil
}

// envelope builds the item's envelope from the connection and the
// transaction; the store fills in ID, time, host and message fields.
func (s *session) envelope(tx *transaction) *archive.Envelope {
	macros := make(map[string]string, len(s.connMacros)+len(tx.macros))
	maps.Copy(macros, s.connMacros)
	maps.Copy(macros, tx.macros)

	client := s.client
	if client.Addr == "" {
		client.Addr = macros["{client_addr}"]
	}
	if client.Name == "" {
		client.Name = macros["{client_name}"]
	}
	if client.Port == 0 {
		client.Port, _ = strconv.Atoi(macros["{client_port}"])
	}
	client.Auth = macros["{auth_authen}"]

	env := &archive.Envelope{
		Source:   archive.SourceMilter,
		Peer:     s.peer,
		Helo:     s.client.Helo,
		MailFrom: tx.mailFrom,
		RcptTo:   tx.rcpts,
		QueueID:  macros["i"],
		Outcome:  archive.OutcomeAccepted,
	}
	if !client.IsZero() {
		env.Client = &client
	}
	if len(macros) > 0 {
		env.Macros = macros
	}
	return env
}

func mailAddr(m *archive.MailFrom) string {
	if m == nil {
		return ""
	}
	return m.Addr
}
