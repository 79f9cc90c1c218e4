package catalog

import (
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/internal/archivetest"
	"github.com/postfix-archive/mailarchive/internal/mailgen"
)

// BenchmarkUpdate indexes b.N realistic messages (mailgen) from nothing.
//
//	go test -run '^$' -bench Update -benchtime 2000x ./catalog
func BenchmarkUpdate(b *testing.B) {
	f := &fixture{root: b.TempDir()}
	g := mailgen.New(1, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Minute)
	var size int64
	for range b.N {
		m := g.Next()
		size += int64(len(m.Bytes))
		if _, err := archivetest.PutItem(f.root, m.Stamp, m.Env, m.Bytes); err != nil {
			b.Fatal(err)
		}
	}
	r, err := openReader(f.root)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size / int64(b.N))
	b.ResetTimer()
	res, err := Update(ctx, r, DefaultPath(f.root), UpdateOptions{})
	if err != nil || res.Added != b.N {
		b.Fatalf("%v %+v", err, res)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}
