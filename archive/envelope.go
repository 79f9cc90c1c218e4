package archive

import (
	"bytes"
	"encoding/json"
	"time"
)

// Version is the archive format version this package writes.
const Version = 1

// Sources: the hook point that archived an item.
const (
	SourceProxy   = "proxy"
	SourceMilter  = "milter"
	SourceWrapper = "wrapper"
)

// Outcomes: what the MTA said to the message.
const (
	OutcomeAccepted   = "accepted"
	OutcomeRejected   = "rejected"
	OutcomeTempfailed = "tempfailed"
	OutcomeUnknown    = "unknown"
)

// Envelope is the ID.json of an item (docs/archive-format.md). Fields a hook
// point cannot know are left zero and omitted from the JSON, never invented.
type Envelope struct {
	Version    int               `json:"version"`
	ID         string            `json:"id"`
	Source     string            `json:"source,omitempty"`
	ArchivedAt time.Time         `json:"archived_at"`
	Host       string            `json:"host,omitempty"`
	Tags       []string          `json:"tags,omitempty"`
	Peer       *Peer             `json:"peer,omitempty"`
	Client     *Client           `json:"client,omitempty"`
	Helo       string            `json:"helo,omitempty"`
	MailFrom   *MailFrom         `json:"mail_from,omitempty"`
	RcptTo     []Rcpt            `json:"rcpt_to,omitempty"`
	QueueID    string            `json:"queue_id,omitempty"`
	Reply      string            `json:"reply,omitempty"`
	Outcome    string            `json:"outcome,omitempty"`
	Macros     map[string]string `json:"macros,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
	Message    Message           `json:"message"`
	Recovered  bool              `json:"recovered,omitempty"`
}

// Peer is the TCP peer that talked to the archiver.
type Peer struct {
	Addr string `json:"addr"`
	Port int    `json:"port,omitempty"`
}

// Client is the original SMTP client, as far as the hook point knows it.
type Client struct {
	Addr   string `json:"addr,omitempty"`
	Port   int    `json:"port,omitempty"`
	Name   string `json:"name,omitempty"`
	Helo   string `json:"helo,omitempty"`
	Proto  string `json:"proto,omitempty"`
	Ident  string `json:"ident,omitempty"`
	Source string `json:"source,omitempty"`
	Auth   string `json:"auth,omitempty"`
}

// IsZero reports whether nothing is known of the client.
func (c *Client) IsZero() bool { return c == nil || *c == Client{} }

// MailFrom is the envelope sender. Addr is empty for the null sender <>.
type MailFrom struct {
	Addr   string   `json:"addr"`
	Params []string `json:"params,omitempty"`
}

// Rcpt is one RCPT TO of the transaction.
type Rcpt struct {
	Addr     string   `json:"addr"`
	Params   []string `json:"params,omitempty"`
	Accepted bool     `json:"accepted"`
	Reply    string   `json:"reply,omitempty"`
}

// Message describes the .eml. Size and SHA256 are always set by the store;
// the header fields only when the message has them and its header parses.
type Message struct {
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
	MessageID string `json:"message_id,omitempty"`
	Date      string `json:"date,omitempty"`
	From      string `json:"from,omitempty"`
	Subject   string `json:"subject,omitempty"`
}

// timeLayout is RFC 3339 in UTC with a fraction that is always there (Go's
// RFC3339Nano drops a zero fraction).
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// MarshalJSON writes archived_at in UTC, always with its fraction, and
// leaves <addr@example> readable (no HTML escaping).
func (e Envelope) MarshalJSON() ([]byte, error) {
	type plain Envelope // without this method
	v := struct {
		plain
		ArchivedAt string `json:"archived_at"`
	}{plain: plain(e), ArchivedAt: e.ArchivedAt.UTC().Format(timeLayout)}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}
