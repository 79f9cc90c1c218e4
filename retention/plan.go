package retention

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/objstore"
)

// Actions a plan gives an item.
const (
	Keep    = "keep"    // its period has not ended
	Dispose = "dispose" // its period ended and no hold covers it
	Held    = "held"    // its period ended, but a legal hold covers it
	Wait    = "wait"    // its period ended, but the bucket retains it longer (retain-until)
)

// Entry is the plan for one item.
type Entry struct {
	ID          string     `json:"id"`
	Where       string     `json:"where"` // local, bucket, or both (--keep-local)
	Until       time.Time  `json:"until"` // end of its period
	Rule        string     `json:"rule"`
	Action      string     `json:"action"`
	HeldBy      []string   `json:"held_by,omitempty"`
	BucketUntil *time.Time `json:"bucket_retain_until,omitempty"`

	item archive.Item
	rec  *archive.RemoteRecord
}

// Bucket is what disposal and holds do in object storage
// (*objstore.Store).
type Bucket interface {
	DeleteVersion(ctx context.Context, key, versionID string) error
	SetLegalHold(ctx context.Context, key, versionID string, on bool) error
}

var _ Bucket = (*objstore.Store)(nil)

// Options configure plan, apply and holds.
type Options struct {
	Root   string
	Policy *Policy
	Now    func() time.Time
	// Bucket is the root's object storage; nil: opened from
	// ROOT/.destination when an item needs it.
	Bucket Bucket
	// Audit records disposals, holds and releases; nil: ROOT/audit/.
	Audit Recorder
	// Compile compiles hold queries; nil: CompileQuery.
	Compile func(string) (Matcher, error)
}

func (o *Options) defaults() {
	if o.Policy == nil {
		o.Policy = Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Audit == nil {
		o.Audit = AuditFile(o.Root)
	}
	if o.Compile == nil {
		o.Compile = CompileQuery
	}
}

// bucket returns the root's bucket client, opening it on first use.
func (o *Options) bucket(ctx context.Context) (Bucket, error) {
	if o.Bucket != nil {
		return o.Bucket, nil
	}
	d, err := archive.ReadDestination(o.Root)
	if err != nil {
		return nil, err
	}
	if d == nil {
		return nil, fmt.Errorf("retention: items are recorded in %s/ but the root has no %s", archive.RemoteDir, archive.DestinationFile)
	}
	st, err := objstore.Open(ctx, objstore.ConfigFrom(d))
	if err != nil {
		return nil, err
	}
	o.Bucket = st
	return st, nil
}

// Plan visits every item with its retention decision. Damage the walk finds
// and unreadable envelopes go to problem.
func Plan(o Options, fn func(Entry) error, problem func(error)) error {
	o.defaults()
	r, err := archive.OpenReader(o.Root, archive.ReaderOptions{})
	if err != nil {
		return err
	}
	holds, err := Holds(o.Root, o.Compile)
	if err != nil {
		return err
	}
	now := o.Now()
	return r.Walk(func(it archive.Item) error {
		env, err := it.Envelope()
		if err != nil {
			problem(fmt.Errorf("%s: %w; kept", it.ID, err))
			return nil
		}
		e := Entry{ID: it.ID, item: it, rec: it.Remote, Where: "local"}
		if e.rec == nil {
			if rec, err := archive.ReadRemoteRecord(o.Root, it.ID); err == nil {
				e.rec, e.Where = rec, "both"
			}
		} else {
			e.Where = "bucket"
		}
		d := o.Policy.Decide(env, it.Stamp)
		e.Until, e.Rule = d.Until, d.Rule
		for _, h := range holds {
			if h.Covers(it.ID, env) {
				e.HeldBy = append(e.HeldBy, h.Matter)
			}
		}
		switch {
		case now.Before(e.Until):
			e.Action = Keep
		case len(e.HeldBy) > 0:
			e.Action = Held
		case e.rec != nil && e.rec.LockMode != "" && now.Before(e.rec.RetainUntil):
			e.Action = Wait
		default:
			e.Action = Dispose
		}
		if e.rec != nil && e.rec.LockMode != "" {
			u := e.rec.RetainUntil
			e.BucketUntil = &u
		}
		return fn(e)
	}, func(p archive.Problem) { problem(p) })
}

// ApplyReport says what Apply did.
type ApplyReport struct {
	Disposed, Kept, Held, Waiting int
	Problems                      []error
}

// ErrBusy says a filer (or another apply) holds the root's tool lock.
var ErrBusy = errors.New("a filer or another retention apply is running on this root")

// Apply disposes of every item the plan says to: recorded first (Audit),
// then its objects' versions in the bucket deleted (the server refuses
// while they are locked or held), its record, then its local files, the
// .json first so that it is never half an item.
func Apply(ctx context.Context, o Options, verbose func(Entry)) (ApplyReport, error) {
	o.defaults()
	var rep ApplyReport
	unlock, ok, err := archive.TryLock(o.Root, archive.ToolLock)
	if err != nil {
		return rep, err
	}
	if !ok {
		return rep, ErrBusy
	}
	defer unlock()
	err = Plan(o, func(e Entry) error {
		switch e.Action {
		case Keep:
			rep.Kept++
			return nil
		case Held:
			rep.Held++
			return nil
		case Wait:
			rep.Waiting++
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := o.dispose(ctx, e); err != nil {
			rep.Problems = append(rep.Problems, fmt.Errorf("%s: %w", e.ID, err))
			return nil
		}
		rep.Disposed++
		if verbose != nil {
			verbose(e)
		}
		return nil
	}, func(err error) { rep.Problems = append(rep.Problems, err) })
	return rep, err
}

func (o *Options) dispose(ctx context.Context, e Entry) error {
	until := e.Until
	ev := Event{Event: "dispose", ID: e.ID, Rule: e.Rule, Until: &until, Where: e.Where}
	if e.rec != nil {
		ev.SHA256 = e.rec.SHA256
	}
	if err := o.Audit.Record(ev); err != nil {
		return fmt.Errorf("not disposed: %w", err)
	}
	if e.rec != nil {
		b, err := o.bucket(ctx)
		if err != nil {
			return err
		}
		if err := b.DeleteVersion(ctx, e.rec.JSONKey, e.rec.JSONVersion); err != nil {
			return err
		}
		if err := b.DeleteVersion(ctx, e.rec.EMLKey, e.rec.EMLVersion); err != nil {
			return fmt.Errorf("its .json is deleted from the bucket, its .eml not: %w", err)
		}
		if err := archive.RemoveRemoteRecord(o.Root, e.ID); err != nil {
			return err
		}
	}
	if e.item.Remote == nil {
		for _, p := range []string{e.item.JSONPath, e.item.EMLPath} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			if err := archive.SyncDir(filepath.Dir(p)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Recorder records retention events. The sealed log's tombstone leaves
// (package sealog, not merged into this branch yet) are to implement it;
// until then AuditFile does.
type Recorder interface {
	Record(Event) error
}

// Event is one disposal, hold or release.
type Event struct {
	Event  string     `json:"event"` // dispose, hold, release
	At     time.Time  `json:"at"`
	ID     string     `json:"id,omitempty"`
	SHA256 string     `json:"sha256,omitempty"`
	Rule   string     `json:"rule,omitempty"`
	Until  *time.Time `json:"until,omitempty"`
	Where  string     `json:"where,omitempty"`
	Matter string     `json:"matter,omitempty"`
	Query  string     `json:"query,omitempty"`
	Items  int        `json:"items,omitempty"`
}

// AuditFile appends events to ROOT/audit/retention.jsonl, one JSON line
// each, fsynced before Record returns.
type AuditFile string

// Record appends one event.
func (a AuditFile) Record(ev Event) error {
	if ev.At.IsZero() {
		ev.At = time.Now().UTC()
	}
	dir := filepath.Join(string(a), "audit")
	if err := os.Mkdir(dir, 0o750); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("retention: audit: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "retention.jsonl"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("retention: audit: %w", err)
	}
	b, _ := json.Marshal(ev)
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("retention: audit: %w", err)
	}
	return nil
}
