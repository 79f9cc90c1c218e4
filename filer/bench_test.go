package filer

import (
	"testing"
	"time"
)

// BenchmarkFile files b.N pending items (spread over a few days) in one run;
// an op is one item. For the 100,000-item backlog:
//
//	go test -run '^$' -bench BenchmarkFile -benchtime 100000x ./filer/
func BenchmarkFile(b *testing.B) {
	root := b.TempDir()
	for i := range b.N {
		writeItem(b, root, t0.Add(time.Duration(i)*7*time.Second), "x", "user")
	}
	b.ResetTimer()
	rep, err := Run(Options{Root: root, Recover: true})
	b.StopTimer()
	if err != nil || rep.Filed != b.N || len(rep.Problems) != 0 {
		b.Fatalf("%+v %v", rep, err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
}
