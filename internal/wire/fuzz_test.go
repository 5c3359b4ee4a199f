package wire_test

// Fuzz targets for the decoders of what the log and snapshots carry. Seed
// corpora are in testdata/fuzz/<target>/; the root's test.sh runs 10 000
// inputs of each, and
//
//	go test -run '^$' -fuzz '^FuzzDecodeRequest$' -fuzztime 10m ./internal/wire
//
// runs one for longer.

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"raftexample/internal/wire"
)

// Whatever the bytes of a log entry, decoding returns a request or
// ErrCorrupt, never panics; what it returns encodes and decodes to itself.
func FuzzDecodeRequest(f *testing.F) {
	f.Add(wire.EncodeRequest(wire.Request{ID: 1, Ops: []wire.Op{{Kind: wire.Put, Key: "k", Value: []byte("v")}}}))
	f.Add(wire.EncodeRequest(wire.Request{ID: 1 << 60, Ops: []wire.Op{
		{Kind: wire.Put, Key: "a\x00b", Value: []byte{0xff}, Cond: wire.CondRev, CondRev: 300},
		{Kind: wire.Delete, Key: "gone", Cond: wire.CondExists},
		{Kind: wire.Put, Key: "new", Value: nil, Cond: wire.CondAbsent},
	}}))
	f.Add(wire.EncodeRequest(wire.Request{ID: 2, Ops: []wire.Op{
		{Kind: wire.Put, Key: "k", Value: []byte("v"), Lease: 5, TTL: 3},
		{Kind: wire.LeaseExpire, Lease: 5, RefreshIndex: 4, Term: 2},
		{Kind: wire.LeaseCheckpoint, Checkpoints: []wire.Checkpoint{{Lease: 5, RefreshIndex: 4, Remaining: 9}}},
	}}))
	f.Add([]byte{})
	f.Add([]byte{wire.EntryVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := wire.DecodeRequest(data)
		if err != nil {
			if !errors.Is(err, wire.ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		if len(r.Ops) == 0 {
			t.Fatal("decoded a request without operations")
		}
		for _, o := range r.Ops {
			if o.Kind.IsLease() {
				if o.Key != "" || o.Cond != wire.CondNone {
					t.Fatalf("decoded an invalid lease op %+v", o)
				}
				continue
			}
			if o.Key == "" || (o.Kind != wire.Put && o.Kind != wire.Delete) || o.Cond > wire.CondExists {
				t.Fatalf("decoded an invalid op %+v", o)
			}
		}
		again, err := wire.DecodeRequest(wire.EncodeRequest(r))
		if err != nil || !sameRequest(again, r) {
			t.Fatalf("re-encoding %+v gave %+v, %v", r, again, err)
		}
	})
}

// sameRequest compares requests, treating nil and empty values alike.
func sameRequest(a, b wire.Request) bool {
	if a.ID != b.ID || len(a.Ops) != len(b.Ops) {
		return false
	}
	for i := range a.Ops {
		x, y := a.Ops[i], b.Ops[i]
		if x.Kind != y.Kind || x.Key != y.Key || !bytes.Equal(x.Value, y.Value) || x.Cond != y.Cond || x.CondRev != y.CondRev ||
			x.Lease != y.Lease || x.TTL != y.TTL || x.RefreshIndex != y.RefreshIndex || x.Term != y.Term ||
			len(x.Checkpoints) != len(y.Checkpoints) {
			return false
		}
		for j := range x.Checkpoints {
			if x.Checkpoints[j] != y.Checkpoints[j] {
				return false
			}
		}
	}
	return true
}

// Whatever the bytes of a snapshot's membership or of a state file,
// decoding returns a value or an error, never panics; a decoded value
// encodes and decodes to itself.
func FuzzDecodeSnapshot(f *testing.F) {
	f.Add(encodeState([]wire.Item{{Key: "bin\xff", Value: []byte{}, Rev: 4}, {Key: "k", Value: []byte("v"), Rev: 9}},
		wire.History{Start: 3, Events: []wire.Event{
			{Type: wire.Put, Key: "k", Value: []byte("v"), Rev: 9},
			{Type: wire.Delete, Key: "x", Rev: 10},
		}}))
	f.Add(encodeState(nil, wire.History{}))
	f.Add(wire.EncodeMembership(wire.Membership{Members: map[uint64]string{1: "http://127.0.0.1:1", 2: "http://127.0.0.1:2"}, Removed: []uint64{3}}))
	f.Add([]byte{wire.StateVersion})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		if m, err := wire.DecodeMembership(data); err == nil {
			again, err := wire.DecodeMembership(wire.EncodeMembership(m))
			if err != nil || !reflect.DeepEqual(again, m) {
				t.Fatalf("re-encoding the membership gave %+v, %v", again, err)
			}
		}
		items, h, leases, err := decodeStateLeases(data)
		if err != nil {
			return
		}
		items2, h2, leases2, err := decodeStateLeases(encodeStateLeases(items, h, leases))
		if err != nil || len(items2) != len(items) || h2.Start != h.Start || !reflect.DeepEqual(h2.Events, h.Events) || !reflect.DeepEqual(leases2, leases) {
			t.Fatalf("re-encoding the key-value state changed it (%v)", err)
		}
		for i, it := range items {
			if got := items2[i]; got.Key != it.Key || !bytes.Equal(got.Value, it.Value) || got.Rev != it.Rev || got.CreateRev != it.CreateRev || got.Lease != it.Lease {
				t.Fatalf("key %q changed in a round trip", it.Key)
			}
		}
	})
}
