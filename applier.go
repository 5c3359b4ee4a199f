package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/pkg/v3/wait"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"raftexample/internal/wire"
)

// applier is the goroutine that applies what raft has committed: it
// applies membership changes to raft, the membership and the transport,
// publishes entries and snapshots to the kvstore on commitC in log order,
// and takes a snapshot of its own when enough has been applied. The Ready
// loop hands it committed entries and the WAL writer the snapshots it saved,
// both on applyC. The slow part of a snapshot (encoding the state, writing
// files) runs on a snapshot writer goroutine of its own, which the applier
// starts and waits for.
type applier struct {
	cfg         raftConfig // the snapshot policy and this member's ID
	logger      *zap.Logger
	metrics     *metrics
	applyC      <-chan applyWork // from the Ready loop and the WAL writer
	commitC     chan<- *commit   // to the kvstore
	stopc       <-chan struct{}
	raft        applierRaft
	log         *raft.MemoryStorage // raft's in-memory log, compacted after a snapshot
	disk        *diskStore
	membership  *cluster
	confWaits   wait.Wait   // membership change request ID -> confApplied
	shared      *raftShared // what the applier publishes to other goroutines
	getSnapshot func() func(io.Writer) error
	fail        func(error) // stops the member; for the snapshot writer

	// Touched only by the applier goroutine (and startup, before it runs).
	confState      *raftpb.ConfState
	snapshotIndex  uint64
	publishedIndex uint64          // the last index handed to the kvstore
	logBytes       uint64          // bytes of entries applied since the last snapshot
	snapshotDone   chan struct{}   // closed when the newest snapshot of our own is written
	bootSnapshot   *loadedSnapshot // restored first, before any entry

	// Shared by the applier and its snapshot writer.
	snapshotting atomic.Bool
	stateBytes   atomic.Int64 // size of the newest snapshot's state file
	snapshots    sync.WaitGroup
}

// applierRaft is what the applier needs of raftNode: raft's side of a
// membership change, the transport's peers that follow the membership, and
// the way back for the responses raft attached to committed entries.
type applierRaft interface {
	applyConfChange(cc *raftpb.ConfChange) *raftpb.ConfState
	updatePeers(cc *raftpb.ConfChange)
	syncPeers()
	deliver(responses []*raftpb.Message) error
}

// applyWork is one job for the applier: committed entries, or a snapshot
// the WAL writer has saved.
type applyWork struct {
	entries   []*raftpb.Entry
	responses []*raftpb.Message // for raft, once entries are handed to the kvstore
	snapshot  *loadedSnapshot
}

// run restores snapshots and publishes committed entries to the kvstore in
// log order, and triggers snapshots. It returns when stopc closes, or with
// the first error, which must stop the member.
func (a *applier) run() error {
	if a.bootSnapshot != nil {
		if err := a.publishSnapshot(a.bootSnapshot); err != nil {
			return err
		}
		a.bootSnapshot = nil
	}
	for {
		select {
		case w := <-a.applyC:
			if err := a.apply(w); err != nil {
				return err
			}
		case <-a.stopc:
			return nil
		}
	}
}

func (a *applier) apply(w applyWork) error {
	if w.snapshot != nil {
		return a.publishSnapshot(w.snapshot)
	}
	ents, err := a.entriesToApply(w.entries)
	if err != nil {
		return err
	}
	applyDoneC, err := a.publishEntries(ents)
	if err != nil {
		return err
	}
	if err := a.raft.deliver(w.responses); err != nil {
		return err
	}
	a.maybeTriggerSnapshot(applyDoneC)
	return nil
}

func (a *applier) entriesToApply(ents []*raftpb.Entry) ([]*raftpb.Entry, error) {
	if len(ents) == 0 {
		return nil, nil
	}
	first := ents[0].GetIndex()
	if first > a.publishedIndex+1 {
		return nil, fmt.Errorf("first committed entry %d is beyond applied index %d + 1", first, a.publishedIndex)
	}
	if a.publishedIndex-first+1 < uint64(len(ents)) {
		return ents[a.publishedIndex-first+1:], nil
	}
	return nil, nil
}

// publishEntries applies membership changes to raft and the transport, then
// hands the batch to the kvstore. It returns a channel closed once the
// kvstore has applied the batch.
func (a *applier) publishEntries(ents []*raftpb.Entry) (<-chan struct{}, error) {
	if len(ents) == 0 {
		return nil, nil
	}
	batch := make([]committedEntry, len(ents))
	removed := false
	for i, e := range ents {
		batch[i].index, batch[i].term = e.GetIndex(), e.GetTerm()
		switch e.GetType() {
		case raftpb.EntryNormal:
			batch[i].data = e.Data
			a.logBytes += entryBytes(e)
		case raftpb.EntryConfChange:
			removed = a.applyConfChange(e) || removed
		default:
			a.logger.Warn("skipping unsupported entry type", zap.Uint64("index", e.GetIndex()), zap.Stringer("type", e.GetType()))
		}
	}
	applyDoneC := make(chan struct{})
	select {
	case a.commitC <- &commit{entries: batch, applyDoneC: applyDoneC}:
	case <-a.stopc:
		return nil, errStopping
	}
	a.setPublished(batch[len(batch)-1].index)
	if removed {
		select { // let the kvstore finish, so nothing acknowledged is cut short
		case <-applyDoneC:
		case <-a.stopc:
		}
		return nil, errRemoved
	}
	return applyDoneC, nil
}

// applyConfChange applies one committed membership change, or skips it the
// same way on every member when it is invalid. It reports whether the change
// removed this member.
func (a *applier) applyConfChange(e *raftpb.Entry) bool {
	cc := &raftpb.ConfChange{}
	if err := proto.Unmarshal(e.Data, cc); err != nil {
		a.logger.Warn("skipping malformed membership change", zap.Uint64("index", e.GetIndex()), zap.Error(err))
		return false
	}
	err := a.membership.checkApply(cc, a.confState)
	if err != nil {
		a.logger.Warn("skipping membership change", zap.Uint64("index", e.GetIndex()), zap.Error(err))
	} else {
		a.setConfState(a.raft.applyConfChange(cc))
		a.membership.apply(cc)
		a.raft.updatePeers(cc)
		a.logger.Info("applied membership change", zap.Uint64("index", e.GetIndex()),
			zap.Stringer("type", cc.GetType()), zap.Uint64("member", cc.GetNodeId()))
	}
	a.confWaits.Trigger(cc.GetId(), confApplied{index: e.GetIndex(), err: err})
	return err == nil && cc.GetType() == raftpb.ConfChangeRemoveNode && cc.GetNodeId() == a.cfg.ID
}

// publishSnapshot restores the membership and the kvstore from a snapshot
// that is already saved to disk.
func (a *applier) publishSnapshot(ls *loadedSnapshot) error {
	md := ls.raft.GetMetadata()
	if md.GetIndex() <= a.publishedIndex && a.publishedIndex != 0 {
		return fmt.Errorf("snapshot index %d is not beyond applied index %d", md.GetIndex(), a.publishedIndex)
	}
	a.setConfState(raftpb.EnsureConfState(proto.Clone(md.GetConfState()).(*raftpb.ConfState)))
	a.membership.restore(ls.members.Members, ls.members.Removed)
	a.raft.syncPeers()
	select {
	case a.commitC <- &commit{snapshot: &ls.kv, snapshotIndex: md.GetIndex(), applyDoneC: make(chan struct{})}:
	case <-a.stopc:
		return errStopping
	}
	a.snapshotIndex = md.GetIndex()
	a.logBytes = 0
	a.stateBytes.Store(ls.size)
	a.setPublished(md.GetIndex())
	return nil
}

// maybeTriggerSnapshot snapshots once enough entries have been applied. The
// state is captured on this goroutine after the kvstore has applied
// everything published, so the snapshot matches appliedIndex exactly; the
// slow parts (encoding, writing files) run in the background.
func (a *applier) maybeTriggerSnapshot(applyDoneC <-chan struct{}) {
	if a.snapshotting.Load() && a.logBytes >= a.cfg.MaxLogBytes {
		// The log reached its bound while the last snapshot is still being
		// written: wait for it, so that the next one can start and the log
		// cannot grow past the bound.
		select {
		case <-a.snapshotDone:
		case <-a.stopc:
			return
		}
	}
	if !a.snapshotDue() {
		return
	}
	if applyDoneC != nil {
		select {
		case <-applyDoneC:
		case <-a.stopc:
			return
		}
	}
	encodeKV := a.getSnapshot()
	members, removed := a.membership.snapshot()
	cs := proto.Clone(a.confState).(*raftpb.ConfState)
	index := a.publishedIndex
	a.snapshotIndex = index
	a.logBytes = 0
	a.snapshotting.Store(true)
	done := make(chan struct{})
	a.snapshotDone = done
	a.snapshots.Go(func() {
		defer close(done) // after snapshotting is false again
		defer a.snapshotting.Store(false)
		a.metrics.snapshotInProgress.Set(1)
		defer a.metrics.snapshotInProgress.Set(0)
		start := time.Now()
		size, err := a.disk.saveStateFile(index, encodeKV)
		if err == nil {
			a.stateBytes.Store(size)
			data := wire.EncodeMembership(wire.Membership{Members: members, Removed: removed})
			err = a.createSnapshot(index, cs, data)
		}
		if err != nil {
			if !a.disk.postponeSnapshot(index, err) {
				a.fail(err)
			}
			return
		}
		a.metrics.snapshotDuration.Observe(time.Since(start).Seconds())
		a.logger.Info("saved snapshot", zap.Uint64("index", index), zap.Int64("state-bytes", size),
			zap.Duration("took", time.Since(start)))
	})
}

// snapshotDue reports whether enough has been applied since the last
// snapshot, by count and by size, and none is being written. Half of
// MaxLogBytes applied makes a snapshot due whatever the count and the
// state's size say: only a snapshot lets raft's log be compacted.
func (a *applier) snapshotDue() bool {
	switch {
	case a.snapshotting.Load():
		return false
	case a.logBytes >= a.cfg.MaxLogBytes/2:
		return true
	case a.publishedIndex-a.snapshotIndex <= a.cfg.SnapshotCount:
		return false
	}
	return float64(a.logBytes) >= a.cfg.SnapshotLogRatio*float64(a.stateBytes.Load())
}

// createSnapshot saves a snapshot of the state at index and compacts the
// in-memory log, keeping up to CatchupEntries entries and MaxLogBytes/2
// bytes of them for slow followers.
func (a *applier) createSnapshot(index uint64, cs *raftpb.ConfState, data []byte) error {
	s, err := a.log.CreateSnapshot(index, cs, data)
	if errors.Is(err, raft.ErrSnapOutOfDate) {
		return nil // a newer snapshot from the leader got there first
	}
	if err != nil {
		return fmt.Errorf("create snapshot %d: %w", index, err)
	}
	a.disk.fp.reach("before-snapshot-save", a.logger)
	if err := a.disk.saveSnap(s); err != nil {
		return err
	}
	compactIndex := a.compactIndex(index)
	a.disk.fp.reach("before-compact", a.logger)
	if err := a.log.Compact(compactIndex); err != nil && !errors.Is(err, raft.ErrCompacted) {
		return fmt.Errorf("compact log to %d: %w", compactIndex, err)
	}
	a.disk.fp.reach("after-compact", a.logger)
	return nil
}

// compactIndex returns the index to compact raft's log to after a snapshot
// at index: the entries after it, up to index, are at most CatchupEntries
// and, walking back from index, at most MaxLogBytes/2 bytes.
func (a *applier) compactIndex(index uint64) uint64 {
	compact := uint64(1)
	if index > a.cfg.CatchupEntries {
		compact = index - a.cfg.CatchupEntries
	}
	first, err := a.log.FirstIndex()
	if err != nil || max(compact+1, first) > index {
		return compact
	}
	ents, err := a.log.Entries(max(compact+1, first), index+1, math.MaxUint64)
	if err != nil {
		return compact // compacted meanwhile by a snapshot from the leader
	}
	var kept uint64
	for i := len(ents) - 1; i >= 0; i-- {
		if kept += entryBytes(ents[i]); kept > a.cfg.MaxLogBytes/2 {
			return ents[i].GetIndex()
		}
	}
	return compact
}

// setPublished records that everything up to index has been handed to the
// kvstore (which may not have applied it yet), and wakes those waiting.
func (a *applier) setPublished(index uint64) {
	a.publishedIndex = index
	a.shared.published.Store(index)
	a.shared.publishedAt.Trigger(index)
}

func (a *applier) setConfState(cs *raftpb.ConfState) {
	a.confState = cs
	a.shared.confState.Store(cs)
}

// bootFrom makes the applier start from a snapshot loaded at startup,
// before its goroutine runs.
func (a *applier) bootFrom(ls *loadedSnapshot) {
	a.bootSnapshot = ls
	a.setConfState(raftpb.EnsureConfState(proto.Clone(ls.raft.GetMetadata().GetConfState()).(*raftpb.ConfState)))
}

// wait returns once the snapshot writers the applier started have ended.
func (a *applier) wait() { a.snapshots.Wait() }

// entryBytes is what one entry counts towards --max-log-bytes: its data,
// as raft counts it for MaxUncommittedEntriesSize.
func entryBytes(e *raftpb.Entry) uint64 { return uint64(len(e.GetData())) }
