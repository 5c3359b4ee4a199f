package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"testing"
)

func TestRequestRoundTrip(t *testing.T) {
	r := request{ID: 1<<63 + 5, Ops: []op{
		{Kind: opPut, Key: "k", Value: []byte("v")},
		{Kind: opPut, Key: "bin\x00\xff", Value: []byte{}, Cond: condRev, CondRev: 300},
		{Kind: opDelete, Key: "gone", Cond: condExists},
		{Kind: opPut, Key: "new", Value: []byte("x"), Cond: condAbsent},
	}}
	got, err := decodeRequest(encodeRequest(r))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, r)
	}
}

// Every prefix and every single-byte corruption of a valid entry decodes to
// an error or a valid request, never a panic; truncations are always errors.
func TestDecodeRequestRejectsDamage(t *testing.T) {
	valid := encodeRequest(request{ID: 7, Ops: []op{
		{Kind: opPut, Key: "key", Value: []byte("value"), Cond: condRev, CondRev: 3},
		{Kind: opDelete, Key: "other"},
	}})
	for i := range valid {
		if _, err := decodeRequest(valid[:i]); !errors.Is(err, errCorrupt) {
			t.Fatalf("prefix of %d bytes: err = %v, want errCorrupt", i, err)
		}
		damaged := bytes.Clone(valid)
		damaged[i] ^= 0xff
		decodeRequest(damaged)
	}
	for name, data := range map[string][]byte{
		"trailing byte": append(bytes.Clone(valid), 0),
		"empty key":     encodeRequest(request{Ops: []op{{Kind: opPut, Key: ""}}}),
		"no ops":        encodeRequest(request{ID: 1}),
		"unknown kind":  encodeRequest(request{Ops: []op{{Kind: 9, Key: "k"}}}),
		"unknown cond":  encodeRequest(request{Ops: []op{{Kind: opDelete, Key: "k", Cond: 9}}}),
	} {
		if _, err := decodeRequest(data); !errors.Is(err, errCorrupt) {
			t.Errorf("%s: err = %v, want errCorrupt", name, err)
		}
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	items := newKVTree()
	items.ReplaceOrInsert(kvItem{Key: "k", Value: []byte("v"), Rev: 9})
	items.ReplaceOrInsert(kvItem{Key: "a", Value: []byte{}, Rev: 4})
	kv := kvState{Items: items, HistStart: 3, History: []event{
		{Type: opPut, Key: "a", Value: []byte{}, Rev: 4},
		{Type: opDelete, Key: "b", Value: []byte{}, Rev: 5},
		{Type: opPut, Key: "k", Value: []byte("v"), Rev: 9},
	}}
	s := snapshotState{
		Members: map[uint64]string{1: "http://a:1", 4: "http://b:2"},
		Removed: []uint64{2, 3},
	}
	got, err := decodeSnapshot(encodeSnapshot(s))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Fatalf("round trip: %+v", got)
	}
	gotKV, err := decodeKV(encodeKV(kv))
	if err != nil {
		t.Fatal(err)
	}
	var keys []kvItem
	gotKV.Items.Ascend(func(it kvItem) bool { keys = append(keys, it); return true })
	want := []kvItem{{"a", []byte{}, 4}, {"k", []byte("v"), 9}}
	if !reflect.DeepEqual(keys, want) || gotKV.HistStart != 3 || !reflect.DeepEqual(gotKV.History, kv.History) {
		t.Fatalf("kv round trip: %+v start %d history %+v", keys, gotKV.HistStart, gotKV.History)
	}
	enc := encodeSnapshot(s)
	for i := range enc {
		if _, err := decodeSnapshot(enc[:i]); err == nil {
			t.Fatalf("truncated snapshot of %d bytes accepted", i)
		}
	}
}

// A state file that is cut short, has a byte changed or has bytes after
// it is refused: restoring it would silently lose or change data.
func TestStateFileDamageDetected(t *testing.T) {
	items := newKVTree()
	for i := range 50 {
		items.ReplaceOrInsert(kvItem{Key: fmt.Sprintf("key-%03d", i), Value: bytes.Repeat([]byte{byte(i)}, i), Rev: uint64(i + 1)})
	}
	enc := encodeKV(kvState{Items: items, HistStart: 7, History: []event{{Type: opDelete, Key: "x", Rev: 60}}})
	if _, err := decodeKV(enc); err != nil {
		t.Fatal(err)
	}
	for i := range enc {
		if _, err := decodeKV(enc[:i]); !errors.Is(err, errCorrupt) {
			t.Fatalf("state cut to %d of %d bytes: err %v", i, len(enc), err)
		}
		bad := bytes.Clone(enc)
		bad[i] ^= 0x10
		if _, err := decodeKV(bad); !errors.Is(err, errCorrupt) {
			t.Fatalf("state with byte %d changed: err %v", i, err)
		}
	}
	if _, err := decodeKV(append(bytes.Clone(enc), 0)); !errors.Is(err, errCorrupt) {
		t.Fatalf("state with a trailing byte: err %v", err)
	}
	// A huge claimed count must not allocate: it is bounded by the input.
	if _, err := decodeKV([]byte{stateVersion, 0xff, 0xff, 0xff, 0xff, 0x0f}); err == nil {
		t.Fatal("absurd count accepted")
	}
}

// Values restored from a state file are allocated at their own size, so a
// restored store does not keep read buffers alive.
func TestStateFileValuesExact(t *testing.T) {
	items := newKVTree()
	items.ReplaceOrInsert(kvItem{Key: "k", Value: make([]byte, 256), Rev: 1})
	st, err := decodeKV(encodeKV(kvState{Items: items}))
	if err != nil {
		t.Fatal(err)
	}
	it, _ := st.Items.Get(kvItem{Key: "k"})
	if len(it.Value) != 256 || cap(it.Value) != 256 {
		t.Fatalf("value len %d cap %d, want 256/256", len(it.Value), cap(it.Value))
	}
}

// encodeKV and decodeKV are writeKV and readKV on a buffer.
func encodeKV(s kvState) []byte {
	var b bytes.Buffer
	if err := writeKV(&b, s); err != nil {
		panic(err) // a bytes.Buffer does not fail
	}
	return b.Bytes()
}

func decodeKV(data []byte) (kvState, error) { return readKV(bytes.NewReader(data), int64(len(data))) }

// emptyState is a snapshot encoder for raft tests that run without a kvstore.
func emptyState(w io.Writer) error { return writeKV(w, kvState{Items: newKVTree()}) }

// countingWriter counts what is written to it.
type countingWriter int64

func (w *countingWriter) Write(p []byte) (int, error) {
	*w += countingWriter(len(p))
	return len(p), nil
}
