package main

import (
	"bytes"
	"errors"
	"testing"
)

func TestOpRoundTrip(t *testing.T) {
	for _, o := range []op{
		{Kind: opPut, ID: 1<<63 + 5, Key: "k", Value: []byte("v")},
		{Kind: opPut, ID: 0, Key: "bin\x00\xff", Value: nil},
		{Kind: opDelete, ID: 42, Key: "gone"},
	} {
		got, err := decodeOp(encodeOp(o))
		if err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		if got.Kind != o.Kind || got.ID != o.ID || got.Key != o.Key || !bytes.Equal(got.Value, o.Value) {
			t.Fatalf("round trip %+v -> %+v", o, got)
		}
	}
}

// Every prefix and every single-byte corruption of a valid entry decodes to
// an error or a valid op, never a panic; truncations are always errors.
func TestDecodeOpRejectsDamage(t *testing.T) {
	valid := encodeOp(op{Kind: opPut, ID: 7, Key: "key", Value: []byte("value")})
	for i := range valid {
		if _, err := decodeOp(valid[:i]); !errors.Is(err, errCorrupt) {
			t.Fatalf("prefix of %d bytes: err = %v, want errCorrupt", i, err)
		}
		damaged := bytes.Clone(valid)
		damaged[i] ^= 0xff
		decodeOp(damaged)
	}
	if _, err := decodeOp(append(bytes.Clone(valid), 0)); !errors.Is(err, errCorrupt) {
		t.Fatalf("trailing byte: err = %v", err)
	}
	if _, err := decodeOp(encodeOp(op{Kind: opPut, Key: ""})); err == nil {
		t.Fatal("empty key accepted")
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	s := snapshotState{
		Members: map[uint64]string{1: "http://a:1", 4: "http://b:2"},
		Removed: []uint64{2, 3},
		KV:      encodeKV(map[string]kvValue{"k": {Value: []byte("v"), Rev: 9}}),
	}
	got, err := decodeSnapshot(encodeSnapshot(s))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Members) != 2 || got.Members[4] != "http://b:2" || len(got.Removed) != 2 || !bytes.Equal(got.KV, s.KV) {
		t.Fatalf("round trip: %+v", got)
	}
	enc := encodeSnapshot(s)
	for i := range enc {
		if _, err := decodeSnapshot(enc[:i]); err == nil {
			t.Fatalf("truncated snapshot of %d bytes accepted", i)
		}
	}
	// A huge claimed count must not allocate: it is bounded by the input.
	if _, err := decodeKV([]byte{codecVersion, 0xff, 0xff, 0xff, 0xff, 0x0f}); err == nil {
		t.Fatal("absurd count accepted")
	}
}
