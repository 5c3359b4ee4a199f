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
	if err := wire.WriteState(&b, len(items), slices.Values(items), h); err != nil {
		panic(err) // a bytes.Buffer does not fail
	}
	return b.Bytes()
}

// decodeState is ReadState from a buffer, into a slice.
func decodeState(data []byte) ([]wire.Item, wire.History, error) {
	var items itemList
	h, err := wire.ReadState(bytes.NewReader(data), int64(len(data)), &items)
	return items, h, err
}
