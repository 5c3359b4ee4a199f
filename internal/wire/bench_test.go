package wire_test

import (
	"bytes"
	"testing"

	"raftexample/internal/wire"
)

// benchPut is a one-put request of a 16-byte key and a 256-byte value, as
// cmd/kvbench writes and as the root's bench_micro_test.go applies.
func benchPut() wire.Request {
	return wire.Request{ID: 1 << 40, Ops: []wire.Op{{Kind: wire.Put, Key: "k000000000000042", Value: bytes.Repeat([]byte{'v'}, 256)}}}
}

// BenchmarkEncodeRequest is what the proposer spends on one write's entry.
func BenchmarkEncodeRequest(b *testing.B) {
	r := benchPut()
	b.ReportAllocs()
	for b.Loop() {
		wire.EncodeRequest(r)
	}
}

// BenchmarkDecodeRequest is what every member spends on one write's entry
// before applying it.
func BenchmarkDecodeRequest(b *testing.B) {
	data := wire.EncodeRequest(benchPut())
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := wire.DecodeRequest(data); err != nil {
			b.Fatal(err)
		}
	}
}
