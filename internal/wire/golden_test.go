package wire_test

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"raftexample/internal/wire"
)

// The files in testdata/golden were written by the encoders of commit
// e82c801 (EntryVersion 1, MembershipVersion 2, StateVersion 2), before the
// format moved to this package. They are never regenerated: a change that
// makes them decode differently, or makes the encoders write other bytes,
// changes a format that data directories and running clusters hold, and
// needs a new version instead.

var goldenRequest = wire.Request{ID: 1<<63 + 5, Ops: []wire.Op{
	{Kind: wire.Put, Key: "k", Value: []byte("v")},
	{Kind: wire.Put, Key: "bin\x00\xff", Value: []byte{}, Cond: wire.CondRev, CondRev: 300},
	{Kind: wire.Delete, Key: "gone", Cond: wire.CondExists},
	{Kind: wire.Put, Key: "new", Value: []byte("x"), Cond: wire.CondAbsent},
	{Kind: wire.Delete, Key: "plain"},
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

func readGolden(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "golden", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGolden(t *testing.T) {
	t.Run("request", func(t *testing.T) {
		golden := readGolden(t, "request.bin")
		got, err := wire.DecodeRequest(golden)
		if err != nil || !reflect.DeepEqual(got, goldenRequest) {
			t.Fatalf("decoded %+v, %v; want %+v", got, err, goldenRequest)
		}
		if enc := wire.EncodeRequest(goldenRequest); !bytes.Equal(enc, golden) {
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
	t.Run("state", func(t *testing.T) {
		golden := readGolden(t, "state.bin")
		items, h, err := decodeState(golden)
		if err != nil || !reflect.DeepEqual([]wire.Item(items), goldenItems) || !reflect.DeepEqual(h, goldenHistory) {
			t.Fatalf("decoded %+v %+v, %v; want %+v %+v", items, h, err, goldenItems, goldenHistory)
		}
		if enc := encodeState(goldenItems, goldenHistory); !bytes.Equal(enc, golden) {
			t.Fatalf("encoded\n%x\nwant\n%x", enc, golden)
		}
	})
}

// The version constants are in the golden bytes: changing one is a format
// change, which the constants' docs say how to make.
func TestGoldenVersions(t *testing.T) {
	for name, want := range map[string]byte{"request.bin": wire.EntryVersion, "membership.bin": wire.MembershipVersion, "state.bin": wire.StateVersion} {
		if got := readGolden(t, name)[0]; got != want {
			t.Errorf("%s: version byte %d, constant %d", name, got, want)
		}
	}
}
