package catalog

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/postfix-archive/mailarchive/query"
)

// Sort orders search results.
type Sort string

const (
	Newest Sort = "newest" // by archive stamp, newest first (the default)
	Oldest Sort = "oldest"
	Rank   Sort = "rank" // best full-text match first (bm25); newest without words
)

// SearchOptions configure Search.
type SearchOptions struct {
	Sort  Sort
	Limit int // 0: all
	// Copies fills Hit.Copies: other items holding the same message.
	Copies bool
}

// Hit is one item found.
type Hit struct {
	ID          string    `json:"id"`
	Date        time.Time `json:"date"` // the ID's stamp
	ArchivedAt  string    `json:"archived_at,omitempty"`
	Source      string    `json:"source,omitempty"`
	Outcome     string    `json:"outcome,omitempty"`
	Sender      string    `json:"sender"`
	Rcpts       []string  `json:"rcpts"`
	From        string    `json:"from,omitempty"`
	To          string    `json:"to,omitempty"`
	Subject     string    `json:"subject,omitempty"`
	MessageID   string    `json:"message_id,omitempty"`
	QueueIDs    []string  `json:"queue_ids,omitempty"`
	Size        int64     `json:"size"`
	Attachments int       `json:"attachments"`
	Problem     string    `json:"problem,omitempty"`
	// Location is "" for an item on local disk, else the URL of its
	// message in object storage (s3://BUCKET/KEY).
	Location string `json:"location,omitempty"`
	Copies   []Copy `json:"copies,omitempty"`
}

// Copy is another item holding the same message, seen at another hook
// point (or again at the same one).
type Copy struct {
	ID     string `json:"id"`
	Source string `json:"source,omitempty"`
}

// ftsColumns are the FTS columns each text field searches.
var ftsColumns = map[string]string{
	query.FieldFrom:       "{sender from_hdr}",
	query.FieldRcpt:       "rcpt",
	query.FieldTo:         "{to_hdr rcpt}",
	query.FieldCc:         "{cc_hdr rcpt}",
	query.FieldSubject:    "subject",
	query.FieldBody:       "body",
	query.FieldAttachment: "attachment",
}

// compiled is a query as SQL: an optional FTS5 expression that the items
// must match (joined, and used for ranking) and a WHERE clause on items i.
type compiled struct {
	match string
	where string
	args  []any
}

func compile(n query.Node) compiled {
	var c compiled
	// The best plan: one MATCH for all the words, the rest as filters.
	if and, ok := n.(query.And); ok {
		pos, neg, rest := splitAnd(and.Kids)
		if len(pos) > 0 {
			c.match = ftsAnd(pos, neg)
			n = andOf(rest)
		}
	} else if e, ok := ftsExpr(n); ok {
		c.match = e
		n = query.All{}
	}
	c.where = sqlExpr(n, &c.args)
	return c
}

func andOf(ns []query.Node) query.Node {
	switch len(ns) {
	case 0:
		return query.All{}
	case 1:
		return ns[0]
	}
	return query.And{Kids: ns}
}

// splitAnd sorts the kids of an AND into FTS terms, negated FTS terms and
// the rest.
func splitAnd(kids []query.Node) (pos, neg []string, rest []query.Node) {
	for _, k := range kids {
		if e, ok := ftsExpr(k); ok {
			pos = append(pos, e)
			continue
		}
		if not, ok := k.(query.Not); ok {
			if e, ok := ftsExpr(not.X); ok {
				neg = append(neg, e)
				continue
			}
		}
		rest = append(rest, k)
	}
	return pos, neg, rest
}

func ftsAnd(pos, neg []string) string {
	e := "(" + strings.Join(pos, ") AND (") + ")"
	for _, x := range neg {
		e += " NOT (" + x + ")"
	}
	return e
}

// ftsExpr writes a subtree as one FTS5 expression, if it can be one.
func ftsExpr(n query.Node) (string, bool) {
	switch n := n.(type) {
	case query.Term:
		if n.IsExact() || isAddressTerm(n) {
			return "", false
		}
		s := `"` + strings.ReplaceAll(splitCJK(n.Value), `"`, `""`) + `"`
		if n.Prefix {
			s += " *"
		}
		if cols, ok := ftsColumns[n.Field]; ok {
			s = cols + " : " + s
		}
		return s, true
	case query.Or:
		parts := make([]string, len(n.Kids))
		for i, k := range n.Kids {
			e, ok := ftsExpr(k)
			if !ok {
				return "", false
			}
			parts[i] = e
		}
		return "(" + strings.Join(parts, ") OR (") + ")", true
	case query.And:
		pos, neg, rest := splitAnd(n.Kids)
		if len(rest) > 0 || len(pos) == 0 {
			return "", false
		}
		return ftsAnd(pos, neg), true
	}
	return "", false
}

// sqlExpr writes a subtree as a condition on items i.
func sqlExpr(n query.Node, args *[]any) string {
	switch n := n.(type) {
	case query.All:
		return "1"
	case query.HasAttachment:
		return "i.attachments > 0"
	case query.DateRange:
		var conds []string
		if !n.From.IsZero() {
			conds = append(conds, "i.stamp >= ?")
			*args = append(*args, n.From.Unix())
		}
		if !n.To.IsZero() {
			conds = append(conds, "i.stamp < ?")
			*args = append(*args, n.To.Unix())
		}
		return "(" + strings.Join(conds, " AND ") + ")"
	case query.SizeRange:
		if n.Max < 0 {
			*args = append(*args, n.Min)
			return "i.size >= ?"
		}
		*args = append(*args, n.Min, n.Max)
		return "i.size BETWEEN ? AND ?"
	case query.Term:
		if n.IsExact() || isAddressTerm(n) {
			*args = append(*args, n.Field, n.Value)
			return "i.rowid IN (SELECT item FROM attrs WHERE key = ? AND value = ?)"
		}
	case query.Not:
		return "NOT (" + sqlExpr(n.X, args) + ")"
	case query.And, query.Or:
		if e, ok := ftsExpr(n); ok {
			*args = append(*args, e)
			return "i.rowid IN (SELECT rowid FROM fts WHERE fts MATCH ?)"
		}
		kids, op := andOrKids(n)
		parts := make([]string, len(kids))
		for i, k := range kids {
			parts[i] = sqlExpr(k, args)
		}
		return "(" + strings.Join(parts, op) + ")"
	}
	e, _ := ftsExpr(n)
	*args = append(*args, e)
	return "i.rowid IN (SELECT rowid FROM fts WHERE fts MATCH ?)"
}

// isAddressTerm: from:, to:, cc: or rcpt: with a whole address, matched
// against the addresses of the item (attrs) rather than as a phrase.
func isAddressTerm(t query.Term) bool {
	switch t.Field {
	case query.FieldFrom, query.FieldTo, query.FieldCc, query.FieldRcpt:
	default:
		return false
	}
	if t.Prefix || t.Phrase || addrSpec.FindString(t.Value) != t.Value {
		return false
	}
	// A domain without a dot (from:alice@example) is a partial address:
	// a phrase, which finds alice@example.org.
	_, domain, _ := strings.Cut(t.Value, "@")
	return strings.Contains(domain, ".")
}

func andOrKids(n query.Node) ([]query.Node, string) {
	if a, ok := n.(query.And); ok {
		return a.Kids, " AND "
	}
	return n.(query.Or).Kids, " OR "
}

const hitColumns = `i.id, i.stamp, i.archived_at, i.source, i.outcome, i.sender, i.rcpts, i.from_hdr, i.to_hdr,
	i.subject, i.msgid, i.queueids, i.size, i.attachments, i.problem, i.location`

func (c compiled) sql(cols string, opt SearchOptions) (string, []any) {
	var sb strings.Builder
	var args []any
	sb.WriteString("SELECT " + cols + " FROM items i")
	rank := opt.Sort == Rank && c.match != "" && cols != "count(*)"
	where := c.where
	switch {
	case rank:
		// bm25 costs: only when the order needs it.
		sb.WriteString(" JOIN (SELECT rowid AS r, bm25(fts) AS score FROM fts WHERE fts MATCH ?) f ON f.r = i.rowid")
		args = append(args, c.match)
	case c.match != "":
		where = "i.rowid IN (SELECT rowid FROM fts WHERE fts MATCH ?) AND " + where
		args = append(args, c.match)
	}
	sb.WriteString(" WHERE " + where)
	args = append(args, c.args...)
	switch {
	case cols == "count(*)":
	case rank:
		sb.WriteString(" ORDER BY f.score, i.stamp DESC")
	case opt.Sort == Oldest:
		sb.WriteString(" ORDER BY i.stamp, i.id")
	default:
		sb.WriteString(" ORDER BY i.stamp DESC, i.id DESC")
	}
	if opt.Limit > 0 {
		fmt.Fprintf(&sb, " LIMIT %d", opt.Limit)
	}
	return sb.String(), args
}

// Search calls fn for each item matching q, in the order asked for. An
// error from fn stops the search and is returned.
func (c *Catalog) Search(ctx context.Context, q query.Node, opt SearchOptions, fn func(Hit) error) error {
	s, args := compile(q).sql(hitColumns, opt)
	rows, err := c.db.QueryContext(ctx, s, args...)
	if err != nil {
		return fmt.Errorf("catalog: search: %w", err)
	}
	defer rows.Close()
	var copies *sql.Stmt
	if opt.Copies {
		copies, err = c.db.PrepareContext(ctx, `SELECT id, source, queueids FROM items WHERE msgid = ? AND id != ? ORDER BY stamp, id`)
		if err != nil {
			return fmt.Errorf("catalog: search: %w", err)
		}
		defer copies.Close()
	}
	for rows.Next() {
		var h Hit
		var stamp int64
		var rcpts, qids string
		if err := rows.Scan(&h.ID, &stamp, &h.ArchivedAt, &h.Source, &h.Outcome, &h.Sender, &rcpts, &h.From, &h.To,
			&h.Subject, &h.MessageID, &qids, &h.Size, &h.Attachments, &h.Problem, &h.Location); err != nil {
			return fmt.Errorf("catalog: search: %w", err)
		}
		h.Date = time.Unix(stamp, 0).UTC()
		json.Unmarshal([]byte(rcpts), &h.Rcpts)
		json.Unmarshal([]byte(qids), &h.QueueIDs)
		if copies != nil && h.MessageID != "" {
			if h.Copies, err = findCopies(ctx, copies, h); err != nil {
				return err
			}
		}
		if err := fn(h); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("catalog: search: %w", err)
	}
	return nil
}

// findCopies: items with the same Message-ID whose queue IDs meet this
// one's (the same passage through Postfix, seen at another hook point), or
// where either side knows none. The same Message-ID with disjoint queue
// IDs is the message sent again, not a copy.
func findCopies(ctx context.Context, st *sql.Stmt, h Hit) ([]Copy, error) {
	rows, err := st.QueryContext(ctx, h.MessageID, h.ID)
	if err != nil {
		return nil, fmt.Errorf("catalog: copies: %w", err)
	}
	defer rows.Close()
	var out []Copy
	for rows.Next() {
		var cp Copy
		var qs string
		if err := rows.Scan(&cp.ID, &cp.Source, &qs); err != nil {
			return nil, fmt.Errorf("catalog: copies: %w", err)
		}
		var qids []string
		json.Unmarshal([]byte(qs), &qids)
		if len(qids) == 0 || len(h.QueueIDs) == 0 || meets(qids, h.QueueIDs) {
			out = append(out, cp)
		}
	}
	return out, rows.Err()
}

func meets(a, b []string) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}

// SearchIDs calls fn with the ID of each item matching q, in the order
// asked for (opt.Copies is ignored): the call other commands use to act
// on a query's items without holding them all.
func (c *Catalog) SearchIDs(ctx context.Context, q query.Node, opt SearchOptions, fn func(id string) error) error {
	s, args := compile(q).sql("i.id", opt)
	rows, err := c.db.QueryContext(ctx, s, args...)
	if err != nil {
		return fmt.Errorf("catalog: search: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return fmt.Errorf("catalog: search: %w", err)
		}
		if err := fn(id); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("catalog: search: %w", err)
	}
	return nil
}

// IDs returns the IDs of the items matching q.
func (c *Catalog) IDs(ctx context.Context, q query.Node, opt SearchOptions) ([]string, error) {
	var ids []string
	err := c.SearchIDs(ctx, q, opt, func(id string) error { ids = append(ids, id); return nil })
	return ids, err
}

// Count returns how many items match q.
func (c *Catalog) Count(ctx context.Context, q query.Node) (int, error) {
	s, args := compile(q).sql("count(*)", SearchOptions{})
	var n int
	if err := c.db.QueryRowContext(ctx, s, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("catalog: count: %w", err)
	}
	return n, nil
}
