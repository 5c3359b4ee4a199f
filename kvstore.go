package main

import (
	"context"
	"maps"
	"sync"
	"time"

	"go.etcd.io/etcd/pkg/v3/idutil"
	"go.etcd.io/etcd/pkg/v3/wait"
	"go.uber.org/zap"
)

// kvstore is the replicated state machine: a map from key to value, changed
// only by applying committed raft entries that arrive on commitC. Writers
// propose through proposeC and wait until their own entry has been applied
// here, so a write that returns is committed and visible to the next read.
type kvstore struct {
	proposeC  chan<- proposal
	logger    *zap.Logger
	ids       *idutil.Generator
	leader    *leaderWatch
	readIndex func(context.Context) (uint64, error)

	mu      sync.RWMutex
	kvStore map[string]kvValue
	applied uint64 // index of the last entry applied

	waits     wait.Wait     // request ID -> applyResult
	appliedAt wait.WaitTime // applied index reached
	stopped   chan struct{} // closed when commitC is closed
	fresh     chan struct{} // closed once the state holds all this member ever acknowledged
}

// applyResult is what the applier tells a waiting writer.
type applyResult struct {
	found bool // for deletes: whether the key existed
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
	snapshot      []byte
	snapshotIndex uint64
	entries       []committedEntry
	applyDoneC    chan<- struct{}
}

func newKVStore(logger *zap.Logger, memberID uint64, proposeC chan<- proposal) *kvstore {
	return &kvstore{
		proposeC:  proposeC,
		logger:    logger,
		ids:       idutil.NewGenerator(uint16(memberID), time.Now()),
		kvStore:   map[string]kvValue{},
		waits:     wait.New(),
		appliedAt: wait.NewTimeList(),
		stopped:   make(chan struct{}),
		fresh:     make(chan struct{}),
	}
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
	defer close(s.stopped)
	for c := range commitC {
		if c.snapshotIndex > 0 {
			if err := s.restore(c.snapshot, c.snapshotIndex); err != nil {
				// raftNode verified the snapshot before publishing it, so this
				// is a bug; keep the old state rather than a half one.
				s.logger.Error("cannot restore snapshot", zap.Uint64("index", c.snapshotIndex), zap.Error(err))
			}
		}
		s.apply(c.entries)
		close(c.applyDoneC)
	}
}

// Lookup returns the value of key. A linearizable lookup reflects every
// write acknowledged before it began; a serializable one answers from this
// member's state at once and may be stale, though never older than what
// this member itself acknowledged.
func (s *kvstore) Lookup(ctx context.Context, key string, serializable bool) ([]byte, bool, error) {
	if serializable {
		select {
		case <-s.fresh:
		case <-ctx.Done():
			return nil, false, errCatchingUp
		case <-s.stopped:
			return nil, false, errStopping
		}
	} else {
		index, err := s.readIndex(ctx)
		if err != nil {
			return nil, false, err
		}
		select {
		case <-s.waitApplied(index):
		case <-ctx.Done():
			return nil, false, ctxErr(ctx)
		case <-s.stopped:
			return nil, false, errStopping
		}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.kvStore[key]
	return v.Value, ok, nil
}

// Put sets key to value and returns once the write is applied here.
func (s *kvstore) Put(ctx context.Context, key string, value []byte) error {
	_, err := s.propose(ctx, op{Kind: opPut, Key: key, Value: value})
	return err
}

// Delete removes key and reports whether it existed when the delete applied.
func (s *kvstore) Delete(ctx context.Context, key string) (bool, error) {
	r, err := s.propose(ctx, op{Kind: opDelete, Key: key})
	return r.found, err
}

func (s *kvstore) propose(ctx context.Context, o op) (applyResult, error) {
	select {
	case <-s.leader.lost():
		return applyResult{}, errNoLeader
	default:
	}
	o.ID = s.ids.Next()
	ch := s.waits.Register(o.ID)
	if err := submit(ctx, s.proposeC, proposal{data: encodeOp(o)}, s.stopped); err != nil {
		s.waits.Trigger(o.ID, nil)
		return applyResult{}, err
	}
	x, err := await(ctx, ch, s.leader, s.stopped)
	if err != nil {
		s.waits.Trigger(o.ID, nil)
		return applyResult{}, err
	}
	r, _ := x.(applyResult) // nil only if Trigger raced our cleanup
	return r, nil
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
		id uint64
		r  applyResult
	}
	var results []done
	s.mu.Lock()
	for _, e := range ents {
		if len(e.data) == 0 {
			continue
		}
		o, err := decodeOp(e.data)
		if err != nil {
			// Every member decodes the same bytes, so every member skips it.
			s.logger.Warn("skipping malformed entry", zap.Uint64("index", e.index), zap.Error(err))
			continue
		}
		results = append(results, done{o.ID, s.applyOp(o, e.index)})
	}
	s.applied = ents[len(ents)-1].index
	applied := s.applied
	s.mu.Unlock()
	for _, d := range results {
		s.waits.Trigger(d.id, d.r)
	}
	s.appliedAt.Trigger(applied)
}

// applyOp changes the map; the caller holds s.mu. Applying the same entry
// twice leaves the same state, which makes replay after a crash safe.
func (s *kvstore) applyOp(o op, index uint64) applyResult {
	switch o.Kind {
	case opPut:
		s.kvStore[o.Key] = kvValue{Value: o.Value, Rev: index}
		return applyResult{found: true}
	default: // opDelete; decodeOp rejects other kinds
		_, ok := s.kvStore[o.Key]
		delete(s.kvStore, o.Key)
		return applyResult{found: ok}
	}
}

// getSnapshot captures the state as of the last applied entry. The copy is
// cheap (values are never modified in place, so they are shared); encoding
// it, the slow part, happens in the returned function, off the Ready loop.
func (s *kvstore) getSnapshot() func() []byte {
	s.mu.RLock()
	m := maps.Clone(s.kvStore)
	s.mu.RUnlock()
	return func() []byte { return encodeKV(m) }
}

func (s *kvstore) restore(data []byte, index uint64) error {
	m, err := decodeKV(data)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.kvStore = m
	s.applied = index
	s.mu.Unlock()
	s.appliedAt.Trigger(index)
	return nil
}

// len returns the number of keys.
func (s *kvstore) len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.kvStore)
}
