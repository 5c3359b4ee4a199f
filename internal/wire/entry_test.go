package wire_test

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"raftexample/internal/wire"
)

func TestRequestRoundTrip(t *testing.T) {
	r := wire.Request{ID: 1<<63 + 5, Ops: []wire.Op{
		{Kind: wire.Put, Key: "k", Value: []byte("v")},
		{Kind: wire.Put, Key: "bin\x00\xff", Value: []byte{}, Cond: wire.CondRev, CondRev: 300},
		{Kind: wire.Delete, Key: "gone", Cond: wire.CondExists},
		{Kind: wire.Put, Key: "new", Value: []byte("x"), Cond: wire.CondAbsent},
	}}
	got, err := wire.DecodeRequest(wire.EncodeRequest(r))
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
	valid := wire.EncodeRequest(wire.Request{ID: 7, Ops: []wire.Op{
		{Kind: wire.Put, Key: "key", Value: []byte("value"), Cond: wire.CondRev, CondRev: 3},
		{Kind: wire.Delete, Key: "other"},
	}})
	for i := range valid {
		if _, err := wire.DecodeRequest(valid[:i]); !errors.Is(err, wire.ErrCorrupt) {
			t.Fatalf("prefix of %d bytes: err = %v, want ErrCorrupt", i, err)
		}
		damaged := bytes.Clone(valid)
		damaged[i] ^= 0xff
		wire.DecodeRequest(damaged)
	}
	for name, data := range map[string][]byte{
		"trailing byte": append(bytes.Clone(valid), 0),
		"empty key":     wire.EncodeRequest(wire.Request{Ops: []wire.Op{{Kind: wire.Put, Key: ""}}}),
		"no ops":        wire.EncodeRequest(wire.Request{ID: 1}),
		"unknown kind":  wire.EncodeRequest(wire.Request{Ops: []wire.Op{{Kind: 9, Key: "k"}}}),
		"unknown cond":  wire.EncodeRequest(wire.Request{Ops: []wire.Op{{Kind: wire.Delete, Key: "k", Cond: 9}}}),
	} {
		if _, err := wire.DecodeRequest(data); !errors.Is(err, wire.ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
}
