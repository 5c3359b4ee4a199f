package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/etcd/client/pkg/v3/fileutil"
	"go.uber.org/zap"

	"raftexample/internal/wire"
)

// Microbenchmarks of the paths every write takes (apply on every member)
// and of snapshot encoding; encoding and decoding an entry alone are
// measured in internal/wire. Run with
//
//	go test -run '^$' -bench . -benchmem
//
// cmd/kvbench measures whole clusters; these isolate the state machine.

const benchValueSize = 256

func benchKey(i int) string { return fmt.Sprintf("k%015d", i) } // 16 bytes, as kvbench writes

func benchPut(id uint64, key int) wire.Request {
	return wire.Request{ID: id, Ops: []wire.Op{{Kind: wire.Put, Key: benchKey(key), Value: bytes.Repeat([]byte{'v'}, benchValueSize)}}}
}

func newBenchStore() *kvstore {
	return newTestKVStore(zap.NewNop(), 10000)
}

// loadBenchStore returns a store holding keys 0..n-1, written by the
// single-put entries 1..n.
func loadBenchStore(b *testing.B, n int) *kvstore {
	s := newBenchStore()
	ents := make([]committedEntry, 0, 1000)
	for k := range n {
		ents = append(ents, committedEntry{index: uint64(k + 1), data: wire.EncodeRequest(benchPut(uint64(k+1), k))})
		if len(ents) == cap(ents) || k == n-1 {
			s.apply(ents)
			ents = ents[:0]
		}
	}
	if got := s.len(); got != n {
		b.Fatalf("store holds %d keys, want %d", got, n)
	}
	return s
}

// benchApply applies batches of 100 committed entries, as one Ready's worth
// of writes, cycling through data; the first has index after+1.
func benchApply(b *testing.B, s *kvstore, after uint64, data [][]byte) {
	const batch = 100
	ents := make([]committedEntry, batch)
	index := after
	b.ReportAllocs()
	for b.Loop() {
		for i := range ents {
			index++
			ents[i] = committedEntry{index: index, data: data[index%uint64(len(data))]}
		}
		s.apply(ents)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/entry")
}

// BenchmarkApply applies single-put entries (256 B values) over a space of
// 10 000 keys, to an empty store.
func BenchmarkApply(b *testing.B) {
	const keys = 10000
	data := make([][]byte, keys)
	for k := range data {
		data[k] = wire.EncodeRequest(benchPut(uint64(k+1), k))
	}
	benchApply(b, newBenchStore(), 0, data)
}

// BenchmarkApplyMillion is BenchmarkApply on a store of 1 000 000 keys, where
// every look-up in the tree misses the CPU's caches: each write overwrites
// one of 1 000 keys spread over the whole key space.
func BenchmarkApplyMillion(b *testing.B) {
	const keys, spread = 1000000, 1000
	s := loadBenchStore(b, keys)
	data := make([][]byte, spread)
	for i := range data {
		data[i] = wire.EncodeRequest(benchPut(uint64(i+1), i*(keys/spread)+i))
	}
	benchApply(b, s, keys, data)
}

// BenchmarkSnapshotEncode captures and encodes the state of a store holding
// 100 000 keys with 256 B values: what every --snapshot-count entries costs.
func BenchmarkSnapshotEncode(b *testing.B) {
	s := loadBenchStore(b, 100000)
	var size int64
	b.ReportAllocs()
	for b.Loop() {
		var w countingWriter
		if err := s.getSnapshot()(&w); err != nil {
			b.Fatal(err)
		}
		size = int64(w)
	}
	b.SetBytes(size)
}

// BenchmarkSnapshotDecode decodes the state file of 100 000 keys with 256 B
// values: most of what a restart from a snapshot costs.
func BenchmarkSnapshotDecode(b *testing.B) {
	const keys = 100000
	st := kvState{Items: newKVTree()}
	for k := range keys {
		st.Items.ReplaceOrInsert(kvItem{Key: benchKey(k), Value: make([]byte, 256), Rev: uint64(k + 1)})
	}
	var buf bytes.Buffer
	if err := writeKV(&buf, st); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	for b.Loop() {
		got, err := readKV(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err != nil {
			b.Fatal(err)
		}
		if got.Items.Len() != keys {
			b.Fatalf("decoded %d keys, want %d", got.Items.Len(), keys)
		}
	}
}

// BenchmarkFdatasync is the disk's ceiling for the WAL: one 4 kB write and
// fdatasync per op, at the end of what was written before. "preallocated"
// writes into a file sized with fileutil.Preallocate, as etcd's WAL sizes
// every segment; on ext4 that leaves unwritten extents, so each sync also
// records their conversion. "zeroed" writes into a file of written zeros;
// "append" grows the file.
func BenchmarkFdatasync(b *testing.B) {
	const size = 64 << 20
	prepare := map[string]func(f *os.File) error{
		"preallocated": func(f *os.File) error { return fileutil.Preallocate(f, size, true) },
		"zeroed": func(f *os.File) error {
			_, err := f.Write(make([]byte, size))
			return err
		},
		"append": func(*os.File) error { return nil },
	}
	for _, name := range []string{"preallocated", "zeroed", "append"} {
		b.Run(name, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "wal"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			if err := prepare[name](f); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			page := make([]byte, 4096)
			var off int64
			for b.Loop() {
				if off+int64(len(page)) > size {
					off = 0 // rewrite from the start: every block is now written
				}
				if _, err := f.WriteAt(page, off); err != nil {
					b.Fatal(err)
				}
				if err := fileutil.Fdatasync(f); err != nil {
					b.Fatal(err)
				}
				off += int64(len(page))
			}
		})
	}
}
