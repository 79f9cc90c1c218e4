// Package sealcmd is mailarchive's keygen, seal, verify, proof,
// verify-proof and audit subcommands: flags and output around package
// sealog.
package sealcmd

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/audit"
	"github.com/postfix-archive/mailarchive/internal/cli"
	"github.com/postfix-archive/mailarchive/retention"
	"github.com/postfix-archive/mailarchive/retention/policy"
	"github.com/postfix-archive/mailarchive/sealog"
)

// Commands, in the order mailarchive --help lists them.
var (
	Keygen      = cli.Command{Name: "keygen", Summary: "make the signer and verifier keys of the log", Run: runKeygen}
	Seal        = cli.Command{Name: "seal", Summary: "append new items to the signed log, seal complete days", Run: runSeal}
	Verify      = cli.Command{Name: "verify", Summary: "check every item and the log's history against a key", Run: runVerify}
	Proof       = cli.Command{Name: "proof", Summary: "write a self-contained proof bundle for an item", Run: runProof}
	VerifyProof = cli.Command{Name: "verify-proof", Summary: "check a proof bundle with only the verifier key", Run: runVerifyProof}
	Audit       = cli.Command{Name: "audit", Summary: "list the access audit trail", Run: runAudit}
)

func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

func runKeygen(e *cli.Env, args []string) int {
	fs, _ := cli.FlagSet(e, `Usage: mailarchive keygen --signer FILE --verifier FILE [--name NAME]

Makes an ed25519 key pair for the log's checkpoints. The signer key (mode
0600) stays with the archive user, who runs seal; the verifier key is one
public line (name+hash+base64) for the compliance officer, who runs verify.
Neither file may exist yet.`)
	signer := fs.String("signer", "", "write the private signer key to `FILE` (mode 0600)")
	verifier := fs.String("verifier", "", "write the public verifier key to `FILE`")
	host, _ := os.Hostname()
	name := fs.String("name", host+"/mailarchive", "the key's and the log's `NAME` (no spaces or '+')")
	if done, st := cli.Parse(e, fs, args); done {
		return st
	}
	if *signer == "" || *verifier == "" || fs.NArg() > 0 {
		return e.Errorf("--signer FILE and --verifier FILE are required (try --help)")
	}
	skey, vkey, err := sealog.GenerateKeys(*name)
	if err != nil {
		return e.Errorf("%v", err)
	}
	if err := writeNew(*signer, skey+"\n", 0o600); err != nil {
		return e.Errorf("%v", err)
	}
	if err := writeNew(*verifier, vkey+"\n", 0o644); err != nil {
		os.Remove(*signer)
		return e.Errorf("%v", err)
	}
	fmt.Fprintf(e.Stdout, "%s\n", vkey)
	return cli.ExitOK
}

func writeNew(path, text string, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if err := f.Chmod(mode); err == nil {
		_, err = f.WriteString(text)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

func runSeal(e *cli.Env, args []string) int {
	fs, dir := cli.FlagSet(e, `Usage: mailarchive seal -d ROOT --signer FILE [--publish DIR|COMMAND] [--tsa URL] [--json]

Appends a leaf for every item filed and not yet in the log, writes a new
signed checkpoint, and seals each complete day with a MANIFEST. Run it after
each filer run (the filer's timer does). Safe to run at any time: one seal
runs at a time, and a seal killed at any point is completed by the next.
Exit status: 0 done, 1 items could not be logged (damage, listed), 2 error.`)
	signer := fs.String("signer", "/etc/mailarchive/signer.key", "the signer key `FILE` (from keygen)")
	filed := fs.String("filed", "", "the dated tree's root `DIR`, if filer --dest put it elsewhere")
	publish := fs.String("publish", "", "hand each new checkpoint to `DIR` (checkpoint.SIZE) or to COMMAND's stdin")
	tsa := fs.String("tsa", "", "RFC 3161 time-stamping authority `URL` for each new checkpoint")
	after := fs.Duration("seal-after", time.Hour, "seal a day this long after it ended (UTC)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	verbose := fs.BoolP("verbose", "v", false, "log progress and each day sealed on stderr (default: only warnings, so cron mails only trouble)")
	if done, st := cli.Parse(e, fs, args); done {
		return st
	}
	// Files root made would lock the archive user's next seal out.
	if err := cli.CheckOwner("mailarchive seal", *dir); err != nil {
		return e.Errorf("%v", err)
	}
	s, err := sealog.LoadSigner(*signer)
	if err != nil {
		return e.Errorf("%v", err)
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(e.Stderr, &slog.HandlerOptions{Level: level}))
	res, err := sealog.Seal(e.Ctx, sealog.SealOptions{Root: *dir, Filed: *filed, Signer: s, SealAfter: *after,
		Publish: *publish, TSA: *tsa, Logger: log})
	if *asJSON {
		writeJSON(e.Stdout, res)
	} else {
		fmt.Fprintf(e.Stdout, "appended %d, sealed %d days, audit %d, tree size %d\n", res.Appended, len(res.Days), res.Audit, res.TreeSize)
		for _, p := range res.Problems {
			fmt.Fprintln(e.Stdout, "problem:", p)
		}
	}
	if err != nil {
		return e.Errorf("%v", err)
	}
	if len(res.Problems) > 0 {
		return cli.ExitFindings
	}
	return cli.ExitOK
}

// DefaultTextfile is where verify records its result for the node
// exporter's textfile collector (Debian's default directory); it is
// written only when that directory exists.
const DefaultTextfile = "/var/lib/prometheus/node-exporter/mailarchive_verify.prom"

func runVerify(e *cli.Env, args []string) int {
	fs, dir := cli.FlagSet(e, `Usage: mailarchive verify -d ROOT --key VERIFIER [--checkpoint FILE] [--since DAY] [--json]

Re-hashes every logged item, recomputes the tree from the log's entries,
checks every stored checkpoint's signature and that each is a prefix of the
current tree, and compares with a checkpoint kept outside (--checkpoint: the
one the officer kept or --publish handed out). Findings by kind: altered-eml,
altered-json, removed, day-removed, inserted, late, manifest, truncated,
rollback, history-rewritten, log-corrupt, damaged; for items in object
storage (filer --to): object-gone, object-changed, lock-short (the object's
lock mode or retain-until no longer covers the retention policy, --policy).
Exit status: 0 clean, 1 findings, 2 could not verify.`)
	key := fs.String("key", "", "the verifier key: a `FILE` or the key itself")
	ext := fs.String("checkpoint", "", "a signed checkpoint `FILE` kept outside the archive")
	since := fs.String("since", "", "re-hash only items of `DAY` (YYYY-MM-DD) and later")
	filed := fs.String("filed", "", "the dated tree's root `DIR`, if not ROOT")
	textfile := fs.String("textfile", DefaultTextfile, "record the result in `FILE` (Prometheus textfile format; skipped if its directory is missing)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	policy := fs.String("policy", policy.DefaultFile, "the retention policy `FILE` the locks of items in object storage must cover")
	if done, st := cli.Parse(e, fs, args); done {
		return st
	}
	if *key == "" {
		return e.Errorf("--key VERIFIER is required (try --help)")
	}
	record := func(rep *sealog.Report, ok bool) {
		if *textfile == "" {
			return
		}
		if _, err := os.Stat(filepath.Dir(*textfile)); err != nil {
			return
		}
		if err := sealog.WriteTextfile(*textfile, rep, ok, time.Now()); err != nil {
			fmt.Fprintf(e.Stderr, "%s: %v\n", e.Program, err)
		}
	}
	v, err := sealog.LoadVerifier(*key)
	if err != nil {
		record(nil, false)
		return e.Errorf("%v", err)
	}
	var external []byte
	if *ext != "" {
		if external, err = os.ReadFile(*ext); err != nil {
			record(nil, false)
			return e.Errorf("%v", err)
		}
	}
	// Right after a power loss the last moments' items may be cut short
	// on disk until the journal is replayed: verify would report them
	// altered. Refuse to judge until then.
	if rd, err := archive.OpenReader(*dir, archive.ReaderOptions{Filed: *filed}); err == nil {
		if n, err := rd.PendingReplay(); err == nil && n > 0 {
			record(nil, false)
			return e.Errorf("cannot verify now: %d records: %v", n, archive.ErrNotReplayed)
		}
	}
	rep, err := sealog.Verify(e.Ctx, sealog.VerifyOptions{Root: *dir, Filed: *filed, Verifier: v, External: external, Since: *since})
	if err != nil {
		record(nil, false)
		return e.Errorf("%v", err)
	}
	if err := verifyLocks(e, *dir, *policy, rep); err != nil {
		record(nil, false)
		return e.Errorf("%v", err)
	}
	record(rep, true)
	if *asJSON {
		writeJSON(e.Stdout, rep)
	} else {
		for _, f := range rep.Findings {
			fmt.Fprintln(e.Stdout, f)
		}
		verdict := "clean"
		if !rep.Clean() {
			verdict = fmt.Sprintf("%d findings", len(rep.Findings))
		}
		fmt.Fprintf(e.Stdout, "%s: tree size %d, %d checkpoints, %d items (%d bytes) re-hashed, %d days sealed, %d not logged yet, %.1fs\n",
			verdict, rep.TreeSize, rep.Checkpoints, rep.Items, rep.Bytes, rep.Days, rep.Unlogged, rep.Seconds)
	}
	if !rep.Clean() {
		return cli.ExitFindings
	}
	return cli.ExitOK
}

func runProof(e *cli.Env, args []string) int {
	fs, dir := cli.FlagSet(e, `Usage: mailarchive proof -d ROOT ID -o FILE

Writes a self-contained proof bundle (JSON) for one item: its .eml and .json,
its leaf, the inclusion proof and the signed checkpoint (and the TSA token,
if seal got one). Anyone with the verifier key can check it with
'mailarchive verify-proof' or by following docs/archive-format.md.`)
	out := fs.StringP("output", "o", "", "write the bundle to `FILE` (- for standard output)")
	filed := fs.String("filed", "", "the dated tree's root `DIR`, if not ROOT")
	if done, st := cli.Parse(e, fs, args); done {
		return st
	}
	if fs.NArg() != 1 || *out == "" {
		return e.Errorf("need one ID and -o FILE (try --help)")
	}
	id := fs.Arg(0)
	b, err := sealog.MakeProof(*dir, *filed, id)
	if err != nil {
		if errors.Is(err, archive.ErrNotFound) {
			fmt.Fprintf(e.Stderr, "%s: %v\n", e.Program, err)
			return cli.ExitFindings
		}
		return e.Errorf("%v", err)
	}
	if err := audit.Record(*dir, audit.Proof, id, []string{id}); err != nil {
		return e.Errorf("cannot record the access in the audit trail: %v", err)
	}
	data, _ := json.MarshalIndent(b, "", "  ")
	data = append(data, '\n')
	if *out == "-" {
		e.Stdout.Write(data)
		return cli.ExitOK
	}
	if err := os.WriteFile(*out, data, 0o640); err != nil {
		return e.Errorf("%v", err)
	}
	return cli.ExitOK
}

func runVerifyProof(e *cli.Env, args []string) int {
	fs, _ := cli.FlagSet(e, `Usage: mailarchive verify-proof FILE --key VERIFIER [--tsa-roots PEM] [--json]

Checks a proof bundle with nothing but the verifier key (a detached one,
ID.proof from export --with-proofs, with ID.eml and ID.json beside it): the checkpoint's
signature, the leaf against the message and envelope in the bundle, and the
inclusion proof against the checkpoint's root. With --tsa-roots, the TSA
token's certificate must chain to those roots.
Exit status: 0 the proof holds, 1 it does not, 2 error.`)
	key := fs.String("key", "", "the verifier key: a `FILE` or the key itself")
	roots := fs.String("tsa-roots", "", "PEM `FILE` of the TSA's trusted root certificates")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if done, st := cli.Parse(e, fs, args); done {
		return st
	}
	if fs.NArg() != 1 || *key == "" {
		return e.Errorf("need one FILE and --key VERIFIER (try --help)")
	}
	v, err := sealog.LoadVerifier(*key)
	if err != nil {
		return e.Errorf("%v", err)
	}
	var pool *x509.CertPool
	if *roots != "" {
		pem, err := os.ReadFile(*roots)
		if err != nil {
			return e.Errorf("%v", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return e.Errorf("%s: no PEM certificates", *roots)
		}
	}
	data, err := sealog.ReadBundle(fs.Arg(0))
	if err != nil {
		return e.Errorf("%v", err)
	}
	res, err := sealog.VerifyProof(data, v, pool)
	if err != nil {
		fmt.Fprintf(e.Stdout, "FAILED: %v\n", err)
		return cli.ExitFindings
	}
	if *asJSON {
		writeJSON(e.Stdout, res)
		return cli.ExitOK
	}
	fmt.Fprintf(e.Stdout, "OK: %s is leaf %d of %s at tree size %d, signed by %s", res.ID, res.LeafIndex, res.Origin, res.TreeSize, res.Signer)
	if !res.Timestamp.IsZero() {
		fmt.Fprintf(e.Stdout, ", time-stamped %s", res.Timestamp.UTC().Format(time.RFC3339))
	}
	fmt.Fprintln(e.Stdout)
	return cli.ExitOK
}

func runAudit(e *cli.Env, args []string) int {
	fs, dir := cli.FlagSet(e, `Usage: mailarchive audit -d ROOT [--since WHEN] [--json]

Lists the access audit trail: who searched, showed, exported or proved what,
and which IDs it returned. Entries not sealed yet are marked pending.`)
	since := fs.String("since", "", "only entries from `WHEN` on (YYYY-MM-DD or RFC 3339)")
	asJSON := fs.Bool("json", false, "print JSON lines")
	if done, st := cli.Parse(e, fs, args); done {
		return st
	}
	var from time.Time
	if *since != "" {
		var err error
		if from, err = time.Parse("2006-01-02", *since); err != nil {
			if from, err = time.Parse(time.RFC3339, *since); err != nil {
				return e.Errorf("--since %q: want YYYY-MM-DD or RFC 3339", *since)
			}
		}
	}
	committed, pending, err := sealog.ReadAudit(*dir, from)
	if err != nil {
		return e.Errorf("%v", err)
	}
	type row struct {
		sealog.AuditEntry
		Pending bool `json:"pending,omitempty"`
	}
	var rows []row
	for _, a := range committed {
		rows = append(rows, row{a, false})
	}
	for _, a := range pending {
		rows = append(rows, row{a, true})
	}
	for _, r := range rows {
		if *asJSON {
			b, _ := json.Marshal(map[string]any{"at": r.At, "user": r.User, "action": r.Action, "query": r.Query, "ids": r.IDs, "pending": r.Pending, "name": r.Name})
			fmt.Fprintf(e.Stdout, "%s\n", b)
			continue
		}
		mark := ""
		if r.Pending {
			mark = " (pending)"
		}
		fmt.Fprintf(e.Stdout, "%s %s %s %q %d IDs%s: %s\n", r.At.UTC().Format(time.RFC3339), r.User, r.Action, r.Query, len(r.IDs), mark, strings.Join(r.IDs, " "))
	}
	if len(rows) == 0 {
		return cli.ExitFindings
	}
	return cli.ExitOK
}

// verifyLocks adds the findings of the objects in the bucket, when the
// archive files into one (ROOT/.destination).
func verifyLocks(e *cli.Env, root, policyFile string, rep *sealog.Report) error {
	if d, err := archive.ReadDestination(root); err != nil || d == nil {
		return err
	}
	p, err := policy.Load(policyFile)
	if err != nil {
		return err
	}
	fs, _, err := retention.VerifyLocks(e.Ctx, retention.Options{Root: root, Policy: p})
	if err != nil {
		return fmt.Errorf("checking the objects in the bucket: %w", err)
	}
	rep.Findings = append(rep.Findings, fs...)
	return nil
}
