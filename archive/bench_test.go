package archive

import (
	"bytes"
	"testing"
)

// BenchmarkCommit measures durable items of 10 KiB written by 20 concurrent
// writers (as 20 proxy sessions would): through the journal (the default),
// and without it (four fsyncs per item), with directory fsyncs shared
// (group commit) and, for comparison, each writer running its own.
//
//	go test -run '^$' -bench Commit -benchtime 2000x ./archive
func BenchmarkCommit(b *testing.B) {
	msg := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"), 160)
	for _, mode := range []string{"journal", "group", "each"} {
		b.Run(mode, func(b *testing.B) {
			s, err := Open(b.TempDir(), Options{NoJournal: mode != "journal"})
			if err != nil {
				b.Fatal(err)
			}
			if mode == "each" {
				s.tmpSync, s.rootSync = nil, nil
			}
			b.SetParallelism(10) // 2 cores × 10 = 20 writers
			b.SetBytes(int64(len(msg)))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					w, err := s.Create()
					if err != nil {
						b.Error(err)
						return
					}
					w.Write(msg)
					if err := w.Commit(&Envelope{Source: SourceProxy}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "items/s")
		})
	}
}

// BenchmarkCommitSerial is one writer's latency per durable 10 KiB item (one
// proxy session): Create, Write, Prepare, Commit; through the journal and
// without it.
func BenchmarkCommitSerial(b *testing.B) {
	msg := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"), 160)
	for _, mode := range []string{"journal", "classic"} {
		b.Run(mode, func(b *testing.B) {
			s, err := Open(b.TempDir(), Options{NoJournal: mode != "journal"})
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(msg)))
			for i := 0; i < b.N; i++ {
				w, err := s.Create()
				if err != nil {
					b.Fatal(err)
				}
				w.Write(msg)
				env := &Envelope{Source: SourceProxy}
				if err := w.Prepare(env); err != nil {
					b.Fatal(err)
				}
				if err := w.Commit(env); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
