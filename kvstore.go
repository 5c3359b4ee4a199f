package main

import (
	"bytes"
	"context"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/btree"
	"go.etcd.io/etcd/pkg/v3/idutil"
	"go.etcd.io/etcd/pkg/v3/wait"
	"go.uber.org/zap"
)

// kvstore is the replicated state machine: keys in order with their values
// and revisions, changed only by applying committed raft entries that arrive
// on commitC. Writers propose through proposeC and wait until their own
// entry has been applied here, so a write that returns is committed and
// visible to the next read.
type kvstore struct {
	proposeC     chan<- proposal
	logger       *zap.Logger
	ids          *idutil.Generator
	historyLimit int
	leader       *leaderWatch
	readIndex    func(context.Context) (uint64, error)
	metrics      *metrics

	mu        sync.RWMutex
	items     *btree.BTreeG[kvItem]
	applied   uint64 // index of the last entry applied
	histStart uint64 // history holds every event with a revision above this
	history   []event
	histBuf   []event // history's backing array, reused as it slides
	watchers  map[*watcher]struct{}

	waits     wait.Wait     // request ID -> txnResult
	appliedAt wait.WaitTime // applied index reached
	stopped   chan struct{} // closed when commitC is closed
	fresh     chan struct{} // closed once the state holds all this member ever acknowledged
}

// txnResult is what the applier tells a waiting writer.
type txnResult struct {
	Rev    uint64 // raft index of the entry: the revision of what it wrote
	Failed int    // index of the first op whose condition failed, or -1
	Found  []bool // per op: whether its key existed before the entry
}

// committedEntry is one raft entry ready to apply. data is empty for
// entries that only advance the index (leader no-ops, membership changes).
type committedEntry struct {
	index uint64
	data  []byte
}

// commit is what raftNode publishes on commitC: entries to apply in order,
// or a snapshot to restore (index > 0) before them. The applier closes
// applyDoneC when done, which lets raftNode snapshot a state it knows.
type commit struct {
	snapshot      *kvState
	snapshotIndex uint64
	entries       []committedEntry
	applyDoneC    chan<- struct{}
}

func newKVStore(logger *zap.Logger, m *metrics, memberID uint64, historyLimit int, proposeC chan<- proposal) *kvstore {
	s := &kvstore{
		metrics:      m,
		proposeC:     proposeC,
		logger:       logger,
		ids:          idutil.NewGenerator(uint16(memberID), time.Now()),
		historyLimit: historyLimit,
		items:        newKVTree(),
		watchers:     map[*watcher]struct{}{},
		waits:        wait.New(),
		appliedAt:    wait.NewTimeList(),
		stopped:      make(chan struct{}),
		fresh:        make(chan struct{}),
	}
	m.gaugeFunc("keys", "Keys in this member's state.", func() float64 { return float64(s.len()) })
	return s
}

// start applies commits until commitC is closed. rc tells writers when
// waiting is hopeless and gives readers their read index.
func (s *kvstore) start(commitC <-chan *commit, rc *raftNode) {
	s.leader = rc.leader
	s.readIndex = rc.readIndex
	go s.readCommits(commitC)
	go s.awaitFresh(rc.bootLast, rc.cfg.electionTimeout())
}

// awaitFresh closes s.fresh once this member's state includes everything it
// acknowledged before it last stopped. The commit index saved in the WAL
// can trail what was applied (raft does not fsync a commit-only change), so
// after a crash the member replays to bootCommit but may have acknowledged
// entries up to bootLast, the last entry in its WAL. Applying up to bootLast,
// or completing one ReadIndex round, proves the state is fresh again.
func (s *kvstore) awaitFresh(bootLast uint64, retry time.Duration) {
	for {
		select {
		case <-s.waitApplied(bootLast):
			close(s.fresh)
			return
		case <-s.stopped:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), retry)
		index, err := s.readIndex(ctx)
		cancel()
		var again <-chan time.Time // ask again after a failed round
		if err == nil {
			bootLast = min(bootLast, index)
		} else {
			again = time.After(retry)
		}
		select {
		case <-s.waitApplied(bootLast):
		case <-again:
		case <-s.stopped:
		}
	}
}

func (s *kvstore) readCommits(commitC <-chan *commit) {
	defer s.closeWatchers()
	defer close(s.stopped)
	for c := range commitC {
		if c.snapshot != nil {
			s.restore(*c.snapshot, c.snapshotIndex)
		}
		s.apply(c.entries)
		close(c.applyDoneC)
	}
}

// Get returns key's item. A linearizable read reflects every write
// acknowledged before it began; a serializable one answers from this
// member's state at once and may be stale, though never older than what
// this member itself acknowledged.
func (s *kvstore) Get(ctx context.Context, key string, serializable bool) (kvItem, bool, error) {
	if err := s.catchUp(ctx, serializable); err != nil {
		return kvItem{}, false, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	it, ok := s.items.Get(kvItem{Key: key})
	return it, ok, nil
}

// List returns up to limit items whose keys start with prefix and sort after
// after, in key order, and whether more follow.
func (s *kvstore) List(ctx context.Context, prefix, after string, limit int, serializable bool) ([]kvItem, bool, error) {
	if err := s.catchUp(ctx, serializable); err != nil {
		return nil, false, err
	}
	from := kvItem{Key: prefix}
	if after >= prefix {
		from.Key = after + "\x00" // the smallest key above after
	}
	var items []kvItem
	more := false
	s.mu.RLock()
	defer s.mu.RUnlock()
	s.items.AscendGreaterOrEqual(from, func(it kvItem) bool {
		if !strings.HasPrefix(it.Key, prefix) {
			return false
		}
		if len(items) == limit {
			more = true
			return false
		}
		items = append(items, it)
		return true
	})
	return items, more, nil
}

// catchUp waits, for a linearizable read, until this member has applied
// everything committed before the read began; for a serializable one, until
// it holds everything it acknowledged before its last restart.
func (s *kvstore) catchUp(ctx context.Context, serializable bool) error {
	if serializable {
		select {
		case <-s.fresh:
			return nil
		case <-ctx.Done():
			return errCatchingUp
		case <-s.stopped:
			return errStopping
		}
	}
	index, err := s.readIndex(ctx)
	if err != nil {
		return err
	}
	select {
	case <-s.waitApplied(index):
		return nil
	case <-ctx.Done():
		return ctxErr(ctx)
	case <-s.stopped:
		return errStopping
	}
}

// Txn applies ops atomically, all or none, and returns once the entry is
// applied here. A failed condition is a result, not an error.
func (s *kvstore) Txn(ctx context.Context, ops []op) (txnResult, error) {
	if err := leaderKnown(ctx, s.leader); err != nil {
		return txnResult{}, err
	}
	s.metrics.proposalsPending.Inc()
	defer s.metrics.proposalsPending.Dec()
	r := request{ID: s.ids.Next(), Ops: ops}
	x, err := proposeAndWait(ctx, s.proposeC, proposal{data: encodeRequest(r)}, s.waits, r.ID, s.leader, s.stopped)
	if err != nil {
		s.metrics.proposalsFailed.WithLabelValues(failureReason(err)).Inc()
		return txnResult{}, err
	}
	res, _ := x.(txnResult) // zero only if Trigger raced our cleanup
	return res, nil
}

// Put sets key to value.
func (s *kvstore) Put(ctx context.Context, key string, value []byte) error {
	_, err := s.Txn(ctx, []op{{Kind: opPut, Key: key, Value: value}})
	return err
}

// waitApplied returns a channel closed once entries up to index are applied.
func (s *kvstore) waitApplied(index uint64) <-chan struct{} {
	return s.appliedAt.Wait(index)
}

func (s *kvstore) apply(ents []committedEntry) {
	if len(ents) == 0 {
		return
	}
	type done struct {
		id  uint64
		res txnResult
	}
	var results []done
	start := time.Now()
	s.mu.Lock()
	for _, e := range ents {
		if len(e.data) == 0 {
			continue
		}
		r, err := decodeRequest(e.data)
		if err != nil {
			// Every member decodes the same bytes, so every member skips it.
			s.logger.Warn("skipping malformed entry", zap.Uint64("index", e.index), zap.Error(err))
			continue
		}
		results = append(results, done{r.ID, s.applyTxn(r.Ops, e.index)})
	}
	s.applied = ents[len(ents)-1].index
	applied := s.applied
	s.mu.Unlock()
	s.metrics.applyDuration.Observe(time.Since(start).Seconds())
	s.metrics.proposalsCommitted.Add(float64(len(results)))
	for _, d := range results {
		s.waits.Trigger(d.id, d.res)
	}
	s.appliedAt.Trigger(applied)
}

// applyTxn checks every condition against the state before the entry, then
// applies all ops or none; the caller holds s.mu. Applying the same entry
// twice leaves the same state, which makes replay after a crash safe.
func (s *kvstore) applyTxn(ops []op, index uint64) txnResult {
	res := txnResult{Rev: index, Failed: -1, Found: make([]bool, len(ops))}
	// A lone unconditional op (a plain PUT or DELETE) needs no look-up
	// first: applying it tells whether its key existed.
	lone := len(ops) == 1 && ops[0].Cond == condNone
	if !lone {
		for i, o := range ops {
			cur, ok := s.items.Get(kvItem{Key: o.Key})
			res.Found[i] = ok
			if !condHolds(o, cur, ok) {
				res.Failed = i
				return res
			}
		}
	}
	var evs []event
	for i, o := range ops {
		var existed bool
		switch o.Kind {
		case opPut:
			// A copy of exactly the value's size: o.Value points into the
			// whole raft entry, which the store must not keep alive.
			v := bytes.Clone(o.Value)
			_, existed = s.items.ReplaceOrInsert(kvItem{Key: o.Key, Value: v, Rev: index})
			evs = append(evs, event{Type: opPut, Key: o.Key, Value: v, Rev: index})
		case opDelete:
			if _, existed = s.items.Delete(kvItem{Key: o.Key}); existed {
				evs = append(evs, event{Type: opDelete, Key: o.Key, Rev: index})
			}
		}
		if lone {
			res.Found[i] = existed
		}
	}
	s.record(evs)
	return res
}

func condHolds(o op, cur kvItem, exists bool) bool {
	switch o.Cond {
	case condRev:
		return exists && cur.Rev == o.CondRev
	case condAbsent:
		return !exists
	case condExists:
		return exists
	default:
		return true
	}
}

// record appends one entry's events to the history, trims the history to
// its limit, and tells the watchers; the caller holds s.mu.
func (s *kvstore) record(evs []event) {
	if len(evs) == 0 {
		return
	}
	if len(s.history)+len(evs) > cap(s.history) {
		s.slideHistory(len(evs))
	}
	s.history = append(s.history, evs...)
	if over := len(s.history) - s.historyLimit; over > 0 {
		s.histStart = s.history[over-1].Rev
		s.history = s.history[over:]
	}
	s.notify(evs)
}

// slideHistory moves the history to the front of histBuf, which has room
// for historyLimit more events (and at least n) behind it. Trimming the
// front of the history then frees nothing and appends allocate nothing;
// letting append grow it instead copied the whole history into a new
// array every historyLimit/4 events.
func (s *kvstore) slideHistory(n int) {
	if size := 2*s.historyLimit + n; cap(s.histBuf) < size {
		s.histBuf = make([]event, 0, size)
	}
	k := copy(s.histBuf[:cap(s.histBuf)], s.history)
	clear(s.histBuf[k:cap(s.histBuf)]) // let go of the values trimmed away
	s.history = s.histBuf[:k]
}

// getSnapshot captures the state as of the last applied entry. The capture
// is cheap (a copy-on-write clone of the tree and a copy of the history);
// encoding it, the slow part, happens in the returned function, off the
// applier.
func (s *kvstore) getSnapshot() func(io.Writer) error {
	s.mu.Lock() // Clone updates the tree's copy-on-write bookkeeping
	st := kvState{Items: s.items.Clone(), HistStart: s.histStart, History: slices.Clone(s.history)}
	s.mu.Unlock()
	return func(w io.Writer) error { return writeKV(w, st) }
}

// restore replaces the state with a snapshot's, which raftNode has read
// and checked.
func (s *kvstore) restore(st kvState, index uint64) {
	s.mu.Lock()
	s.items, s.histStart, s.history = st.Items, st.HistStart, st.History
	s.applied = index
	s.cutOffWatchers() // they may have missed events the snapshot skips over
	s.mu.Unlock()
	s.appliedAt.Trigger(index)
}

// len returns the number of keys.
func (s *kvstore) len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.items.Len()
}
