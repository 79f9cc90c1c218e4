package filer

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/objstore"
	"github.com/postfix-archive/mailarchive/retention/policy"
)

// S3Options configure the object-store destination.
type S3Options struct {
	URL   string // s3://BUCKET/PREFIX, as given (recorded in ROOT/.destination)
	Store *objstore.Store
	// LockMode is the Object Lock mode of every object: COMPLIANCE (the
	// default) or GOVERNANCE.
	LockMode string
	// AllowUnlocked files into a bucket without Object Lock (no WORM
	// guarantee); otherwise such a bucket is refused.
	AllowUnlocked bool
	// KeepLocal keeps the local copy of an uploaded item until it is this
	// old (by its ID's stamp), for fast reads.
	KeepLocal time.Duration
	// MinRetain is the shortest retention from now an object gets, for
	// items already past their policy period (a server refuses a
	// retain-until in the past). Default 24h.
	MinRetain   time.Duration
	Policy      *policy.Policy // default policy.Default()
	Concurrency int            // uploads at once; default 8
	DryRun      bool           // write nothing (not even .destination)
	Now         func() time.Time
}

// Problems of an object-store run that stop it: the filer's exit status
// tells them apart (Main).
var (
	// ErrUnavailable: the server could not be reached or timed out; the
	// items stay local and the next run retries.
	ErrUnavailable = errors.New("destination unavailable")
	// ErrRefused: credentials, permissions, a missing bucket, or a bucket
	// without Object Lock.
	ErrRefused = errors.New("destination refused")
)

// S3 is a bucket as a Destination. Each item is uploaded as
// PREFIX/YYYY/MM/DD/ID.eml then ID.json (If-None-Match: *, SHA-256, Object
// Lock with retain-until from the policy), both confirmed with HeadObject
// (checksum, lock mode, retain-until), recorded in ROOT/remote/ with their
// version IDs, and only then removed from the root, .eml first.
type S3 struct {
	root   string
	o      S3Options
	locked bool // the bucket has Object Lock

	jobs chan job
	wg   sync.WaitGroup

	mu       sync.Mutex
	stopErr  error // the first ErrUnavailable/ErrRefused: the rest wait
	deferred int   // items not uploaded because of stopErr
	changed  bool  // files were removed from the root
	// uploaded are items confirmed in the bucket whose records are
	// written in one batch (recordBatch, or at Flush) before their local
	// copies go.
	uploaded []uploaded
}

type uploaded struct {
	it  Item
	rec *archive.RemoteRecord
	t   *Tally
}

// recordBatch is how many records are made durable together.
const recordBatch = 64

type job struct {
	it Item
	t  *Tally
}

var _ Destination = (*S3)(nil)

// NewS3 checks the bucket (it exists, we may use it, it has Object Lock
// unless AllowUnlocked) and that the root is not bound to another
// destination, then records the destination in ROOT/.destination.
func NewS3(ctx context.Context, root string, o S3Options) (*S3, error) {
	if o.LockMode == "" {
		o.LockMode = "COMPLIANCE"
	}
	if o.LockMode != "COMPLIANCE" && o.LockMode != "GOVERNANCE" {
		return nil, fmt.Errorf("filer: lock mode %q: want COMPLIANCE or GOVERNANCE", o.LockMode)
	}
	if o.MinRetain <= 0 {
		o.MinRetain = 24 * time.Hour
	}
	if o.Policy == nil {
		o.Policy = policy.Default()
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 8
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	old, err := archive.ReadDestination(root)
	if err != nil {
		return nil, fmt.Errorf("filer: %w", err)
	}
	if old != nil && old.URL != o.URL {
		return nil, fmt.Errorf("filer: %w: %s files into %s (its %s), not %s", ErrRefused, root, old.URL, archive.DestinationFile, o.URL)
	}
	locked, err := o.Store.CheckBucket(ctx)
	if err != nil {
		return nil, fmt.Errorf("filer: %w", destErr(err))
	}
	if !locked && !o.AllowUnlocked {
		return nil, fmt.Errorf("filer: %w: bucket %s has no Object Lock, so the archive there could be rewritten or deleted; create it with Object Lock enabled, or pass --allow-unlocked", ErrRefused, o.Store.Bucket)
	}
	d := &S3{root: root, o: o, locked: locked}
	if !o.DryRun {
		if err := archive.WriteDestination(root, o.Store.Destination(o.URL)); err != nil {
			return nil, fmt.Errorf("filer: %w", err)
		}
	}
	return d, nil
}

// destErr adds ErrUnavailable or ErrRefused to an objstore error.
func destErr(err error) error {
	switch {
	case errors.Is(err, objstore.ErrUnavailable):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	case errors.Is(err, objstore.ErrDenied):
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return err
}

// Put queues the item for one of the upload workers; it blocks while they
// are all busy, so memory stays bounded.
func (d *S3) Put(ctx context.Context, it Item, t *Tally) {
	if d.jobs == nil {
		d.jobs = make(chan job, d.o.Concurrency)
		for range d.o.Concurrency {
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				for j := range d.jobs {
					d.upload(ctx, j.it, j.t)
				}
			}()
		}
	}
	d.jobs <- job{it, t}
}

// Flush waits for the uploads, makes the root's removals durable, and
// reports the items kept because the server was down or refused us.
func (d *S3) Flush(ctx context.Context, t *Tally) {
	if d.jobs != nil {
		close(d.jobs)
		d.wg.Wait()
		d.jobs = nil
	}
	d.record(true)
	if d.stopErr == nil && !d.o.DryRun {
		d.uploadLog(ctx, t)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.changed {
		if err := archive.SyncDir(d.root); err != nil {
			t.Problem(fmt.Errorf("fsync %s: %w", d.root, err))
		}
		d.changed = false
	}
	if d.stopErr != nil {
		t.Problem(fmt.Errorf("%w; %d more items not tried: every item not uploaded is kept locally, the next run retries", d.stopErr, d.deferred))
		d.stopErr, d.deferred = nil, 0
	}
}

// stopped says whether an earlier failure stops uploads, and counts the
// item as deferred.
func (d *S3) stopped() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopErr != nil {
		d.deferred++
	}
	return d.stopErr != nil
}

// fail reports an item's failure. A server that is down or refuses us
// stops the run's uploads (one problem for all, at Flush); anything else is
// this item's problem.
func (d *S3) fail(it Item, t *Tally, err error) {
	err = destErr(err)
	if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrRefused) {
		d.mu.Lock()
		if d.stopErr == nil {
			d.stopErr = fmt.Errorf("%s: %w", it.ID, err)
		} else {
			d.deferred++
		}
		d.mu.Unlock()
		return
	}
	t.Problem(fmt.Errorf("%s: %w; left in place", it.ID, err))
}

func (d *S3) upload(ctx context.Context, it Item, t *Tally) {
	if d.stopped() {
		return
	}
	if rec, err := archive.ReadRemoteRecord(d.root, it.ID); err == nil {
		// Uploaded and confirmed by an earlier run, which stopped before
		// removing the local copy, or kept it (--keep-local).
		d.confirmed(it, rec, t)
		return
	} else if !errors.Is(err, os.ErrNotExist) && !it.EML {
		t.Problem(fmt.Errorf("%s: %w; left in place", it.ID, err))
		return
	}
	// No record, or one we cannot read while the local copy is whole:
	// upload again (the bucket answers If-None-Match for what is there,
	// and the record is written anew).
	if !it.EML {
		t.Problem(fmt.Errorf("%s: .json without .eml, and no record of it in the bucket; left in place", it.ID))
		return
	}
	envBytes, err := os.ReadFile(it.JSONPath())
	if err != nil {
		t.Problem(fmt.Errorf("%s: %w; left in place", it.ID, err))
		return
	}
	if !utf8.Valid(envBytes) {
		// The record keeps it as a JSON string, byte for byte.
		t.Problem(fmt.Errorf("%s: .json is not UTF-8; left in place", it.ID))
		return
	}
	var env archive.Envelope
	if err := json.Unmarshal(envBytes, &env); err != nil {
		t.Problem(fmt.Errorf("%s: decode .json: %w; left in place", it.ID, err))
		return
	}
	emlSum, size, err := fileSHA256(it.EMLPath())
	if err != nil {
		t.Problem(fmt.Errorf("%s: %w; left in place", it.ID, err))
		return
	}
	jsonSum := sha256.Sum256(envBytes)
	lock := d.lockFor(&env, it.Stamp)
	st := d.o.Store
	rec := &archive.RemoteRecord{ID: it.ID, URL: d.o.URL, Size: size, SHA256: hex.EncodeToString(emlSum),
		EMLKey: st.Key(it.ID, it.Stamp, ".eml"), JSONKey: st.Key(it.ID, it.Stamp, ".json"),
		LockMode: lock.Mode, RetainUntil: lock.RetainUntil,
		Envelope: string(envBytes), JSONSHA256: hex.EncodeToString(jsonSum[:])}
	// The .eml first, the .json last: a bucket holding an ID.json holds
	// its ID.eml.
	if rec.EMLVersion, err = d.putOnce(ctx, rec.EMLKey, it.EMLPath(), emlSum, size, lock); err != nil {
		d.fail(it, t, err)
		return
	}
	if rec.JSONVersion, err = d.putOnce(ctx, rec.JSONKey, it.JSONPath(), jsonSum[:], int64(len(envBytes)), lock); err != nil {
		d.fail(it, t, err)
		return
	}
	rec.UploadedAt = d.o.Now().UTC()
	d.mu.Lock()
	d.uploaded = append(d.uploaded, uploaded{it, rec, t})
	full := len(d.uploaded) >= recordBatch
	d.mu.Unlock()
	if full {
		d.record(false)
	}
}

// record makes the records of the uploaded items durable in one batch,
// then lets their local copies go. all: also a partial batch (Flush).
func (d *S3) record(all bool) {
	d.mu.Lock()
	batch := d.uploaded
	if !all && len(batch) < recordBatch {
		d.mu.Unlock()
		return
	}
	d.uploaded = nil
	d.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	recs := make([]*archive.RemoteRecord, len(batch))
	for i, u := range batch {
		recs[i] = u.rec
	}
	if err := archive.WriteRemoteRecords(d.root, recs); err != nil {
		batch[0].t.Problem(fmt.Errorf("%d items uploaded, but recording them: %w; local copies kept (the next run records them)", len(batch), err))
		return
	}
	for _, u := range batch {
		d.confirmed(u.it, u.rec, u.t)
	}
}

// lockFor is the retention of an item's objects: its policy date, but at
// least MinRetain from now, rounded up to the second.
func (d *S3) lockFor(env *archive.Envelope, stamp time.Time) objstore.Lock {
	if !d.locked {
		return objstore.Lock{}
	}
	until := d.o.Policy.Decide(env, stamp).Until
	if min := d.o.Now().Add(d.o.MinRetain); until.Before(min) {
		until = min
	}
	if r := until.Truncate(time.Second); r.Before(until) {
		until = r.Add(time.Second)
	}
	return objstore.Lock{Mode: d.o.LockMode, RetainUntil: until.UTC()}
}

// putOnce uploads a file under key unless the key has it already (a run
// that stopped after uploading), and confirms with HeadObject that the
// version there has our checksum, size, lock mode and at least our
// retain-until. It returns that version's ID.
func (d *S3) putOnce(ctx context.Context, key, path string, sum []byte, size int64, lock objstore.Lock) (string, error) {
	st := d.o.Store
	ver, err := st.Put(ctx, key, path, sum, lock)
	if errors.Is(err, objstore.ErrExists) {
		ver = "" // the current version, whoever put it
	} else if err != nil {
		return "", err
	}
	info, err := st.Head(ctx, key, ver)
	if err != nil {
		return "", err
	}
	want := base64.StdEncoding.EncodeToString(sum)
	if info.SHA256 != want || info.Size != size {
		return "", fmt.Errorf("%s holds %d bytes with SHA-256 %q, not this item's %d bytes with %q (a different item under the same ID?)",
			st.URL(key), info.Size, info.SHA256, size, want)
	}
	if lock.Mode == "" {
		return info.VersionID, nil
	}
	if info.Lock.Mode != lock.Mode {
		return "", fmt.Errorf("%s has lock mode %q, not %s", st.URL(key), info.Lock.Mode, lock.Mode)
	}
	if info.Lock.RetainUntil.Before(lock.RetainUntil) {
		// An earlier upload under a shorter policy: lengthen (the
		// server refuses only to shorten), then look again.
		if err := st.SetRetention(ctx, key, info.VersionID, lock); err != nil {
			return "", err
		}
		if info, err = st.Head(ctx, key, info.VersionID); err != nil {
			return "", err
		}
		if info.Lock.RetainUntil.Before(lock.RetainUntil) {
			return "", fmt.Errorf("%s is retained until %v, not %v", st.URL(key), info.Lock.RetainUntil, lock.RetainUntil)
		}
	}
	return info.VersionID, nil
}

// confirmed finishes an item whose objects are confirmed and recorded:
// the local copy goes (the .eml first, as the local tree does), unless
// --keep-local keeps it for now.
func (d *S3) confirmed(it Item, rec *archive.RemoteRecord, t *Tally) {
	url := d.o.Store.URL(rec.JSONKey)
	if d.o.KeepLocal > 0 && d.o.Now().Sub(it.Stamp) < d.o.KeepLocal {
		t.Done(Kept, "uploaded %s -> %s; local copy kept (--keep-local %v)", it.ID, url, d.o.KeepLocal)
		return
	}
	if it.EML {
		if err := os.Remove(it.EMLPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Problem(fmt.Errorf("%s: in the bucket, but removing the local .eml: %w", it.ID, err))
			return
		}
	}
	if err := os.Remove(it.JSONPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Problem(fmt.Errorf("%s: in the bucket, but removing the local .json: %w", it.ID, err))
		return
	}
	d.mu.Lock()
	d.changed = true
	d.mu.Unlock()
	if !it.EML {
		t.Done(Finished, "finished %s -> %s (uploaded by an earlier run)", it.ID, url)
		return
	}
	t.Done(Filed, "uploaded %s -> %s (versions %s, %s; %s until %s)", it.ID, url,
		rec.EMLVersion, rec.JSONVersion, rec.LockMode, rec.RetainUntil.Format(time.RFC3339))
}

// Plan says what Put would do; it sends no request.
func (d *S3) Plan(_ context.Context, it Item, t *Tally) {
	url := d.o.Store.URL(d.o.Store.Key(it.ID, it.Stamp, ".json"))
	if _, err := archive.ReadRemoteRecord(d.root, it.ID); err == nil {
		if d.o.KeepLocal > 0 && d.o.Now().Sub(it.Stamp) < d.o.KeepLocal {
			t.Done(Kept, "would keep %s (in the bucket already)", it.ID)
			return
		}
		t.Done(Deduplicated, "would remove the local copy of %s (in the bucket already)", it.ID)
		return
	}
	if !it.EML {
		t.Problem(fmt.Errorf("%s: .json without .eml, and no record of it in the bucket; would be left in place", it.ID))
		return
	}
	t.Done(Filed, "would upload %s -> %s", it.ID, url)
}

// fileSHA256 is the SHA-256 and size of a file.
func fileSHA256(path string) ([]byte, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", path, err)
	}
	return h.Sum(nil), n, nil
}
