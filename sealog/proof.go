package sealog

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// ProofFormat names the proof bundle format.
const ProofFormat = "mailarchive-proof/1"

// Bundle is a self-contained proof that an item is in the log: the item's
// files, its leaf, the inclusion proof and the signed checkpoint it leads
// to (docs/archive-format.md, "Proof bundles"). Byte fields are base64 in
// the JSON.
type Bundle struct {
	Format     string      `json:"format"`
	ID         string      `json:"id"`
	Leaf       string      `json:"leaf"`
	LeafIndex  int64       `json:"leaf_index"`
	TreeSize   int64       `json:"tree_size"`
	Inclusion  []tlog.Hash `json:"inclusion"`
	Checkpoint string      `json:"checkpoint"`
	Timestamp  []byte      `json:"timestamp,omitempty"`
	EML        []byte      `json:"eml"`
	JSON       []byte      `json:"json"`
}

// readLog is a log directory read at its current checkpoint, without the
// lock (appends never change what a committed checkpoint covers).
type readLog struct {
	dir    string
	cp     Checkpoint
	signed []byte
	st     *store
}

func openRead(dir string) (*readLog, error) {
	signed, err := os.ReadFile(filepath.Join(dir, checkpointFile))
	if err != nil {
		return nil, fmt.Errorf("sealog: %w", err)
	}
	body, _, ok := bytes.Cut(signed, []byte("\n\n"))
	if !ok {
		return nil, errors.New("sealog: checkpoint is not a signed note")
	}
	cp, err := ParseCheckpoint(string(body) + "\n")
	if err != nil {
		return nil, err
	}
	return &readLog{dir: dir, cp: cp, signed: signed, st: newStore(dir)}, nil
}

// findItem returns the index of the leaf of id: from the cache of logged
// IDs when it has it, else by reading the entries.
func (r *readLog) findItem(id string) (int64, Leaf, error) {
	if f, err := os.Open(filepath.Join(r.dir, idsFile)); err == nil {
		sc := bufio.NewScanner(f)
		suffix := " " + id
		for sc.Scan() {
			ln := sc.Text()
			if strings.HasPrefix(ln, "i ") && strings.HasSuffix(ln, suffix) {
				var idx int64
				if _, err := fmt.Sscanf(ln, "i %d", &idx); err == nil && idx < r.cp.Size {
					if es, err := r.st.entries(r.cp.Size, idx, idx+1); err == nil {
						if l, err := ParseLeaf(es[0]); err == nil && l.Kind == KindItem && l.ID == id {
							f.Close()
							return idx, l, nil
						}
					}
				}
			}
		}
		f.Close()
	}
	for from := int64(0); from < r.cp.Size; from += tileWidth {
		es, err := r.st.entries(r.cp.Size, from, min(from+tileWidth, r.cp.Size))
		if err != nil {
			return 0, Leaf{}, err
		}
		for i, e := range es {
			if l, err := ParseLeaf(e); err == nil && l.Kind == KindItem && l.ID == id {
				return from + int64(i), l, nil
			}
		}
	}
	return 0, Leaf{}, fmt.Errorf("sealog: %s is not in the log (run seal)", id)
}

// MakeProof builds the proof bundle of an item. It refuses an item whose
// files no longer match its leaf.
func MakeProof(root, filed, id string) (*Bundle, error) {
	rd, err := archive.OpenReader(root, archive.ReaderOptions{Filed: filed})
	if err != nil {
		return nil, err
	}
	it, err := rd.Locate(id)
	if err != nil {
		return nil, err
	}
	rl, err := openRead(LogDir(root))
	if err != nil {
		return nil, err
	}
	idx, leaf, err := rl.findItem(id)
	if err != nil {
		return nil, err
	}
	return rl.prove(it, idx, leaf, true)
}

// prove makes the bundle of an item with leaf idx, checked before it is
// handed out; attach puts the item's files in it.
func (r *readLog) prove(it archive.Item, idx int64, leaf Leaf, attach bool) (*Bundle, error) {
	f, err := it.Open()
	if err != nil {
		return nil, fmt.Errorf("sealog: %w", err)
	}
	eml, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("sealog: read %s.eml: %w", it.ID, err)
	}
	js, err := it.ReadJSON()
	if err != nil {
		return nil, fmt.Errorf("sealog: %w", err)
	}
	if err := leafMatches(leaf, eml, js); err != nil {
		return nil, fmt.Errorf("sealog: %s: %w: run verify", it.ID, err)
	}
	p, err := tlog.ProveRecord(r.cp.Size, idx, r.st.hashReader(r.cp.Size, nil))
	if err != nil {
		return nil, fmt.Errorf("sealog: inclusion proof of %s: %w", it.ID, err)
	}
	enc, _ := leaf.Encode()
	if err := tlog.CheckRecord(p, r.cp.Size, r.cp.Root, idx, tlog.RecordHash(enc)); err != nil {
		return nil, fmt.Errorf("sealog: the log's tiles do not match its checkpoint: %w: run verify", err)
	}
	b := &Bundle{Format: ProofFormat, ID: it.ID, Leaf: string(enc), LeafIndex: idx, TreeSize: r.cp.Size,
		Inclusion: p, Checkpoint: string(r.signed)}
	if attach {
		b.EML, b.JSON = eml, js
	}
	if tok, err := os.ReadFile(filepath.Join(r.dir, timestampPath(r.cp.Size))); err == nil {
		b.Timestamp = tok
	}
	return b, nil
}

// leafMatches checks an item's bytes against its leaf.
func leafMatches(l Leaf, eml, js []byte) error {
	es := sha256.Sum256(eml)
	jsum := sha256.Sum256(js)
	if hex.EncodeToString(es[:]) != l.EMLSHA256 || int64(len(eml)) != l.EMLSize {
		return errors.New("the .eml does not match its leaf")
	}
	if hex.EncodeToString(jsum[:]) != l.JSONSHA256 {
		return errors.New("the .json does not match its leaf")
	}
	var env struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(js, &env); err != nil || env.ID != l.ID {
		return fmt.Errorf("the .json does not name the item %s", l.ID)
	}
	return nil
}

// ProofResult is what a checked bundle proves.
type ProofResult struct {
	ID        string    `json:"id"`
	Origin    string    `json:"origin"`
	LeafIndex int64     `json:"leaf_index"`
	TreeSize  int64     `json:"tree_size"`
	Signer    string    `json:"signer"`
	Timestamp time.Time `json:"timestamp,omitempty"`
}

// VerifyProof checks a proof bundle with nothing but the verifier key (and,
// to check the TSA's certificate, its roots).
func VerifyProof(data []byte, v note.Verifier, tsaRoots *x509.CertPool) (*ProofResult, error) {
	var b Bundle
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("sealog: proof bundle: %w", err)
	}
	if b.Format != ProofFormat {
		return nil, fmt.Errorf("sealog: proof bundle: format %q, want %q", b.Format, ProofFormat)
	}
	cp, err := OpenCheckpoint([]byte(b.Checkpoint), v)
	if err != nil {
		return nil, err
	}
	if cp.Size != b.TreeSize {
		return nil, fmt.Errorf("sealog: proof bundle: tree size %d, its checkpoint's %d", b.TreeSize, cp.Size)
	}
	leaf, err := ParseLeaf([]byte(b.Leaf))
	if err != nil {
		return nil, err
	}
	if leaf.Kind != KindItem || leaf.ID != b.ID {
		return nil, fmt.Errorf("sealog: proof bundle: the leaf is not the item %s's", b.ID)
	}
	if err := leafMatches(leaf, b.EML, b.JSON); err != nil {
		return nil, fmt.Errorf("sealog: proof bundle: %w", err)
	}
	if err := tlog.CheckRecord(b.Inclusion, cp.Size, cp.Root, b.LeafIndex, tlog.RecordHash([]byte(b.Leaf))); err != nil {
		return nil, fmt.Errorf("sealog: proof bundle: inclusion proof fails: %w", err)
	}
	res := &ProofResult{ID: b.ID, Origin: cp.Origin, LeafIndex: b.LeafIndex, TreeSize: cp.Size, Signer: v.Name()}
	if len(b.Timestamp) > 0 {
		t, err := CheckTimestamp(b.Timestamp, []byte(b.Checkpoint), tsaRoots)
		if err != nil {
			return nil, err
		}
		res.Timestamp = t
	}
	return res, nil
}
