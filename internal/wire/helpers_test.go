package wire_test

import (
	"bytes"
	"slices"

	"raftexample/internal/wire"
)

// itemList is an ItemSink that keeps the items in a slice.
type itemList []wire.Item

func (l *itemList) Expect(n int)     { *l = make([]wire.Item, 0, n) }
func (l *itemList) Add(it wire.Item) { *l = append(*l, it) }

// encodeState is WriteState on a buffer.
func encodeState(items []wire.Item, h wire.History) []byte {
	var b bytes.Buffer
	if err := wire.WriteState(&b, len(items), slices.Values(items), h, nil); err != nil {
		panic(err) // a bytes.Buffer does not fail
	}
	return b.Bytes()
}

// decodeState is ReadState from a buffer, into a slice, leaving out the
// leases.
func decodeState(data []byte) ([]wire.Item, wire.History, error) {
	items, h, _, err := decodeStateLeases(data)
	return items, h, err
}

// decodeStateLeases is ReadState from a buffer, into a slice.
func decodeStateLeases(data []byte) ([]wire.Item, wire.History, []wire.Lease, error) {
	var items itemList
	h, leases, err := wire.ReadState(bytes.NewReader(data), int64(len(data)), &items)
	return items, h, leases, err
}

// encodeStateLeases is WriteState on a buffer, with leases.
func encodeStateLeases(items []wire.Item, h wire.History, leases []wire.Lease) []byte {
	var b bytes.Buffer
	if err := wire.WriteState(&b, len(items), slices.Values(items), h, leases); err != nil {
		panic(err) // a bytes.Buffer does not fail
	}
	return b.Bytes()
}
