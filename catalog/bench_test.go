package catalog

import (
	"github.com/postfix-archive/mailarchive/query"
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

// BenchmarkSearch opens the catalog and runs one query per op, as one
// mailarchive search does.
//
//	go test -run '^$' -bench Search ./catalog
func BenchmarkSearch(b *testing.B) {
	f := &fixture{root: b.TempDir()}
	g := mailgen.New(1, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Minute)
	var m mailgen.Msg
	for i := range 2000 {
		x := g.Next()
		if i == 100 {
			m = x
		}
		if _, err := archivetest.PutItem(f.root, x.Stamp, x.Env, x.Bytes); err != nil {
			b.Fatal(err)
		}
	}
	r, _ := openReader(f.root)
	if _, err := Update(ctx, r, DefaultPath(f.root), UpdateOptions{}); err != nil {
		b.Fatal(err)
	}
	for _, q := range []string{"subject:" + m.Subject[0], "from:" + m.From,
		"from:" + m.From + " AND (subject:" + m.Subject[0] + " OR " + g.Rarest(m.Body) + ") AND NOT has:attachment"} {
		n, err := query.Parse(q, query.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(q[:min(len(q), 30)], func(b *testing.B) {
			for range b.N {
				c, err := OpenRead(DefaultPath(f.root))
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.IDs(ctx, n, SearchOptions{}); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}
