package retention

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/audit"
	"github.com/postfix-archive/mailarchive/objstore"
	"github.com/postfix-archive/mailarchive/retention/policy"
	"github.com/postfix-archive/mailarchive/sealog"
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
	SetRetention(ctx context.Context, key, versionID string, lock objstore.Lock) error
}

var _ Bucket = (*objstore.Store)(nil)

// Options configure plan, apply and holds.
type Options struct {
	Root   string
	Policy *policy.Policy
	Now    func() time.Time
	// Bucket is the root's object storage; nil: opened from
	// ROOT/.destination when an item needs it.
	Bucket Bucket
	// Catalog is the search catalog the holds' queries run on; default
	// ROOT/index/catalog.sqlite (brought up to date first).
	Catalog string
	// Signer signs the item log's checkpoint after the tombstones of a
	// disposal are appended (Apply; sealog.LoadSigner).
	Signer *sealog.Signer
}

func (o *Options) defaults() {
	if o.Policy == nil {
		o.Policy = policy.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
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
func Plan(ctx context.Context, o Options, fn func(Entry) error, problem func(error)) error {
	o.defaults()
	r, err := archive.OpenReader(o.Root, archive.ReaderOptions{})
	if err != nil {
		return err
	}
	holds, err := o.holds(ctx)
	if err != nil {
		return err
	}
	now := o.Now()
	return r.Walk(func(it archive.Item) error {
		if err := ctx.Err(); err != nil {
			return err
		}
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
			if h.Covers(it.ID) {
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
	// Extended counts items in the bucket whose retain-until was moved
	// to the end of a period the policy lengthened.
	Extended int
	Problems []error
}

// ErrBusy says a filer (or another apply) holds the root's tool lock.
var ErrBusy = errors.New("a filer or another retention apply is running on this root")

// disposeBatch is how many disposals share one tombstone append (one
// signed checkpoint).
const disposeBatch = 1000

// Apply disposes of every item the plan says to, a batch at a time: the
// batch is recorded first, as tombstone leaves in the item log (so verify
// accepts the items' absence and says what was disposed of, when and under
// which rule) and in the audit trail; then each item's object versions are
// deleted from the bucket (the server refuses while they are locked or
// held), its record, then its local files, the .json first so that it is
// never half an item. A crash after the tombstones leaves items that are
// still there, which verify ignores and the next apply disposes of.
func Apply(ctx context.Context, o Options, verbose func(Entry)) (ApplyReport, error) {
	o.defaults()
	var rep ApplyReport
	if o.Signer == nil {
		return rep, errors.New("retention: apply needs the log's signer key: disposals are recorded as tombstones in the sealed log")
	}
	unlock, ok, err := archive.TryLock(o.Root, archive.ToolLock)
	if err != nil {
		return rep, err
	}
	if !ok {
		return rep, ErrBusy
	}
	defer unlock()
	rd, err := archive.OpenReader(o.Root, archive.ReaderOptions{})
	if err != nil {
		return rep, err
	}
	var batch []Entry
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		defer func() { batch = batch[:0] }()
		ts := make([]sealog.Tombstone, len(batch))
		ids := make([]string, len(batch))
		now := o.Now()
		for i, e := range batch {
			ts[i] = sealog.Tombstone{ID: e.ID, Reason: "retention: " + e.Rule + "; period ended " + e.Until.UTC().Format(time.RFC3339), At: now}
			ids[i] = e.ID
		}
		if err := audit.Record(o.Root, audit.Dispose, "retention", ids); err != nil {
			return fmt.Errorf("retention: nothing disposed: %w", err)
		}
		if _, err := sealog.AppendTombstones(o.Root, rd, o.Signer, ts); err != nil {
			return fmt.Errorf("retention: nothing disposed: tombstones: %w", err)
		}
		for _, e := range batch {
			if err := o.dispose(ctx, e); err != nil {
				rep.Problems = append(rep.Problems, fmt.Errorf("%s: tombstoned, but %w; the next apply tries again", e.ID, err))
				continue
			}
			rep.Disposed++
			if verbose != nil {
				verbose(e)
			}
		}
		return nil
	}
	err = Plan(ctx, o, func(e Entry) error {
		if e.Action != Dispose && e.rec != nil && e.rec.LockMode != "" && e.rec.RetainUntil.Before(e.Until) {
			if err := o.extend(ctx, e); err != nil {
				rep.Problems = append(rep.Problems, fmt.Errorf("%s: extending its retention to %s: %w", e.ID, e.Until.UTC().Format(time.RFC3339), err))
			} else {
				rep.Extended++
			}
		}
		switch e.Action {
		case Keep:
			rep.Kept++
		case Held:
			rep.Held++
		case Wait:
			rep.Waiting++
		case Dispose:
			batch = append(batch, e)
			if len(batch) >= disposeBatch {
				return flush()
			}
		}
		return nil
	}, func(err error) { rep.Problems = append(rep.Problems, err) })
	if err == nil {
		err = flush()
	}
	return rep, err
}

// extend lengthens the retention of an item's objects to the end of its
// period (the server refuses only to shorten) and records it.
func (o *Options) extend(ctx context.Context, e Entry) error {
	b, err := o.bucket(ctx)
	if err != nil {
		return err
	}
	lock := objstore.Lock{Mode: e.rec.LockMode, RetainUntil: e.Until.UTC().Truncate(time.Second).Add(time.Second)}
	for _, kv := range [][2]string{{e.rec.EMLKey, e.rec.EMLVersion}, {e.rec.JSONKey, e.rec.JSONVersion}} {
		if err := b.SetRetention(ctx, kv[0], kv[1], lock); err != nil {
			return err
		}
	}
	e.rec.RetainUntil = lock.RetainUntil
	return archive.WriteRemoteRecord(o.Root, e.rec)
}

func (o *Options) dispose(ctx context.Context, e Entry) error {
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
