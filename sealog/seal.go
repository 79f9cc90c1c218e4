package sealog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
)

// LogDir and AuditDir are the log directories of an archive root.
func LogDir(root string) string   { return filepath.Join(root, "log") }
func AuditDir(root string) string { return filepath.Join(root, "audit") }

// ItemOrigin is the checkpoint origin of the item log signed by a key
// named name; AuditOrigin that of the audit trail.
func ItemOrigin(name string) string  { return name }
func AuditOrigin(name string) string { return name + "/audit" }

// SealOptions configure Seal.
type SealOptions struct {
	Root   string
	Filed  string // the dated tree, if not in the root (filer --dest)
	Signer *Signer
	// SealAfter is how long after a day's end (UTC) it is sealed, so that
	// writers still finishing items of that day are done.
	SealAfter time.Duration
	Now       func() time.Time
	Publish   string // DIR or COMMAND: see Publish
	TSA       string // RFC 3161 time-stamping authority URL, optional
	Logger    *slog.Logger
	// Batch bounds the leaves appended (and held) at once.
	Batch int
}

// SealResult says what a seal did.
type SealResult struct {
	Appended   int       `json:"appended"`
	Days       []string  `json:"days_sealed"`
	Audit      int       `json:"audit_appended"`
	TreeSize   int64     `json:"tree_size"`
	Problems   []Finding `json:"problems"`
	Published  bool      `json:"published"`
	Timestamps int       `json:"timestamps"`
}

// Seal appends a leaf for every complete item not yet in the log, seals
// every complete day with a MANIFEST and a day leaf, appends pending audit
// entries to the audit trail, and publishes and time-stamps new checkpoints.
func Seal(ctx context.Context, o SealOptions) (SealResult, error) {
	var res SealResult
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Batch <= 0 {
		o.Batch = 1 << 16
	}
	rd, err := archive.OpenReader(o.Root, archive.ReaderOptions{Filed: o.Filed})
	if err != nil {
		return res, err
	}
	lg, err := OpenLog(LogDir(o.Root), ItemOrigin(o.Signer.Name()), o.Signer)
	if err != nil {
		return res, err
	}
	defer lg.Close()
	if err := lg.ensureCheckpoint(); err != nil {
		return res, err
	}
	// Made by seal, the archive user, so that it owns it (see ensurePending).
	if _, err := ensurePending(o.Root); err != nil {
		return res, err
	}
	st, err := loadState(lg)
	if err != nil {
		return res, err
	}
	startSize := lg.Size()

	now := o.Now().UTC()
	listing, err := rd.ListRoot()
	if err != nil {
		return res, err
	}
	// A day may still receive items while the root holds unfiled items
	// dated near it (filer --local-time files up to a day away).
	blocked := map[string]bool{}
	for _, e := range listing.Entries {
		for _, d := range []time.Duration{-24 * time.Hour, 0, 24 * time.Hour} {
			blocked[archive.DatedDir(e.Stamp.Add(d), false)] = true
		}
	}
	dayItems := map[string][]string{} // unsealed days -> their items
	var batch [][]byte
	var batchLeaves []Leaf
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		base := lg.Size()
		if _, err := lg.Append(batch); err != nil {
			return err
		}
		for i, l := range batchLeaves {
			st.add(base+int64(i), l)
		}
		res.Appended += len(batch)
		batch, batchLeaves = batch[:0], batchLeaves[:0]
		return saveState(lg, st)
	}
	seen := 0
	walkErr := rd.Walk(func(it archive.Item) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if it.Dir != "" {
			if _, sealed := st.days[it.Dir]; !sealed {
				dayItems[it.Dir] = append(dayItems[it.Dir], it.ID)
			}
		}
		if _, ok := st.items[it.ID]; ok {
			return nil
		}
		if _, ok := st.tombs[it.ID]; ok {
			return nil
		}
		leaf, err := ItemLeaf(rd, it)
		if err != nil {
			res.Problems = append(res.Problems, Finding{Kind: FindDamaged, ID: it.ID, Detail: err.Error()})
			o.Logger.Warn("not logged", "id", it.ID, "err", err)
			return nil
		}
		enc, _ := leaf.Encode()
		batch = append(batch, enc)
		batchLeaves = append(batchLeaves, leaf)
		seen++
		if seen%10000 == 0 {
			o.Logger.Info("seal progress", "hashed", seen)
		}
		if len(batch) >= o.Batch {
			return flush()
		}
		return nil
	}, func(p archive.Problem) {
		res.Problems = append(res.Problems, Finding{Kind: FindDamaged, ID: p.ID, Path: p.Path, Detail: p.Err.Error()})
	})
	if walkErr != nil {
		return res, walkErr
	}
	if err := flush(); err != nil {
		return res, err
	}

	// Seal complete days, oldest first, each MANIFEST chained to the last.
	var days []string
	for d := range dayItems {
		days = append(days, d)
	}
	sort.Strings(days)
	for _, d := range days {
		if blocked[d] || !dayComplete(d, now, o.SealAfter) {
			continue
		}
		leaf, err := sealDay(lg, st, d, dayItems[d])
		if err != nil {
			return res, err
		}
		if leaf == nil {
			continue
		}
		enc, _ := leaf.Encode()
		base := lg.Size()
		if _, err := lg.Append([][]byte{enc}); err != nil {
			return res, err
		}
		st.add(base, *leaf)
		if err := saveState(lg, st); err != nil {
			return res, err
		}
		res.Days = append(res.Days, d)
		o.Logger.Info("day sealed", "day", d, "items", leaf.Count, "leaf", base)
	}
	res.TreeSize = lg.Size()

	n, err := sealAudit(o)
	res.Audit = n
	if err != nil {
		return res, err
	}
	if lg.Size() != startSize || n > 0 {
		o.Logger.Info("sealed", "appended", res.Appended, "days", len(res.Days), "tree_size", lg.Size(), "audit", n)
	}
	if o.TSA != "" {
		k, err := timestampHistory(ctx, LogDir(o.Root), o.TSA)
		res.Timestamps += k
		if err != nil {
			return res, err
		}
	}
	if o.Publish != "" {
		ok, err := publish(ctx, LogDir(o.Root), o.Publish, lg)
		res.Published = ok
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// dayComplete reports whether day (YYYY/MM/DD) ended at least after ago.
func dayComplete(day string, now time.Time, after time.Duration) bool {
	t, err := time.Parse("2006/01/02", filepath.ToSlash(day))
	if err != nil {
		return false
	}
	return !now.Before(t.Add(24 * time.Hour).Add(after))
}

// ItemLeaf computes the leaf of an item from its files: the sha256 and size
// of the .eml and the sha256 of the .json. It refuses an item whose
// envelope does not describe its message: logging it would vouch for
// damage.
func ItemLeaf(rd *archive.Reader, it archive.Item) (Leaf, error) {
	return itemLeafRetry(rd, it, true)
}

func itemLeafRetry(rd *archive.Reader, it archive.Item, check bool) (Leaf, error) {
	for try := 0; ; try++ {
		leaf, err := itemLeaf(it, check)
		if err == nil || try > 0 || !errors.Is(err, fs.ErrNotExist) {
			return leaf, err
		}
		// The filer moved it meanwhile.
		if it, err = rd.Locate(it.ID); err != nil {
			return Leaf{}, err
		}
	}
}

// itemLeaf hashes an item's files; check refuses an envelope that does
// not describe the message.
func itemLeaf(it archive.Item, check bool) (Leaf, error) {
	jdata, err := it.ReadJSON()
	if err != nil {
		return Leaf{}, err
	}
	sum, size, err := HashMessage(it)
	if err != nil {
		return Leaf{}, err
	}
	env, err := it.Envelope()
	if check && err != nil {
		return Leaf{}, err
	}
	if check && (env.Message.SHA256 != sum || env.Message.Size != size) {
		return Leaf{}, fmt.Errorf("%s.json says sha256 %s size %d, the .eml has %s size %d",
			it.ID, env.Message.SHA256, env.Message.Size, sum, size)
	}
	js := sha256.Sum256(jdata)
	return Leaf{Kind: KindItem, ID: it.ID, EMLSHA256: sum, EMLSize: size, JSONSHA256: hex.EncodeToString(js[:])}, nil
}

// hashBufs are the read buffers of HashMessage: verify hashes files by the
// hundred thousand, and a fresh large buffer each is most of its garbage.
var hashBufs = sync.Pool{New: func() any { b := make([]byte, 128<<10); return &b }}

// HashMessage returns the hex sha256 and size of an item's message (for
// an item in object storage, as fetched).
func HashMessage(it archive.Item) (string, int64, error) {
	f, err := it.Open()
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	sum, n, err := hashReader(f)
	if err != nil {
		return "", 0, fmt.Errorf("read %s.eml: %w", it.ID, err)
	}
	return sum, n, nil
}

func hashReader(f io.Reader) (string, int64, error) {
	h := sha256.New()
	bp := hashBufs.Get().(*[]byte)
	defer hashBufs.Put(bp)
	n, err := io.CopyBuffer(h, struct{ io.Reader }{f}, *bp)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// ManifestHeader starts every day MANIFEST.
const ManifestHeader = "mailarchive-manifest/1"

// ManifestPath is the path of a day's MANIFEST relative to the log directory.
func ManifestPath(day string) string { return filepath.Join(manifestDir, filepath.FromSlash(day)) }

// sealDay writes the MANIFEST of a day and returns its leaf (nil when the
// day has no logged item).
func sealDay(lg *Log, st *state, day string, ids []string) (*Leaf, error) {
	type row struct {
		id  string
		idx int64
	}
	var rows []row
	for _, id := range ids {
		if idx, ok := st.items[id]; ok {
			rows = append(rows, row{id, idx})
		}
	}
	if len(rows) == 0 {
		return nil, nil
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].id < rows[j].id })
	prev := "-"
	if st.lastHash != "" {
		prev = st.lastDay + " " + st.lastHash
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s\nday %s\nprev %s\nitems %d\n", ManifestHeader, filepath.ToSlash(day), prev, len(rows))
	for _, r := range rows {
		fmt.Fprintf(&b, "%s %d\n", r.id, r.idx)
	}
	data := []byte(b.String())
	if err := lg.st.writeFile(ManifestPath(day), data, 0o644); err != nil {
		return nil, err
	}
	step("manifest")
	sum := sha256.Sum256(data)
	return &Leaf{Kind: KindDay, Day: filepath.ToSlash(day), ManifestSHA256: hex.EncodeToString(sum[:]), Count: len(rows)}, nil
}
