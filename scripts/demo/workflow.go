package main

// The second half of the demo: what a compliance officer does with the
// archive once it holds mail, run with the real binaries on the demo's own
// archive. Every step prints what it shows and its command line, then the
// command's real output, and fails the demo unless the exit status and the
// output are what they must be.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"unicode"
)

// stepN numbers the steps as they are printed.
var stepN int

// heading prints a step's heading and the command line it runs.
func heading(what, cmdline string) {
	stepN++
	fmt.Printf("\n== %d. %s\n   $ %s\n\n", stepN, what, cmdline)
}

// step runs bin/NAME ARGS as one step: it prints the heading, the command
// line and what the command printed (stdout and stderr interleaved, as a
// terminal shows them), and fails unless the command exits with want.
func step(what string, want int, name string, args ...string) (string, error) {
	bin := filepath.Join("bin", name)
	heading(what, shellLine(append([]string{bin}, args...)))
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	c, err := launch(cmd)
	if err != nil {
		return "", fmt.Errorf("step %d: %w", stepN, err)
	}
	<-c.exited
	code := cmd.ProcessState.ExitCode()
	os.Stdout.Write(out.Bytes())
	fmt.Printf("   (exit status %d)\n", code)
	if code != want {
		return out.String(), fmt.Errorf("step %d (%s): %s exited %d, want %d", stepN, what, name, code, want)
	}
	return out.String(), nil
}

// mustContain fails the current step unless out holds every one of subs.
func mustContain(out string, subs ...string) error {
	for _, s := range subs {
		if !strings.Contains(out, s) {
			return fmt.Errorf("step %d: the output lacks %q", stepN, s)
		}
	}
	return nil
}

// shellLine writes args as a reader would type them into a shell.
func shellLine(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = a
		safe := a != ""
		for _, r := range a {
			if !unicode.IsLetter(r) && !unicode.IsDigit(r) && !strings.ContainsRune("@%+=:,./_-", r) {
				safe = false
			}
		}
		if !safe {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}

// tableIDs returns the IDs of a search table's rows (DATE TIME ID ...),
// sorted.
func tableIDs(out string) []string {
	var ids []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && len(f[0]) == len("2006-01-02") && f[0][4] == '-' {
			ids = append(ids, f[2])
		}
	}
	sort.Strings(ids)
	return ids
}

// search runs one search step and checks that its table lists exactly the
// items want.
func search(what, archive, query string, want ...string) error {
	out, err := step(what, 0, "mailarchive", "search", "-d", archive, query)
	if err != nil {
		return err
	}
	sort.Strings(want)
	if got := tableIDs(out); strings.Join(got, " ") != strings.Join(want, " ") {
		return fmt.Errorf("step %d: search %s found %v, want %v", stepN, query, got, want)
	}
	return nil
}

// itemIDs maps each sample to the ID of the item holding its message: the
// archive keeps the bytes exactly, so the item is the .eml equal to the
// sample's data.
func itemIDs(archiveDir string) ([]string, error) {
	ids := make([]string, len(samples))
	emls, _ := filepath.Glob(filepath.Join(archiveDir, "*.eml"))
	for _, e := range emls {
		b, err := os.ReadFile(e)
		if err != nil {
			return nil, err
		}
		for i, s := range samples {
			if string(b) == s.data {
				ids[i] = strings.TrimSuffix(filepath.Base(e), ".eml")
			}
		}
	}
	for i, id := range ids {
		if id == "" {
			return nil, fmt.Errorf("%s: not archived", samples[i].what)
		}
	}
	return ids, nil
}

// copyTree copies the directory tree src to dst (regular files and
// directories, with their modes).
func copyTree(src, dst string) error {
	return filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(to, fi.Mode().Perm()|0o700)
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}

// filedEML returns the path of item ID's message in the dated tree under
// root.
func filedEML(root, id string) (string, error) {
	m, _ := filepath.Glob(filepath.Join(root, "[0-9][0-9][0-9][0-9]", "[0-9][0-9]", "[0-9][0-9]", id+".eml"))
	if len(m) != 1 {
		return "", fmt.Errorf("%s.eml is not in the dated tree under %s", id, root)
	}
	return m[0], nil
}

// tamper flips the lowest bit of the first byte of word in file and
// prints the line before and after.
func tamper(file, word string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	i := bytes.Index(b, []byte(word))
	if i < 0 {
		return fmt.Errorf("%s does not contain %q", file, word)
	}
	line := func() string {
		l := b[bytes.LastIndexByte(b[:i], '\n')+1:]
		if e := bytes.IndexByte(l, '\n'); e >= 0 {
			l = l[:e]
		}
		return string(bytes.TrimSuffix(l, []byte("\r")))
	}
	before := line()
	b[i] ^= 1
	fmt.Printf("byte %d of %s: %q -> %q\n", i, file, before, line())
	// Written in place, as a careless hand (or an intruder) would.
	return os.WriteFile(file, b, 0o640)
}

// workflow runs the compliance officer's steps on the archive at archive
// (relative to the repository, as the reader would type it), whose items
// hold the samples' messages (ids[i] is sample i's item). Keys, proofs and
// exports go under out, never a system path.
func workflow(out, archive string, ids []string) error {
	fmt.Printf("\n== A compliance officer's session with mailarchive, on %s\n", archive)
	keys := filepath.Join(out, "keys")
	signer, verifier := filepath.Join(keys, "signer.key"), filepath.Join(keys, "verifier.pub")
	tampered := filepath.Join(out, "tampered")
	proof := filepath.Join(out, "proof.json")
	mbox := filepath.Join(out, "alice.mbox")

	o, err := step("file the items into dated directories YYYY/MM/DD/ (cron or the systemd timer runs the filer)", 0,
		"filer", archive)
	if err != nil {
		return err
	}
	if err := mustContain(o, fmt.Sprintf("filed %d,", len(samples))); err != nil {
		return err
	}
	for _, id := range ids {
		if _, err := filedEML(archive, id); err != nil {
			return fmt.Errorf("step %d: %w", stepN, err)
		}
	}

	o, err = step("build the search catalog (a cache: the files stay the record; run it after each filer run)", 0,
		"mailarchive", "index", "-d", archive)
	if err != nil {
		return err
	}
	if err := mustContain(o, fmt.Sprintf("%d added", len(samples))); err != nil {
		return err
	}

	if err := search("search by sender: everything alice@example.org sent", archive,
		"from:alice@example.org", ids[0], ids[1], ids[3]); err != nil {
		return err
	}
	if err := search("search the text for a word (of an 8-bit UTF-8 body; case does not matter)", archive,
		"body:schöne", ids[2]); err != nil {
		return err
	}
	if err := search("search by envelope recipient: dave@example.net got the quarterly report as a Bcc (he is in no header)", archive,
		"rcpt:dave@example.net", ids[0]); err != nil {
		return err
	}

	o, err = step("show one item: its envelope (with the Bcc recipient) and the decoded message", 0,
		"mailarchive", "show", "-d", archive, ids[0])
	if err != nil {
		return err
	}
	if err := mustContain(o, ids[0], "dave@example.net", "Quarterly report", "Hello Bob and Carol"); err != nil {
		return err
	}

	if err := os.MkdirAll(keys, 0o700); err != nil {
		return err
	}
	if _, err := step("make the log's key pair: the signer stays with the archive, the verifier (printed) goes to the officer", 0,
		"mailarchive", "keygen", "--signer", signer, "--verifier", verifier, "--name", "demo.example/mailarchive"); err != nil {
		return err
	}
	if fi, err := os.Stat(signer); err != nil || fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("step %d: the signer key %s is missing or readable by others (%v)", stepN, signer, err)
	}

	o, err = step("seal: append every filed item to the signed log (a Merkle tree) and sign a checkpoint", 0,
		"mailarchive", "seal", "-d", archive, "--signer", signer)
	if err != nil {
		return err
	}
	if err := mustContain(o, fmt.Sprintf("appended %d,", len(samples))); err != nil {
		return err
	}

	o, err = step("verify: re-hash every item and check the log against the verifier key (clean: exit 0; --textfile: for Prometheus)", 0,
		"mailarchive", "verify", "-d", archive, "--key", verifier, "--textfile", filepath.Join(out, "verify.prom"))
	if err != nil {
		return err
	}
	if err := mustContain(o, "clean", fmt.Sprintf("%d items", len(samples))); err != nil {
		return err
	}

	// Sample 3's text: "Only Bob gets this."
	heading("tamper with a copy of the archive: flip one bit of one message in "+tampered,
		"cp -a "+archive+" "+tampered+"   # then change one byte of "+ids[3]+".eml")
	if err := copyTree(archive, tampered); err != nil {
		return fmt.Errorf("step %d: copy %s: %w", stepN, archive, err)
	}
	victim, err := filedEML(tampered, ids[3])
	if err != nil {
		return fmt.Errorf("step %d: %w", stepN, err)
	}
	if err := tamper(victim, "Bob gets"); err != nil {
		return fmt.Errorf("step %d: %w", stepN, err)
	}

	o, err = step("verify the tampered copy: it names the altered item (findings: exit 1)", 1,
		"mailarchive", "verify", "-d", tampered, "--key", verifier, "--textfile", filepath.Join(out, "verify-tampered.prom"))
	if err != nil {
		return err
	}
	if err := mustContain(o, "altered-eml id="+ids[3], "1 findings"); err != nil {
		return err
	}

	if _, err = step("proof: a self-contained bundle showing one message is in the signed log, unchanged", 0,
		"mailarchive", "proof", "-d", archive, ids[0], "-o", proof); err != nil {
		return err
	}
	if err := summarizeProof(proof, ids[0]); err != nil {
		return err
	}

	o, err = step("verify-proof: anyone with the bundle and the verifier key can check it, without the archive", 0,
		"mailarchive", "verify-proof", proof, "--key", verifier)
	if err != nil {
		return err
	}
	if err := mustContain(o, "OK: "+ids[0]); err != nil {
		return err
	}

	if _, err = step("export what alice@example.org sent as an mbox file, for a mail client or a lawyer", 0,
		"mailarchive", "export", "-d", archive, "--format", "mbox", "-o", mbox, "from:alice@example.org"); err != nil {
		return err
	}
	return checkMbox(mbox, samples[0].data, samples[1].data, samples[3].data)
}

// checkMbox checks that the mbox holds exactly the messages msgs, each
// byte for byte (none of them has a line that mboxrd would quote).
func checkMbox(mbox string, msgs ...string) error {
	b, err := os.ReadFile(mbox)
	if err != nil {
		return fmt.Errorf("step %d: %w", stepN, err)
	}
	if n := bytes.Count(append([]byte("\n"), b...), []byte("\nFrom ")); n != len(msgs) {
		return fmt.Errorf("step %d: %s holds %d messages, want %d", stepN, mbox, n, len(msgs))
	}
	for _, m := range msgs {
		if !bytes.Contains(b, []byte(m)) {
			return fmt.Errorf("step %d: %s lacks the archived bytes of a message", stepN, mbox)
		}
	}
	fmt.Printf("%s: %d messages (%d bytes), each the archived bytes\n", mbox, len(msgs), len(b))
	return nil
}

// summarizeProof prints what the proof bundle holds, and fails unless it
// is a bundle for item id.
func summarizeProof(file, id string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("step %d: %w", stepN, err)
	}
	var p struct {
		Format     string   `json:"format"`
		ID         string   `json:"id"`
		LeafIndex  int      `json:"leaf_index"`
		TreeSize   int      `json:"tree_size"`
		Inclusion  []string `json:"inclusion"`
		Checkpoint string   `json:"checkpoint"`
		EML        string   `json:"eml"`
		JSON       string   `json:"json"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("step %d: %s: %w", stepN, file, err)
	}
	if p.ID != id || p.Checkpoint == "" || p.EML == "" || p.JSON == "" || p.TreeSize == 0 {
		return fmt.Errorf("step %d: %s is not a complete proof bundle for %s", stepN, file, id)
	}
	fmt.Printf("%s (%s, %d bytes): the item's .eml and .json, its leaf %d, %d hashes of inclusion proof,\n"+
		"and the checkpoint signed at tree size %d\n", file, p.Format, len(b), p.LeafIndex, len(p.Inclusion), p.TreeSize)
	return nil
}
