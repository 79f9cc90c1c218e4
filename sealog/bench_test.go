package sealog_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/sealog"
)

// BenchmarkVerify: verify of 5,000 sealed items, or $SEALOG_BENCH_ITEMS
// (go test -bench Verify -cpuprofile to see where a verify's time goes).
func BenchmarkVerify(b *testing.B) {
	t := &testing.T{}
	a := &testArchive{t: t, root: b.TempDir(), now: time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)}
	skey, vkey, _ := sealog.GenerateKeys("bench/log")
	a.signer, _ = sealog.ParseSigner(skey)
	a.vkey = vkey
	n := 5000
	if v, err := strconv.Atoi(os.Getenv("SEALOG_BENCH_ITEMS")); err == nil {
		n = v
	}
	for i := 0; i < n; i++ {
		a.addItem(a.now.Add(time.Duration(i)*time.Second), fmt.Sprint("item ", i))
	}
	a.now = a.now.Add(72 * time.Hour)
	a.file()
	a.seal()
	v, _ := sealog.LoadVerifier(vkey)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rep, err := sealog.Verify(context.Background(), sealog.VerifyOptions{Root: a.root, Verifier: v})
		if err != nil || !rep.Clean() || rep.Items != n {
			b.Fatalf("%v %+v", err, rep)
		}
	}
}
