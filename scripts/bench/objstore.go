package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/s3test"
	"github.com/postfix-archive/mailarchive/objstore"
)

// objstoreConcurrency are the filer's --concurrency values measured: one
// at a time, and the default. On a real network each request waits for
// the round trip and concurrency hides it; on loopback here the server's
// CPU bounds, and the 2 shared cores give concurrency little room.
var objstoreConcurrency = []int{1, 8}

// objstoreUpload compares filer --to s3:// uploading 10 KiB items into a
// locked bucket on a local versitygw with a plain loop of single PUTs with
// the same SDK (one PUT per file, .eml and .json, as "aws s3 cp --recursive"
// would; no lock, no HEAD, no record, no removal): the price of the filer's
// guarantees, and what its concurrency buys back.
func (b *bench) objstoreUpload() (err error) {
	fbin := filepath.Join(b.bin, "filer")
	if _, err := os.Stat(fbin); err != nil {
		b.add(row{what: "objstore", setup: "not measured: bin/filer missing"})
		return nil
	}
	if _, err := s3test.Binary(); err != nil {
		b.add(row{what: "objstore", setup: "not measured: " + err.Error() + " (scripts/install-peers.sh versitygw)"})
		return nil
	}
	t := &benchTB{work: b.work}
	defer t.done()
	defer catch(&err)
	srv := s3test.Start(t)
	srv.Env(t)
	srv.Bucket(t, "bench", true)
	st := srv.Store(t, "s3://bench")
	n := b.n(2000, 100)
	setups := len(objstoreConcurrency) + 1 // the last is the PUT loop
	times := make([][]time.Duration, setups)
	for round := 0; round < b.rounds; round++ {
		for k := range setups {
			i := (k + round) % setups
			root := filepath.Join(b.work, fmt.Sprintf("objstore-%d-%d", round, i))
			ids, err := makeSizedItems(root, n, 10<<10)
			if err != nil {
				return err
			}
			exec.Command("sync").Run()
			prefix := "r" + strconv.Itoa(round) + "s" + strconv.Itoa(i)
			var d time.Duration
			name := "PUT loop"
			if i < len(objstoreConcurrency) {
				c := strconv.Itoa(objstoreConcurrency[i])
				name = "filer --concurrency " + c
				d, err = timed(fbin, "-q", "--to", "s3://bench/"+prefix, "--concurrency", c, root)
				if err == nil {
					if left, _ := filepath.Glob(filepath.Join(root, "*.eml")); len(left) != 0 {
						err = fmt.Errorf("filer left %d items local", len(left))
					}
				}
			} else {
				d, err = putLoop(st, root, prefix, ids)
			}
			if err != nil {
				return err
			}
			times[i] = append(times[i], d)
			log.Printf("objstore round %d %s: %v", round, name, d.Round(time.Millisecond))
			os.RemoveAll(root)
		}
	}
	rl := float64(n) / medianDur(times[setups-1]).Seconds()
	what := fmt.Sprintf("objstore, %d items of 10 KiB into a locked bucket (versitygw, loopback)", n)
	b.add(row{what: what, setup: "plain loop of single PutObject, .eml and .json (same SDK; no lock, no HEAD)", figure: fmt.Sprintf("%.0f items/s", rl)})
	for i, c := range objstoreConcurrency {
		rf := float64(n) / medianDur(times[i]).Seconds()
		b.add(row{what: what, setup: fmt.Sprintf("bin/filer --to s3:// --concurrency %d (2 PUT + 2 HEAD + record + removal per item)", c),
			figure: fmt.Sprintf("%.0f items/s", rf), ratio: fmt.Sprintf("%.2f × loop", rf/rl)})
	}
	return nil
}

// makeSizedItems writes n complete items with messages of size bytes.
func makeSizedItems(root string, n, size int) ([]string, error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	body := make([]byte, size)
	rand.Read(body)
	for i := range body {
		body[i] = 'a' + body[i]%26
	}
	ids := make([]string, n)
	for i := range n {
		id, err := archive.NewID(time.Now())
		if err != nil {
			return nil, err
		}
		msg := append([]byte("Subject: "+id+"\r\n\r\n"), body...)
		if err := os.WriteFile(filepath.Join(root, id+".eml"), msg, 0o640); err != nil {
			return nil, err
		}
		env := fmt.Sprintf(`{"version":1,"id":%q,"source":"proxy","outcome":"accepted","message":{"size":%d}}`+"\n", id, len(msg))
		if err := os.WriteFile(filepath.Join(root, id+".json"), []byte(env), 0o640); err != nil {
			return nil, err
		}
		ids[i] = id
	}
	return ids, nil
}

// putLoop PUTs each item's files, one after the other.
func putLoop(st *objstore.Store, root, prefix string, ids []string) (time.Duration, error) {
	start := time.Now()
	for _, id := range ids {
		for _, ext := range []string{".eml", ".json"} {
			p := filepath.Join(root, id+ext)
			b, err := os.ReadFile(p)
			if err != nil {
				return 0, err
			}
			sum := sha256.Sum256(b)
			if _, err := st.Put(context.Background(), prefix+"/"+id+ext, p, sum[:], objstore.Lock{}); err != nil {
				return 0, err
			}
		}
	}
	return time.Since(start), nil
}
