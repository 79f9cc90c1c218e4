package archive_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
)

func openStore(t *testing.T) *archive.Store {
	t.Helper()
	s, err := archive.Open(t.TempDir(), archive.Options{Host: "archive.test", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// everyField is an envelope with every field the contract names set.
func everyField() *archive.Envelope {
	return &archive.Envelope{
		Source:     archive.SourceProxy,
		ArchivedAt: time.Date(2026, 11, 24, 13, 5, 1, 123_000_000, time.UTC),
		Host:       "mx1.example.com",
		Tags:       []string{"inbox", "a/b", ""},
		Peer:       &archive.Peer{Addr: "127.0.0.1", Port: 40000},
		Client: &archive.Client{Addr: "192.0.2.1", Port: 5555, Name: "mail.example.net", Helo: "mail.example.net",
			Proto: "ESMTP", Ident: "ident", Source: "REMOTE", Auth: "user"},
		Helo:     "localhost",
		MailFrom: &archive.MailFrom{Addr: "", Params: []string{"SIZE=300", "BODY=8BITMIME"}},
		RcptTo: []archive.Rcpt{
			{Addr: "a@example.org", Params: []string{"NOTIFY=NEVER"}, Accepted: true, Reply: "250 2.1.5 Ok"},
			{Addr: "b@example.org", Accepted: false, Reply: "550-5.1.1 no such user\n550 5.1.1 really"},
		},
		QueueID: "4ABCD1234",
		Reply:   "250 2.0.0 Ok: queued as 4ABCD1234",
		Outcome: archive.OutcomeAccepted,
		Macros:  map[string]string{"i": "4ABCD1234", "{auth_authen}": ""},
		Env:     map[string]string{"SENDER": "", "RECIPIENT": "a@example.org"},
	}
}

const msg = "Message-ID: <x@example.com>\r\nSubject: =?UTF-8?Q?=E2=82=AC?=\r\n\r\nbody <b>&</b>\r\n"

func TestReadEnvelopeRoundTrip(t *testing.T) {
	s := openStore(t)
	w, err := s.Create("inbox")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, msg); err != nil {
		t.Fatal(err)
	}
	env := everyField()
	if err := w.Commit(env); err != nil {
		t.Fatal(err)
	}
	got, err := archive.ReadEnvelope(s.Path(w.ID(), ".json"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, env) {
		t.Errorf("ReadEnvelope =\n%+v\nwant what Commit wrote\n%+v", got, env)
	}
	if got.Version != archive.Version || got.ID != w.ID() || got.Message.Subject != "€" || got.Message.Size != int64(len(msg)) {
		t.Errorf("envelope = %+v", got)
	}
}

// TestEnvelopeJSONNames checks the JSON against the contract's table: the
// names, the types, and that <addr> stays greppable.
func TestEnvelopeJSONNames(t *testing.T) {
	s := openStore(t)
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, msg)
	env := everyField()
	env.MailFrom.Addr = "j@example.com"
	if err := w.Commit(env); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(s.Path(w.ID(), ".json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"<x@example.com>"`) {
		t.Errorf("message_id not kept as written with angle brackets and unescaped:\n%s", b)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	want := []string{"version", "id", "source", "archived_at", "host", "tags", "peer", "client", "helo",
		"mail_from", "rcpt_to", "queue_id", "reply", "outcome", "macros", "env", "message"}
	if got := slices.Sorted(maps.Keys(raw)); !reflect.DeepEqual(got, slices.Sorted(slices.Values(want))) {
		t.Errorf("envelope keys = %q\nwant %q", got, want)
	}
	keys := func(v any) []string { return slices.Sorted(maps.Keys(v.(map[string]any))) }
	if got := keys(raw["peer"]); !reflect.DeepEqual(got, []string{"addr", "port"}) {
		t.Errorf("peer keys = %q", got)
	}
	if got := keys(raw["client"]); !reflect.DeepEqual(got, []string{"addr", "auth", "helo", "ident", "name", "port", "proto", "source"}) {
		t.Errorf("client keys = %q", got)
	}
	if got := keys(raw["mail_from"]); !reflect.DeepEqual(got, []string{"addr", "params"}) {
		t.Errorf("mail_from keys = %q", got)
	}
	params := raw["mail_from"].(map[string]any)["params"].([]any)
	if len(params) != 2 || params[0] != "SIZE=300" {
		t.Errorf("mail_from.params = %v, want an array of strings", params)
	}
	rcpts := raw["rcpt_to"].([]any)
	if got := keys(rcpts[0]); !reflect.DeepEqual(got, []string{"accepted", "addr", "params", "reply"}) {
		t.Errorf("rcpt_to[0] keys = %q", got)
	}
	r1 := rcpts[1].(map[string]any)
	if r1["accepted"] != false || r1["reply"] != "550-5.1.1 no such user\n550 5.1.1 really" {
		t.Errorf("rcpt_to[1] = %v: accepted must be present when false", r1)
	}
	if got := keys(raw["message"]); !reflect.DeepEqual(got, []string{"message_id", "sha256", "size", "subject"}) {
		t.Errorf("message keys = %q", got)
	}
	for k, typ := range map[string]string{"version": "float64", "tags": "[]interface {}", "macros": "map[string]interface {}", "env": "map[string]interface {}"} {
		if got := fmt.Sprintf("%T", raw[k]); got != typ {
			t.Errorf("%s is %s, want %s", k, got, typ)
		}
	}
}

// The null sender keeps "addr": "" (an empty address is the null sender,
// not an unknown one).
func TestEnvelopeNullSender(t *testing.T) {
	b, err := json.Marshal(archive.MailFrom{})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"addr":""}` {
		t.Errorf("null sender = %s", b)
	}
}

func TestReadEnvelopeErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := archive.ReadEnvelope(filepath.Join(dir, "missing.json")); err == nil || !strings.HasPrefix(err.Error(), "archive: ") {
		t.Errorf("missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"version":1,`), 0o640)
	if _, err := archive.ReadEnvelope(bad); err == nil || !strings.Contains(err.Error(), "archive: decode "+bad) {
		t.Errorf("torn file: %v", err)
	}
	// Unknown fields are ignored (readers ignore unknown fields).
	future := filepath.Join(dir, "future.json")
	os.WriteFile(future, []byte(`{"version":1,"id":"x","new_field":{"a":1}}`), 0o640)
	if env, err := archive.ReadEnvelope(future); err != nil || env.ID != "x" {
		t.Errorf("unknown field: %v, %v", env, err)
	}
}

// Example: archive one message.
func Example() {
	dir, _ := os.MkdirTemp("", "archive")
	defer os.RemoveAll(dir)
	store, err := archive.Open(dir, archive.Options{Host: "mx1.example.com"})
	if err != nil {
		fmt.Println(err)
		return
	}
	w, err := store.Create("inbox")
	if err != nil {
		fmt.Println(err)
		return
	}
	io.WriteString(w, "Subject: hello\r\n\r\nHi.\r\n")
	env := &archive.Envelope{Source: archive.SourceWrapper, Outcome: archive.OutcomeAccepted}
	if err := w.Commit(env); err != nil {
		w.Abort() // or w.Close() to leave the bytes for recovery
		fmt.Println(err)
		return
	}
	fmt.Println(env.Message.Size, env.Message.Subject, env.Tags)
	// Output: 23 hello [inbox]
}
