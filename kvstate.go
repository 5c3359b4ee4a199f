package main

import (
	"io"
	"sync"

	"github.com/google/btree"

	"raftexample/internal/wire"
)

// kvState is everything the kvstore keeps in a snapshot: the keys in order,
// and the recent history that watchers may resume from. History holds every
// event with a revision above HistStart.
//
// It is streamed to the snapshot's own file, <index>.snap.db in the snapshot
// directory, the way etcd keeps its backend database beside raft's .snap
// files: a state of millions of keys is never held in one buffer, nor in
// raft's MemoryStorage. The file's format is internal/wire's state file.
type kvState struct {
	Items     *btree.BTreeG[kvItem]
	HistStart uint64
	History   []event
	Leases    []wire.Lease // in ID order; their keys are the items naming them
}

// writeKV streams s to w as a state file.
func writeKV(w io.Writer, s kvState) error {
	items := func(yield func(wire.Item) bool) {
		s.Items.Ascend(func(it kvItem) bool { return yield(wire.Item(it)) })
	}
	h := wire.History{Start: s.HistStart, Events: make([]wire.Event, len(s.History))}
	for i, e := range s.History {
		h.Events[i] = wire.Event(e)
	}
	return wire.WriteState(w, s.Items.Len(), items, h, s.Leases)
}

// readKV reads a state file of size bytes that writeKV wrote.
func readKV(r io.Reader, size int64) (kvState, error) {
	tb := &treeBuilder{tree: newKVTree()}
	h, leases, err := wire.ReadState(r, size, tb)
	items := tb.finish()
	if err != nil {
		return kvState{}, err
	}
	s := kvState{Items: items, HistStart: h.Start, History: make([]event, len(h.Events)), Leases: leases}
	for i, e := range h.Events {
		s.History[i] = event(e)
	}
	return s, nil
}

// treeBatches is how many batches of items treeBuilder has in flight.
const treeBatches = 4

// treeBuilder takes the items of a state file as they are decoded and
// inserts them into a tree on a goroutine of its own: at a million keys
// decoding and inserting each take about as long as the other, and a
// restart waits for both. Items travel in batches, recycled between the two
// goroutines. The goroutine starts with Expect and ends in finish, which
// the owner must call.
type treeBuilder struct {
	tree  *btree.BTreeG[kvItem] // the inserting goroutine's until finish
	size  int                   // items per batch
	batch []kvItem              // the batch being filled
	full  chan []kvItem         // batches to insert
	free  chan []kvItem         // batches inserted, to fill again
	wg    sync.WaitGroup
}

// Expect starts the inserting goroutine, with batches sized for n items.
func (b *treeBuilder) Expect(n int) {
	b.size = min(n, 1024) + 1 // +1: never 0, and a small state fits in one
	b.full = make(chan []kvItem, treeBatches)
	b.free = make(chan []kvItem, treeBatches)
	for range treeBatches {
		b.free <- make([]kvItem, 0, b.size)
	}
	b.batch = <-b.free
	b.wg.Go(func() {
		for batch := range b.full {
			for _, it := range batch {
				b.tree.ReplaceOrInsert(it)
			}
			clear(batch)
			b.free <- batch[:0]
		}
	})
}

// Add queues it for the tree, handing over the batch once it is full.
func (b *treeBuilder) Add(it wire.Item) {
	if b.batch = append(b.batch, kvItem(it)); len(b.batch) == b.size {
		b.full <- b.batch
		b.batch = <-b.free
	}
}

// finish hands over the last batch, waits for the inserting goroutine to
// end, and returns the tree.
func (b *treeBuilder) finish() *btree.BTreeG[kvItem] {
	if b.full != nil {
		b.full <- b.batch
		close(b.full)
		b.wg.Wait()
	}
	return b.tree
}
