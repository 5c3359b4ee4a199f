package wire_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"testing"

	"raftexample/internal/wire"
)

func TestSnapshotRoundTrip(t *testing.T) {
	items := []wire.Item{{Key: "a", Value: []byte{}, Rev: 4, CreateRev: 2}, {Key: "k", Value: []byte("v"), Rev: 9, CreateRev: 9, Lease: 7}}
	h := wire.History{Start: 3, Events: []wire.Event{
		{Type: wire.Put, Key: "a", Value: []byte{}, Rev: 4},
		{Type: wire.Delete, Key: "b", Value: []byte{}, Rev: 5},
		{Type: wire.Put, Key: "k", Value: []byte("v"), Rev: 9},
	}}
	m := wire.Membership{
		Members: map[uint64]string{1: "http://a:1", 4: "http://b:2"},
		Removed: []uint64{2, 3},
	}
	got, err := wire.DecodeMembership(wire.EncodeMembership(m))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip: %+v", got)
	}
	gotItems, gotH, err := decodeState(encodeState(items, h))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotItems, items) || gotH.Start != 3 || !reflect.DeepEqual(gotH.Events, h.Events) {
		t.Fatalf("kv round trip: %+v start %d history %+v", gotItems, gotH.Start, gotH.Events)
	}
	enc := wire.EncodeMembership(m)
	for i := range enc {
		if _, err := wire.DecodeMembership(enc[:i]); err == nil {
			t.Fatalf("truncated snapshot of %d bytes accepted", i)
		}
	}
}

// A state file that is cut short, has a byte changed or has bytes after
// it is refused: restoring it would silently lose or change data.
func TestStateFileDamageDetected(t *testing.T) {
	var items []wire.Item
	for i := range 50 {
		items = append(items, wire.Item{Key: fmt.Sprintf("key-%03d", i), Value: bytes.Repeat([]byte{byte(i)}, i), Rev: uint64(i + 1)})
	}
	enc := encodeState(items, wire.History{Start: 7, Events: []wire.Event{{Type: wire.Delete, Key: "x", Rev: 60}}})
	if _, _, err := decodeState(enc); err != nil {
		t.Fatal(err)
	}
	for i := range enc {
		if _, _, err := decodeState(enc[:i]); !errors.Is(err, wire.ErrCorrupt) {
			t.Fatalf("state cut to %d of %d bytes: err %v", i, len(enc), err)
		}
		bad := bytes.Clone(enc)
		bad[i] ^= 0x10
		if _, _, err := decodeState(bad); !errors.Is(err, wire.ErrCorrupt) {
			t.Fatalf("state with byte %d changed: err %v", i, err)
		}
	}
	if _, _, err := decodeState(append(bytes.Clone(enc), 0)); !errors.Is(err, wire.ErrCorrupt) {
		t.Fatalf("state with a trailing byte: err %v", err)
	}
	// A huge claimed count must not allocate: it is bounded by the input.
	if _, _, err := decodeState([]byte{wire.StateVersion, 0xff, 0xff, 0xff, 0xff, 0x0f}); err == nil {
		t.Fatal("absurd count accepted")
	}
}

// Values restored from a state file are allocated at their own size, so a
// restored store does not keep read buffers alive.
func TestStateFileValuesExact(t *testing.T) {
	items, _, err := decodeState(encodeState([]wire.Item{{Key: "k", Value: make([]byte, 256), Rev: 1}}, wire.History{}))
	if err != nil {
		t.Fatal(err)
	}
	if v := items[0].Value; len(v) != 256 || cap(v) != 256 {
		t.Fatalf("value len %d cap %d, want 256/256", len(v), cap(v))
	}
}

// WriteState refuses a sequence that does not hold the number of items it
// announced: the file would not read back.
func TestWriteStateCountMismatch(t *testing.T) {
	items := []wire.Item{{Key: "a", Value: []byte("1"), Rev: 1}, {Key: "b", Value: []byte("2"), Rev: 2}}
	for _, n := range []int{0, 1, 3} {
		if err := wire.WriteState(io.Discard, n, slices.Values(items), wire.History{}, nil); err == nil {
			t.Errorf("%d items announced, 2 given: no error", n)
		}
	}
}

// errWriter counts writes and fails every one after the first ok.
type errWriter struct{ writes, ok int }

var errDisk = errors.New("disk full")

func (w *errWriter) Write(p []byte) (int, error) {
	if w.writes++; w.writes > w.ok {
		return 0, errDisk
	}
	return len(p), nil
}

// A failing writer's error is WriteState's, whether it fails in the items,
// in the history or at the checksum.
func TestWriteStateWriteError(t *testing.T) {
	var items []wire.Item
	var h wire.History
	for i := range 150 {
		items = append(items, wire.Item{Key: fmt.Sprintf("key-%03d", i), Value: make([]byte, 1024), Rev: uint64(i + 1)})
		h.Events = append(h.Events, wire.Event{Type: wire.Put, Key: fmt.Sprintf("key-%03d", i), Value: make([]byte, 1024), Rev: uint64(i + 1)})
	}
	whole := &errWriter{ok: 1 << 30}
	if err := wire.WriteState(whole, len(items), slices.Values(items), h, nil); err != nil {
		t.Fatal(err)
	}
	if whole.writes < 4 {
		t.Fatalf("%d writes: the state should span several chunks", whole.writes)
	}
	for ok := range whole.writes {
		if err := wire.WriteState(&errWriter{ok: ok}, len(items), slices.Values(items), h, nil); !errors.Is(err, errDisk) {
			t.Fatalf("writer failing after %d of %d writes: err %v", ok, whole.writes, err)
		}
	}
}
