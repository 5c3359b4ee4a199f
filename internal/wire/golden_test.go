package wire_test

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"raftexample/internal/wire"
)

// The files in testdata/golden are never regenerated: a change that makes
// them decode differently, or makes the encoders write other bytes, changes
// a format that data directories and running clusters hold, and needs a new
// version instead. request.bin, membership.bin and state.bin were written
// by the encoders of commit e82c801 (EntryVersion1, MembershipVersion 2,
// StateVersion2), before the format moved to this package; request-v2.bin
// and state-v3.bin by those of EntryVersion 2 and StateVersion 3, which
// added leases. The old files must still decode as they did.

var goldenRequest = wire.Request{ID: 1<<63 + 5, Ops: []wire.Op{
	{Kind: wire.Put, Key: "k", Value: []byte("v")},
	{Kind: wire.Put, Key: "bin\x00\xff", Value: []byte{}, Cond: wire.CondRev, CondRev: 300},
	{Kind: wire.Delete, Key: "gone", Cond: wire.CondExists},
	{Kind: wire.Put, Key: "new", Value: []byte("x"), Cond: wire.CondAbsent},
	{Kind: wire.Delete, Key: "plain"},
}}

// goldenRequestV2 has every kind of op of EntryVersion 2.
var goldenRequestV2 = wire.Request{ID: 1<<63 + 6, Ops: []wire.Op{
	{Kind: wire.Put, Key: "k", Value: []byte("v"), Lease: 300},
	{Kind: wire.Put, Key: "own", Value: []byte{}, TTL: 30 * time.Second, Cond: wire.CondAbsent},
	{Kind: wire.Delete, Key: "gone", Cond: wire.CondRev, CondRev: 12},
	{Kind: wire.LeaseGrant, Lease: 9, TTL: 10 * time.Second},
	{Kind: wire.LeaseGrant, TTL: time.Second},
	{Kind: wire.LeaseKeepalive, Lease: 9},
	{Kind: wire.LeaseRevoke, Lease: 1 << 40},
	{Kind: wire.LeaseExpire, Lease: 9, RefreshIndex: 77, Term: 3},
	{Kind: wire.LeaseCheckpoint, Checkpoints: []wire.Checkpoint{{Lease: 9, RefreshIndex: 77, Remaining: 4 * time.Second}, {Lease: 10, RefreshIndex: 5, Remaining: 1}}},
}}

var goldenMembership = wire.Membership{Members: map[uint64]string{7: "http://127.0.0.1:12379"}, Removed: []uint64{2, 300}}

var goldenItems = []wire.Item{
	{Key: "a", Value: []byte{}, Rev: 4},
	{Key: "bin\x00\xff", Value: []byte{0, 0xff, 1}, Rev: 200},
	{Key: "k", Value: []byte("v"), Rev: 9},
}

var goldenHistory = wire.History{Start: 3, Events: []wire.Event{
	{Type: wire.Put, Key: "a", Value: []byte{}, Rev: 4},
	{Type: wire.Delete, Key: "b", Value: []byte{}, Rev: 5},
	{Type: wire.Put, Key: "k", Value: []byte("v"), Rev: 9},
	{Type: wire.Put, Key: "bin\x00\xff", Value: []byte{0, 0xff, 1}, Rev: 200},
}}

var goldenItemsV3 = []wire.Item{
	{Key: "a", Value: []byte{}, Rev: 4, CreateRev: 2},
	{Key: "bin\x00\xff", Value: []byte{0, 0xff, 1}, Rev: 200, CreateRev: 200, Lease: 9},
	{Key: "k", Value: []byte("v"), Rev: 9, CreateRev: 3, Lease: 1 << 40},
}

var goldenHistoryV3 = wire.History{Start: 3, Events: []wire.Event{
	{Type: wire.Put, Key: "a", Value: []byte{}, Rev: 4, CreateRev: 2},
	{Type: wire.Delete, Key: "b", Value: []byte{}, Rev: 5},
	{Type: wire.Put, Key: "k", Value: []byte("v"), Rev: 9, CreateRev: 3},
}}

var goldenLeases = []wire.Lease{
	{ID: 9, TTL: 10 * time.Second, Remaining: 4 * time.Second, RefreshIndex: 77},
	{ID: 1 << 40, TTL: time.Minute, Remaining: time.Minute, RefreshIndex: 200, Own: true},
}

// asReadFromV2 is what an item or event of StateVersion2 reads as: created
// at its revision (puts), attached to no lease.
func asReadFromV2(items []wire.Item, h wire.History) ([]wire.Item, wire.History) {
	items = append([]wire.Item(nil), items...)
	for i := range items {
		items[i].CreateRev = items[i].Rev
	}
	h.Events = append([]wire.Event(nil), h.Events...)
	for i, e := range h.Events {
		if e.Type == wire.Put {
			h.Events[i].CreateRev = e.Rev
		}
	}
	return items, h
}

func readGolden(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "golden", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGolden(t *testing.T) {
	t.Run("request v1", func(t *testing.T) {
		golden := readGolden(t, "request.bin")
		got, err := wire.DecodeRequest(golden)
		if err != nil || !reflect.DeepEqual(got, goldenRequest) {
			t.Fatalf("decoded %+v, %v; want %+v", got, err, goldenRequest)
		}
	})
	t.Run("request", func(t *testing.T) {
		golden := readGolden(t, "request-v2.bin")
		got, err := wire.DecodeRequest(golden)
		if err != nil || !reflect.DeepEqual(got, goldenRequestV2) {
			t.Fatalf("decoded %+v, %v; want %+v", got, err, goldenRequestV2)
		}
		if enc := wire.EncodeRequest(goldenRequestV2); !bytes.Equal(enc, golden) {
			t.Fatalf("encoded\n%x\nwant\n%x", enc, golden)
		}
	})
	t.Run("membership", func(t *testing.T) {
		golden := readGolden(t, "membership.bin")
		got, err := wire.DecodeMembership(golden)
		if err != nil || !reflect.DeepEqual(got, goldenMembership) {
			t.Fatalf("decoded %+v, %v; want %+v", got, err, goldenMembership)
		}
		// One member: map order cannot change the bytes.
		if enc := wire.EncodeMembership(goldenMembership); !bytes.Equal(enc, golden) {
			t.Fatalf("encoded\n%x\nwant\n%x", enc, golden)
		}
	})
	t.Run("state v2", func(t *testing.T) {
		golden := readGolden(t, "state.bin")
		items, h, leases, err := decodeStateLeases(golden)
		wantItems, wantHistory := asReadFromV2(goldenItems, goldenHistory)
		if err != nil || !reflect.DeepEqual([]wire.Item(items), wantItems) || !reflect.DeepEqual(h, wantHistory) || len(leases) != 0 {
			t.Fatalf("decoded %+v %+v %+v, %v; want %+v %+v", items, h, leases, err, wantItems, wantHistory)
		}
	})
	t.Run("state", func(t *testing.T) {
		golden := readGolden(t, "state-v3.bin")
		items, h, leases, err := decodeStateLeases(golden)
		if err != nil || !reflect.DeepEqual([]wire.Item(items), goldenItemsV3) || !reflect.DeepEqual(h, goldenHistoryV3) || !reflect.DeepEqual(leases, goldenLeases) {
			t.Fatalf("decoded %+v %+v %+v, %v; want %+v %+v %+v", items, h, leases, err, goldenItemsV3, goldenHistoryV3, goldenLeases)
		}
		if enc := encodeStateLeases(goldenItemsV3, goldenHistoryV3, goldenLeases); !bytes.Equal(enc, golden) {
			t.Fatalf("encoded\n%x\nwant\n%x", enc, golden)
		}
	})
}

// The version constants are in the golden bytes: changing one is a format
// change, which the constants' docs say how to make.
func TestGoldenVersions(t *testing.T) {
	for name, want := range map[string]byte{"request.bin": wire.EntryVersion1, "request-v2.bin": wire.EntryVersion,
		"membership.bin": wire.MembershipVersion, "state.bin": wire.StateVersion2, "state-v3.bin": wire.StateVersion} {
		if got := readGolden(t, name)[0]; got != want {
			t.Errorf("%s: version byte %d, constant %d", name, got, want)
		}
	}
}
