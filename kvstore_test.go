package main

import (
	"fmt"
	"testing"

	"go.uber.org/zap"

	"raftexample/internal/wire"
)

// newTestKVStore returns a kvstore with the flags' defaults but for a watch
// history of historyRevisions revisions.
func newTestKVStore(logger *zap.Logger, historyRevisions int) *kvstore {
	kv := withHistory(historyRevisions).kv
	kv.Logger, kv.Metrics, kv.MemberID = logger, newMetrics(), 1
	return newKVStore(kv, make(chan proposal))
}

// The watch history keeps exactly the newest historyLimit events, in order,
// however the entries that make them arrive, and forgets the older ones.
func TestHistoryKeepsTheNewestEvents(t *testing.T) {
	const limit = 7
	s := newTestKVStore(zap.NewNop(), limit)
	index := uint64(0)
	for batch := 1; batch <= 40; batch++ {
		var ents []committedEntry
		for range batch % 5 { // 0 to 4 entries at a time
			index++
			ents = append(ents, committedEntry{index: index, data: wire.EncodeRequest(wire.Request{ID: index, Ops: []wire.Op{
				{Kind: wire.Put, Key: fmt.Sprintf("k%d", index%3), Value: []byte(fmt.Sprint(index))},
			}})})
		}
		s.apply(ents)
		kept := min(int(index), limit)
		if len(s.history) != kept {
			t.Fatalf("after index %d: history holds %d events, want %d", index, len(s.history), kept)
		}
		for i, e := range s.history {
			if want := index - uint64(kept-1-i); e.Rev != want || string(e.Value) != fmt.Sprint(want) {
				t.Fatalf("after index %d: event %d is rev %d value %q, want rev %d", index, i, e.Rev, e.Value, want)
			}
		}
		if want := index - uint64(kept); s.histStart != want {
			t.Fatalf("after index %d: history starts after %d, want %d", index, s.histStart, want)
		}
	}
	if index < 3*limit {
		t.Fatalf("only %d entries applied; the history never slid", index)
	}
}
