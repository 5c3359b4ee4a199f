package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"testing"

	"raftexample/internal/wire"
)

// A state written by writeKV reads back whole through readKV, with enough
// keys that treeBuilder hands over many batches and recycles them.
func TestKVStateRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 1025, 5000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			st := kvState{Items: newKVTree(), HistStart: 3, History: []event{
				{Type: wire.Put, Key: "a", Value: []byte{}, Rev: 4},
				{Type: wire.Delete, Key: "b", Value: []byte{}, Rev: 5},
			}}
			var want []kvItem
			for i := range n {
				it := kvItem{Key: fmt.Sprintf("key-%05d", i), Value: []byte(fmt.Sprint(i)), Rev: uint64(i + 1)}
				st.Items.ReplaceOrInsert(it)
				want = append(want, it)
			}
			var buf bytes.Buffer
			if err := writeKV(&buf, st); err != nil {
				t.Fatal(err)
			}
			got, err := readKV(&buf, int64(buf.Len()))
			if err != nil {
				t.Fatal(err)
			}
			var keys []kvItem
			got.Items.Ascend(func(it kvItem) bool { keys = append(keys, it); return true })
			if !reflect.DeepEqual(keys, want) || got.HistStart != 3 || !reflect.DeepEqual(got.History, st.History) {
				t.Fatalf("round trip of %d keys: %d keys, start %d, history %+v", n, len(keys), got.HistStart, got.History)
			}
		})
	}
}

// A damaged state file is an error from readKV, wherever the damage is,
// and the tree-building goroutine ends with it.
func TestKVStateDamaged(t *testing.T) {
	st := kvState{Items: newKVTree()}
	for i := range 3000 {
		st.Items.ReplaceOrInsert(kvItem{Key: fmt.Sprintf("key-%05d", i), Value: []byte("v"), Rev: uint64(i + 1)})
	}
	var buf bytes.Buffer
	if err := writeKV(&buf, st); err != nil {
		t.Fatal(err)
	}
	enc := buf.Bytes()
	for _, cut := range []int{0, 1, 3, len(enc) / 2, len(enc) - 1} {
		if _, err := readKV(bytes.NewReader(enc[:cut]), int64(cut)); !errors.Is(err, wire.ErrCorrupt) {
			t.Fatalf("state cut to %d of %d bytes: err %v", cut, len(enc), err)
		}
	}
}

// emptyState is a snapshot encoder for raft tests that run without a kvstore.
func emptyState(w io.Writer) error { return writeKV(w, kvState{Items: newKVTree()}) }

// countingWriter counts what is written to it.
type countingWriter int64

func (w *countingWriter) Write(p []byte) (int, error) {
	*w += countingWriter(len(p))
	return len(p), nil
}
