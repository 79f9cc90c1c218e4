package retention

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/objstore"
	"github.com/postfix-archive/mailarchive/sealog"
)

// Findings VerifyLocks adds to mailarchive verify's, for items in object
// storage.
const (
	// FindLockShort: an object's lock no longer covers the policy: another
	// mode than recorded, or retained until before the item's period ends
	// (the policy was lengthened: retention apply extends it).
	FindLockShort = "lock-short"
	// FindObjectGone: a recorded object version is not in the bucket.
	FindObjectGone = "object-gone"
	// FindObjectChanged: the version's checksum or size is not the one
	// the filer confirmed.
	FindObjectChanged = "object-changed"
)

// Heads reads object metadata (*objstore.Store).
type Heads interface {
	Head(ctx context.Context, key, versionID string) (objstore.Info, error)
}

// VerifyLocks checks, for every item recorded in object storage, that both
// its object versions are in the bucket with the checksum and size the
// filer confirmed, under the recorded lock mode, retained at least until
// its period under the policy ends. A server it cannot ask is an error
// (verify could not be done), not a finding.
func VerifyLocks(ctx context.Context, o Options) ([]sealog.Finding, int, error) {
	o.defaults()
	r, err := archive.OpenReader(o.Root, archive.ReaderOptions{})
	if err != nil {
		return nil, 0, err
	}
	var out []sealog.Finding
	checked := 0
	err = r.Walk(func(it archive.Item) error {
		rec := it.Remote
		if rec == nil {
			var err error
			if rec, err = archive.ReadRemoteRecord(o.Root, it.ID); err != nil {
				return nil // local only
			}
		}
		env, err := it.Envelope()
		if err != nil {
			return nil // verify's own walk reports it
		}
		b, err := o.bucket(ctx)
		if err != nil {
			return err
		}
		h, ok := b.(Heads)
		if !ok {
			return errors.New("retention: the bucket client cannot read object metadata")
		}
		until := o.Policy.Decide(env, it.Stamp).Until
		emlSum, _ := hex.DecodeString(rec.SHA256)
		jsonSum, _ := hex.DecodeString(rec.JSONSHA256)
		for _, obj := range []struct {
			key, ver string
			sum      []byte
			size     int64
		}{{rec.EMLKey, rec.EMLVersion, emlSum, rec.Size}, {rec.JSONKey, rec.JSONVersion, jsonSum, int64(len(rec.Envelope))}} {
			f := sealog.Finding{ID: it.ID, Path: obj.key}
			info, err := h.Head(ctx, obj.key, obj.ver)
			switch {
			case errors.Is(err, objstore.ErrNotFound):
				f.Kind, f.Detail = FindObjectGone, "version "+obj.ver+" is not in the bucket"
				out = append(out, f)
				continue
			case err != nil:
				return err
			}
			if info.SHA256 != base64.StdEncoding.EncodeToString(obj.sum) || info.Size != obj.size {
				f.Kind, f.Detail = FindObjectChanged, fmt.Sprintf("version %s has %d bytes with SHA-256 %s; the filer confirmed %d bytes with %s",
					obj.ver, info.Size, info.SHA256, obj.size, base64.StdEncoding.EncodeToString(obj.sum))
				out = append(out, f)
			}
			if rec.LockMode == "" {
				continue // uploaded with --allow-unlocked: nothing to check
			}
			if info.Lock.Mode != rec.LockMode || info.Lock.RetainUntil.Before(until) {
				f.Kind, f.Detail = FindLockShort, fmt.Sprintf("locked %q until %s; the policy (%s) wants %s until %s",
					info.Lock.Mode, info.Lock.RetainUntil.UTC().Format(time.RFC3339), o.Policy.Name, rec.LockMode, until.UTC().Format(time.RFC3339))
				out = append(out, f)
			}
		}
		checked++
		return nil
	}, nil)
	return out, checked, err
}
