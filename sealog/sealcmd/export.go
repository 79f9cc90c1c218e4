package sealcmd

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/export"
	"github.com/postfix-archive/mailarchive/internal/cli"
	"github.com/postfix-archive/mailarchive/internal/readcmd"
	"github.com/postfix-archive/mailarchive/sealog"
)

// Export is mailarchive export with --with-proofs.
var Export = cli.Command{Name: readcmd.Export.Name, Summary: readcmd.Export.Summary + " (--with-proofs)",
	Run: func(e *cli.Env, args []string) int {
		return readcmd.RunExport(e, args, readcmd.ExportOptions{Proofs: proofs})
	}}

// proofs makes every exported item's detached proof (ID.proof) against one
// checkpoint, exported once as "checkpoint" with VERIFY.txt.
func proofs(root string) (readcmd.ExportOptions, error) {
	p, err := sealog.NewProver(root)
	if err != nil {
		return readcmd.ExportOptions{}, err
	}
	extra := func(it archive.Item) ([]export.File, error) {
		b, err := p.Prove(it)
		if err != nil {
			return nil, err
		}
		data, err := json.MarshalIndent(b, "", "  ")
		if err != nil {
			return nil, err
		}
		data = append(data, '\n')
		return []export.File{{Suffix: ".proof", Open: reader(data)}}, nil
	}
	trailer := func() ([]export.NamedFile, error) {
		return []export.NamedFile{
			{Name: "checkpoint", Open: reader(p.Checkpoint())},
			{Name: "VERIFY.txt", Open: reader([]byte(verifyText))},
		}, nil
	}
	return readcmd.ExportOptions{Extra: extra, Trailer: trailer}, nil
}

func reader(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

var verifyText = strings.TrimLeft(`
How to check this export
========================

Every message ID.eml comes with its envelope ID.json and ID.proof, a proof
that the archive's signed, append-only log holds exactly these two files.
"checkpoint" is the signed log state all the proofs lead to.

You need the archive's verifier key (one line, NAME+HASH+BASE64), which the
archive's owner gave the compliance officer; do not take it from this export.

With mailarchive:

    mailarchive verify-proof ID.proof --key VERIFIER

(run in this directory, or after unzipping; it reads ID.eml and ID.json
beside ID.proof). Exit status 0: the proof holds.

Check also that "checkpoint" is consistent with the checkpoint you kept
(mailarchive verify --checkpoint on the archive), so that the log was not
rewritten since.

Without mailarchive (any language), for each ID.proof (JSON):
  1. Open "checkpoint" as a C2SP signed note with the verifier key (ed25519
     over the note text); its body is ORIGIN, TREE SIZE, base64 ROOT HASH.
  2. "leaf" is one line: "mailarchive-leaf/1 item ID EML_SHA256 EML_SIZE
     JSON_SHA256". Check that ID is this item's, that sha256 and size of
     ID.eml and sha256 of ID.json are the ones named (lower-case hex).
  3. Check the RFC 6962 inclusion proof: SHA-256(0x00 || leaf) at
     "leaf_index" in a tree of "tree_size", with the "inclusion" hashes
     (base64, leaf to root), must give ROOT HASH.
  4. If "timestamp" is present: an RFC 3161 token over the checkpoint's bytes.
The full description is the section "The log" of docs/archive-format.md.
`, "\n")
