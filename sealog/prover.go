package sealog

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/postfix-archive/mailarchive/archive"
)

// Prover makes proofs of many items against one checkpoint (an export's
// proofs all lead to the checkpoint exported with them, even if a seal
// runs meanwhile).
type Prover struct {
	rl    *readLog
	index map[string]int64 // ID -> leaf index, read once
}

// NewProver opens the item log of root at its current checkpoint.
func NewProver(root string) (*Prover, error) {
	rl, err := openRead(LogDir(root))
	if err != nil {
		return nil, err
	}
	p := &Prover{rl: rl, index: map[string]int64{}}
	for from := int64(0); from < rl.cp.Size; from += tileWidth {
		es, err := rl.st.entries(rl.cp.Size, from, min(from+tileWidth, rl.cp.Size))
		if err != nil {
			return nil, err
		}
		for i, e := range es {
			if l, err := ParseLeaf(e); err == nil && l.Kind == KindItem {
				p.index[l.ID] = from + int64(i)
			}
		}
	}
	return p, nil
}

// Checkpoint is the signed checkpoint every proof leads to.
func (p *Prover) Checkpoint() []byte { return p.rl.signed }

// Prove returns the detached proof of an item: a bundle without the .eml
// and .json, which travel beside it (ID.eml, ID.json, ID.proof).
func (p *Prover) Prove(it archive.Item) (*Bundle, error) {
	idx, ok := p.index[it.ID]
	if !ok {
		return nil, fmt.Errorf("sealog: %s is not in the log at tree size %d (run seal first)", it.ID, p.rl.cp.Size)
	}
	es, err := p.rl.st.entries(p.rl.cp.Size, idx, idx+1)
	if err != nil {
		return nil, err
	}
	leaf, err := ParseLeaf(es[0])
	if err != nil {
		return nil, err
	}
	return p.rl.prove(it, idx, leaf, false)
}

// ReadBundle reads a proof bundle from path; a detached one (no eml and
// json members, as export --with-proofs writes) gets them from ID.eml and
// ID.json in the same directory.
func ReadBundle(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sealog: %w", err)
	}
	var b Bundle
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("sealog: proof bundle %s: %w", path, err)
	}
	if b.EML != nil || b.JSON != nil {
		return data, nil
	}
	if _, err := archive.ParseID(b.ID); err != nil || strings.ContainsAny(b.ID, `/\`) {
		return nil, errors.New("sealog: proof bundle: bad ID")
	}
	dir := filepath.Dir(path)
	if b.EML, err = os.ReadFile(filepath.Join(dir, b.ID+".eml")); err != nil {
		return nil, fmt.Errorf("sealog: detached proof: %w", err)
	}
	if b.JSON, err = os.ReadFile(filepath.Join(dir, b.ID+".json")); err != nil {
		return nil, fmt.Errorf("sealog: detached proof: %w", err)
	}
	return json.Marshal(b)
}
