package smtpsink

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"time"
)

// Message is one accepted message: its envelope (the NNNNNN.json file) and
// its content (the NNNNNN.eml file).
type Message struct {
	// Seq is the NNNNNN of the file names.
	Seq int `json:"seq"`
	// ID is the queue ID given in "250 2.0.0 Ok: queued as ID".
	ID         string    `json:"id"`
	Time       time.Time `json:"time"`
	RemoteAddr string    `json:"remote_addr"`
	Helo       string    `json:"helo"`
	// XForward holds the XFORWARD attributes sent before this transaction,
	// decoded from xtext, keyed by upper-case name (NAME, ADDR, ...).
	XForward map[string]string `json:"xforward,omitempty"`
	// MailFrom is the reverse-path without brackets ("" for <>).
	MailFrom   string   `json:"mail_from"`
	MailParams []string `json:"mail_params,omitempty"`
	// Rcpts are the accepted recipients, in order.
	Rcpts []Rcpt `json:"rcpts"`
	// Size is the length of Data.
	Size int64 `json:"size"`

	// Path is the NNNNNN.eml file.
	Path string `json:"-"`
	// Data is the content of Path, as returned by Messages and WaitFor.
	Data []byte `json:"-"`
}

// Rcpt is one accepted RCPT TO.
type Rcpt struct {
	Addr   string   `json:"addr"`
	Params []string `json:"params,omitempty"`
}

// RcptAddrs returns the recipients' addresses.
func (m *Message) RcptAddrs() []string {
	a := make([]string, len(m.Rcpts))
	for i, r := range m.Rcpts {
		a[i] = r.Addr
	}
	return a
}

var jsonName = regexp.MustCompile(`^([0-9]{6,})\.json$`)

// scanDir returns the highest message number in dir and how many messages
// it holds.
func scanDir(dir string) (seq, count int, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, fmt.Errorf("smtpsink: %w", err)
	}
	for _, e := range ents {
		m := jsonName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		n, err := strconv.Atoi(m[1])
		if err != nil {
			continue
		}
		count++
		seq = max(seq, n)
	}
	return seq, count, nil
}

// commit gives the message received into tmp its number and ID, renames tmp
// to NNNNNN.eml and writes NNNNNN.json. It fills msg.Seq, msg.ID, msg.Path.
func (s *Server) commit(tmp string, msg *Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	seq := s.seq + 1
	base := filepath.Join(s.Dir, fmt.Sprintf("%06d", seq))
	msg.Seq = seq
	msg.ID = newQueueID(msg.Time, seq)
	msg.Path = base + ".eml"
	if err := os.Chmod(tmp, 0o644); err != nil {
		return fmt.Errorf("smtpsink: %w", err)
	}
	if err := os.Rename(tmp, msg.Path); err != nil {
		return fmt.Errorf("smtpsink: %w", err)
	}
	js, err := json.MarshalIndent(msg, "", "  ")
	if err != nil {
		os.Remove(msg.Path)
		return fmt.Errorf("smtpsink: encode envelope: %w", err)
	}
	js = append(js, '\n')
	// Write the envelope under a temporary name and rename it, so that a
	// reader never sees a partial .json.
	jtmp := base + ".json.tmp"
	if err := os.WriteFile(jtmp, js, 0o644); err != nil {
		os.Remove(jtmp)
		os.Remove(msg.Path)
		return fmt.Errorf("smtpsink: %w", err)
	}
	if err := os.Rename(jtmp, base+".json"); err != nil {
		os.Remove(jtmp)
		os.Remove(msg.Path)
		return fmt.Errorf("smtpsink: %w", err)
	}
	s.seq = seq
	s.count++
	close(s.changed)
	s.changed = make(chan struct{})
	return nil
}

// newQueueID makes an ID shaped like a Postfix short queue ID: upper-case
// hex, the microseconds of the arrival time then a counter (Postfix uses the
// queue file's inode number).
func newQueueID(t time.Time, seq int) string {
	return fmt.Sprintf("%05X%05X", t.Nanosecond()/1000, seq&0xFFFFF)
}

// Messages returns every message in Dir, in the order they were accepted,
// with Data loaded.
func (s *Server) Messages() ([]Message, error) {
	return ReadDir(s.Dir)
}

// ReadDir returns the messages a sink stored in dir, in order, with Data
// loaded. It is for reading a sink's directory from another process.
func ReadDir(dir string) ([]Message, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("smtpsink: %w", err)
	}
	type numbered struct {
		n    int
		name string
	}
	var files []numbered
	for _, e := range ents {
		m := jsonName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		n, err := strconv.Atoi(m[1])
		if err != nil {
			continue
		}
		files = append(files, numbered{n, e.Name()})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].n < files[j].n })
	msgs := make([]Message, 0, len(files))
	for _, f := range files {
		js, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			return nil, fmt.Errorf("smtpsink: %w", err)
		}
		var m Message
		if err := json.Unmarshal(js, &m); err != nil {
			return nil, fmt.Errorf("smtpsink: %s: %w", f.name, err)
		}
		m.Path = filepath.Join(dir, f.name[:len(f.name)-len(".json")]+".eml")
		if m.Data, err = os.ReadFile(m.Path); err != nil {
			return nil, fmt.Errorf("smtpsink: %w", err)
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// WaitFor waits until Dir holds at least n messages and returns them all (it
// may be more than n). When ctx ends first, it returns the messages so far
// and an error saying how many of n arrived.
func (s *Server) WaitFor(ctx context.Context, n int) ([]Message, error) {
	for {
		s.mu.Lock()
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		count, changed := s.count, s.changed
		s.mu.Unlock()
		if count >= n {
			return s.Messages()
		}
		select {
		case <-changed:
		case <-ctx.Done():
			msgs, _ := s.Messages()
			return msgs, fmt.Errorf("smtpsink: %d of %d messages: %w", count, n, ctx.Err())
		}
	}
}
