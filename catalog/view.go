package catalog

import (
	"slices"
	"strings"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/mimetext"
)

// Record is one item as the catalog sees it: the same fields whichever
// hook point wrote it.
type Record struct {
	ID         string
	Dir        string // where its .json was found: "" (root) or YYYY/MM/DD
	Location   string // "" on local disk, else the object's URL (s3://BUCKET/KEY)
	Stamp      time.Time
	ArchivedAt time.Time
	Source     string // proxy, milter, wrapper; "" when not known (recovered)
	Outcome    string
	Sender     string   // envelope sender; "" for <> or not known
	Rcpts      []string // envelope recipients
	Tags       []string
	QueueIDs   []string // every Postfix queue ID the item carries
	MessageID  string   // without <>
	Size       int64
	Problem    string // what could not be read (envelope or message)
	Doc        *mimetext.Doc
}

// View makes the Record of an item from its envelope (nil when it could
// not be read) and its decoded message.
//
// The hook points say the same things in different places: proxy and
// milter in mail_from / rcpt_to, the wrapper in env (SENDER, RECIPIENT,
// ORIGINAL_RECIPIENT). Queue IDs: queue_id (proxy: the server's "queued
// as", milter: macro i), client.ident (proxy: XFORWARD IDENT, the queue ID
// of the Postfix in front), macro i, and the ids of Received: fields (the
// wrapper's Postfix writes its own there).
func View(it archive.Item, env *archive.Envelope, doc *mimetext.Doc) Record {
	r := Record{ID: it.ID, Dir: it.Dir, Location: Location(it), Stamp: it.Stamp, Doc: doc}
	if doc == nil {
		r.Doc = &mimetext.Doc{}
	}
	add := func(list []string, vs ...string) []string {
		for _, v := range vs {
			v = strings.Trim(strings.TrimSpace(v), "<>")
			if v != "" && !slices.Contains(list, v) {
				list = append(list, v)
			}
		}
		return list
	}
	if env != nil {
		r.ArchivedAt, r.Source, r.Outcome, r.Tags = env.ArchivedAt, env.Source, env.Outcome, env.Tags
		r.Size = env.Message.Size
		if env.MailFrom != nil {
			r.Sender = env.MailFrom.Addr
		} else if s, ok := env.Env["SENDER"]; ok {
			r.Sender = s
		}
		for _, rc := range env.RcptTo {
			r.Rcpts = add(r.Rcpts, rc.Addr)
		}
		r.Rcpts = add(r.Rcpts, env.Env["RECIPIENT"], env.Env["ORIGINAL_RECIPIENT"])
		r.QueueIDs = add(r.QueueIDs, env.QueueID, env.Macros["i"])
		if env.Client != nil {
			r.QueueIDs = add(r.QueueIDs, env.Client.Ident)
		}
		r.MessageID = strings.Trim(env.Message.MessageID, "<> ")
	}
	r.QueueIDs = add(r.QueueIDs, r.Doc.QueueIDs...)
	if r.MessageID == "" {
		r.MessageID = strings.Trim(r.Doc.MessageID, "<> ")
	}
	return r
}

// Location is where an item's files live, as the catalog records it: ""
// for the local disk, else the URL of its message object in the bucket.
func Location(it archive.Item) string {
	if it.Remote == nil {
		return ""
	}
	return strings.TrimSuffix(it.Remote.URL, "/") + "/" + strings.TrimPrefix(it.Remote.EMLKey, "/")
}
