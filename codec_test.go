package main

import (
	"bytes"
	"encoding/binary"
	"errors"
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
		KV:      encodeKV(kv),
	}
	got, err := decodeSnapshot(encodeSnapshot(s))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Members, s.Members) || !reflect.DeepEqual(got.Removed, s.Removed) || !bytes.Equal(got.KV, s.KV) {
		t.Fatalf("round trip: %+v", got)
	}
	gotKV, err := decodeKV(got.KV)
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
	// A huge claimed count must not allocate: it is bounded by the input.
	if _, err := decodeKV([]byte{codecVersion, 0xff, 0xff, 0xff, 0xff, 0x0f}); err == nil {
		t.Fatal("absurd count accepted")
	}
}

// encodeKV sizes its buffer exactly, so a large snapshot is not copied on
// growth nor over-allocated.
func TestEncodeKVSizesExactly(t *testing.T) {
	items := newKVTree()
	for i := range 1000 {
		items.ReplaceOrInsert(kvItem{Key: string(rune('a'+i%26)) + string(make([]byte, i%300)), Value: make([]byte, i), Rev: uint64(i) << 20})
	}
	b := encodeKV(kvState{Items: items, HistStart: 7, History: []event{{Type: opPut, Key: "k", Value: make([]byte, 200), Rev: 1 << 40}}})
	if slack := cap(b) - len(b); slack < 0 || slack > 3*binary.MaxVarintLen64 {
		t.Fatalf("buffer capacity %d for %d bytes", cap(b), len(b))
	}
}
