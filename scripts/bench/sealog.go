package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
)

// logCost measures `mailarchive seal` of n new items, and `mailarchive
// verify` of them against sha256sum over the same files (verify must be
// bounded by reading the bytes: target ≥ 0.8 × sha256sum's rate).
func (b *bench) logCost() error {
	mbin := filepath.Join(b.bin, "mailarchive")
	if _, err := os.Stat(mbin); err != nil {
		b.add(row{what: "log seal/verify", setup: "not measured yet: bin/mailarchive missing", target: "verify ≥ 0.8 × sha256sum"})
		return nil
	}
	n := b.n(100000, 1000)
	root := filepath.Join(b.work, "log-root")
	defer os.RemoveAll(root)
	files, bytes, err := makeSealItems(root, n)
	if err != nil {
		return err
	}
	keys := filepath.Join(b.work, "log-keys")
	os.MkdirAll(keys, 0o700)
	skey, vkey := filepath.Join(keys, "signer"), filepath.Join(keys, "verifier")
	if _, err := timed(mbin, "keygen", "--signer", skey, "--verifier", vkey, "--name", "bench/log"); err != nil {
		return err
	}
	exec.Command("sync").Run()
	d, err := timed(mbin, "seal", "-d", root, "--signer", skey)
	if err != nil {
		return err
	}
	b.add(row{what: "seal", setup: fmt.Sprintf("%d new items (8 KiB each)", n),
		figure: fmt.Sprintf("%.0f items/s (%.1fs)", float64(n)/d.Seconds(), d.Seconds())})

	// The file list for sha256sum, written once; both read warm caches.
	list := filepath.Join(b.work, "log-files")
	if err := os.WriteFile(list, []byte(strings.Join(files, "\x00")), 0o644); err != nil {
		return err
	}
	var vt, st []float64
	for round := 0; round < b.rounds; round++ {
		for k := 0; k < 2; k++ {
			var d time.Duration
			var err error
			if (k+round)%2 == 0 {
				d, err = timed(mbin, "verify", "-d", root, "--key", vkey, "--textfile", "")
				vt = append(vt, d.Seconds())
			} else {
				d, err = timed("/bin/sh", "-c", "xargs -0 sha256sum < "+list+" > /dev/null")
				st = append(st, d.Seconds())
			}
			if err != nil {
				return err
			}
		}
	}
	v, s := median(vt), median(st)
	ratio := s / v
	b.add(row{what: "verify", setup: fmt.Sprintf("%d items, %d files, %.0f MiB", n, len(files), float64(bytes)/(1<<20)),
		figure: fmt.Sprintf("%.0f items/s (%.2fs; sha256sum %.2fs)", float64(n)/v, v, s),
		ratio:  fmt.Sprintf("%.2f × sha256sum", ratio), target: "≥ 0.8 × sha256sum", verdict: verdict(ratio >= 0.8)})
	return nil
}

// makeSealItems writes n items with true envelopes (seal refuses others)
// over 30 days of the dated tree, and returns their file names and bytes.
func makeSealItems(root string, n int) ([]string, int64, error) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	body := []byte("Subject: bench\r\n\r\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 128))
	sum := sha256.Sum256(body)
	var files []string
	var total int64
	for i := 0; i < n; i++ {
		stamp := base.Add(time.Duration(i%30)*24*time.Hour + time.Duration(i)*time.Second)
		id, err := archive.NewID(stamp)
		if err != nil {
			return nil, 0, err
		}
		dir := filepath.Join(root, archive.DatedDir(stamp, false))
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, 0, err
		}
		env := fmt.Sprintf(`{"version":1,"id":%q,"source":"proxy","archived_at":%q,"outcome":"accepted","message":{"size":%d,"sha256":%q}}`+"\n",
			id, stamp.Format(time.RFC3339Nano), len(body), hex.EncodeToString(sum[:]))
		eml, js := filepath.Join(dir, id+".eml"), filepath.Join(dir, id+".json")
		if err := os.WriteFile(eml, body, 0o640); err != nil {
			return nil, 0, err
		}
		if err := os.WriteFile(js, []byte(env), 0o640); err != nil {
			return nil, 0, err
		}
		files = append(files, eml, js)
		total += int64(len(body) + len(env))
	}
	return files, total, nil
}
